package relaytest

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// PionLogs silences pion clients in tests.
var PionLogs = func() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelWarn
	f.Writer = io.Discard
	return f
}()

// ListenUDP opens a plain UDP socket (a peer or a client), closed when the
// test ends.
func ListenUDP(t testing.TB, network, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP(network, UDPAddr(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// UDPAddr resolves host:port, failing t when it cannot.
func UDPAddr(t testing.TB, addr string) *net.UDPAddr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// NewClient returns a pion TURN client over conn, listening, closed when
// the test ends.
func NewClient(t testing.TB, conn net.PacketConn, server, user, pass string) *turn.Client {
	t.Helper()
	cfg := &turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: user, Password: pass, Realm: Realm, LoggerFactory: PionLogs,
	}
	if host, _, _ := net.SplitHostPort(server); net.ParseIP(host).To4() != nil {
		// A DTLS client socket reports no family pion can infer from.
		cfg.RequestedAddressFamily = turn.RequestedAddressFamilyIPv4
	}
	c, err := turn.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// StreamClient dials addr over TCP, TLS or DTLS (trusting any certificate)
// and returns a pion client on that connection.
func StreamClient(t testing.TB, transport, addr, user, pass string) *turn.Client {
	t.Helper()
	var conn net.Conn
	var err error
	switch transport {
	case "tcp":
		conn, err = net.Dial("tcp", addr)
	case "tls":
		conn, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test certificate
	case "dtls":
		conn, err = dtls.DialWithOptions("udp", UDPAddr(t, addr), dtls.WithInsecureSkipVerify(true))
	default:
		t.Fatalf("StreamClient: transport %q is not tcp, tls or dtls", transport)
	}
	if err != nil {
		t.Fatalf("dial %s %s: %v", transport, addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return NewClient(t, turn.NewSTUNConn(conn), addr, user, pass)
}

// TapConn counts what a pion client sends and receives by kind, so a test
// can prove both Send/Data indications and ChannelData were used.
type TapConn struct {
	net.PacketConn
	SendInd, DataInd, ChanOut, ChanIn atomic.Int64
}

// WriteTo counts b and writes it.
func (c *TapConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.classify(b, &c.SendInd, &c.ChanOut, 0x0016)
	return c.PacketConn.WriteTo(b, a)
}

// ReadFrom reads a datagram and counts it.
func (c *TapConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.classify(b[:n], &c.DataInd, &c.ChanIn, 0x0017)
	}
	return n, a, err
}

func (c *TapConn) classify(b []byte, ind, ch *atomic.Int64, indType uint16) {
	if len(b) < 4 {
		return
	}
	switch {
	case b[0]>>6 == 1:
		ch.Add(1)
	case binary.BigEndian.Uint16(b) == indType:
		ind.Add(1)
	}
}

// TCPEchoPeer is a TCP peer on 127.0.0.1 that echoes every connection it
// accepts; it stops listening when the test ends.
func TCPEchoPeer(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln
}

// TCPAllocation is pion's RFC 6062 client allocation (its type is internal
// to pion): a listener for peers' connections that also dials peers.
type TCPAllocation interface {
	net.Listener
	Dial(network, addr string) (net.Conn, error)
}

// AllocateTCP makes an RFC 6062 TCP allocation as user over a TCP control
// connection to server; both close when the test ends.
func AllocateTCP(t testing.TB, server, user, pass string) TCPAllocation {
	t.Helper()
	control, err := net.Dial("tcp", server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { control.Close() })
	c := NewClient(t, turn.NewSTUNConn(control), server, user, pass)
	alloc, err := c.AllocateTCP()
	if err != nil {
		t.Fatalf("allocate TCP: %v", err)
	}
	t.Cleanup(func() { alloc.Close() })
	return alloc
}

// Exchange sends count numbered messages through relayConn to peer (an
// echoing one) and waits for each echo; it returns how many came back.
func Exchange(t testing.TB, relayConn net.PacketConn, peer net.Addr, count int) int {
	t.Helper()
	got := 0
	buf := make([]byte, 1600)
	for i := range count {
		msg := []byte(fmt.Sprintf("supernode test message %04d", i))
		if _, err := relayConn.WriteTo(msg, peer); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		_ = relayConn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := relayConn.ReadFrom(buf)
		if err != nil {
			continue // a lost datagram; the caller checks the total
		}
		if !bytes.Equal(buf[:n], msg) || from.String() != peer.String() {
			t.Fatalf("message %d: got %q from %v, want %q from %v", i, buf[:n], from, msg, peer)
		}
		got++
		time.Sleep(10 * time.Millisecond)
	}
	return got
}

// NeedIPv6Loopback skips a test on a machine without ::1, or fails it when
// SUPERNODE_REQUIRE_INTEROP says every test must run.
func NeedIPv6Loopback(t testing.TB) {
	t.Helper()
	probe, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		if os.Getenv("SUPERNODE_REQUIRE_INTEROP") != "" {
			t.Fatalf("no IPv6 loopback, and SUPERNODE_REQUIRE_INTEROP is set: %v", err)
		}
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	_ = probe.Close()
}

// ClosedWithin reports whether the server closes c within d.
func ClosedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		return !errors.Is(err, os.ErrDeadlineExceeded)
	}
}
