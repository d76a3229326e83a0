package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
)

// TestHostileUDP throws garbage, truncated and oversized datagrams at the
// node, then checks it still relays and counted what it dropped.
func TestHostileUDP(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--allow-peer", "127.0.0.1")
	attacker := mustListenUDP(t, "udp4", "127.0.0.1:0")
	server := mustUDPAddr(t, tn.udp)
	rng := rand.New(rand.NewPCG(1, 2))
	valid, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		t.Fatal(err)
	}
	send := func(b []byte) {
		_, _ = attacker.WriteTo(b, server)
	}
	for i := range 3000 {
		switch i % 6 {
		case 0: // random bytes
			b := make([]byte, rng.IntN(1500))
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			send(b)
		case 1: // truncated STUN
			send(valid.Raw[:rng.IntN(len(valid.Raw))])
		case 2: // STUN header whose length lies
			b := append([]byte(nil), valid.Raw...)
			binary.BigEndian.PutUint16(b[2:], uint16(rng.IntN(5000)))
			send(b)
		case 3: // ChannelData claiming more than it carries
			send([]byte{0x40, 0x01, 0xff, 0xff, 1, 2, 3, 4})
		case 4: // oversized
			send(make([]byte, 1700+rng.IntN(7000)))
		case 5: // a valid header with random attributes
			b := make([]byte, 20+4*rng.IntN(50))
			copy(b, valid.Raw[:20])
			binary.BigEndian.PutUint16(b[2:], uint16(len(b)-20))
			for j := 20; j < len(b); j++ {
				b[j] = byte(rng.Uint32())
			}
			send(b)
		}
		if i%20 == 0 {
			time.Sleep(2 * time.Millisecond) // keep the kernel's socket buffer from overflowing
		}
	}
	// About 2,000 malformed and 500 oversized datagrams were sent; a busy
	// machine may lose some in the kernel before the node reads them.
	looptest.Eventually(t, "drops counted", func() bool {
		return tn.counter("dropped", "malformed") >= 1500 && tn.counter("dropped", "oversized") >= 250
	})
	t.Logf("dropped: malformed %v, oversized %v", tn.counter("dropped", "malformed"), tn.counter("dropped", "oversized"))
	if p := testutilPanics(tn); p != 0 {
		t.Fatalf("%v panics recovered", p)
	}
	// Still serving.
	peer := mustListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)
	c := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), tn.udp, "alice", "pw")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate after the storm: %v", err)
	}
	defer relayConn.Close()
	if n := exchange(t, relayConn, peer.LocalAddr(), 10); n != 10 {
		t.Fatalf("%d of 10 echoed after the storm", n)
	}
}

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
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

// TestHostileStreams checks that garbage, oversized, stalled and idle TCP
// clients are disconnected and counted, and that the node serves normally
// afterwards: --first-message-timeout and --idle-timeout reach the relay.
// (Slow headers, TLS without a handshake and the other timeouts, on the
// bubble's clock: relay's TestStreamTimeouts.)
func TestHostileStreams(t *testing.T) {
	cert, key := writeTestCert(t)
	tn := startNode(t, "--user", "alice:pw", "--first-message-timeout", "300ms", "--idle-timeout", "600ms",
		"--tls-listen", "127.0.0.1:0", "--cert", cert, "--key", key)
	dial := func(t *testing.T, addr string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	for _, tc := range []struct {
		name, transport, reason string
		act                     func(c net.Conn)
	}{
		{"garbage", "tcp", "malformed", func(c net.Conn) { _, _ = c.Write([]byte{0xff, 0xfe, 0xfd, 0xfc, 0, 0, 0, 0}) }},
		{"oversized frame", "tcp", "oversized", func(c net.Conn) {
			_, _ = c.Write([]byte{0x00, 0x01, 0xff, 0xf0, 0x21, 0x12, 0xa4, 0x42})
		}},
		{"stalled", "tcp", "first_message_timeout", func(net.Conn) {}},
		{"idle after binding", "tcp", "idle_timeout", func(c net.Conn) {
			m, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
			_, _ = c.Write(m.Raw)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tn.udp
			if tc.transport == "tls" {
				addr = tn.tls
			}
			before := testutilClosed(tn, tc.transport, tc.reason)
			c := dial(t, addr)
			tc.act(c)
			if !closedWithin(c, 5*time.Second) {
				t.Fatal("server kept the connection open")
			}
			looptest.Eventually(t, "close counted", func() bool { return testutilClosed(tn, tc.transport, tc.reason) > before })
		})
	}
	// A real TLS client still works.
	tc := streamClient(t, "tls", tn.tls, "alice", "pw")
	if _, err := tc.SendBindingRequest(); err != nil {
		t.Fatalf("binding over TLS after the abuse: %v", err)
	}
}

// deafPacketConn sends but never receives: a DTLS client behind it sends its
// ClientHello and then cannot continue the handshake.
type deafPacketConn struct{ net.PacketConn }

func (d deafPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := d.PacketConn.ReadFrom(b)
		if err != nil {
			return n, a, err
		}
	}
}

// TestStalledDTLSHandshake: a DTLS client that starts a handshake with the
// node's DTLS listener and goes quiet is disconnected after
// --first-message-timeout and counted. (The handshake's deadlines, on the
// bubble's clock: relay's TestStreamTimeouts.)
func TestStalledDTLSHandshake(t *testing.T) {
	cert, key := writeTestCert(t)
	tn := startNode(t, "--user", "alice:pw", "--first-message-timeout", "300ms",
		"--dtls-listen", "127.0.0.1:0", "--cert", cert, "--key", key)
	stallDTLSHandshake(t, tn.dtls)
	looptest.Eventually(t, "stalled handshake closed", func() bool {
		return testutilClosed(tn, "dtls", "first_message_timeout") >= 1
	})
}

// TestConnectionLimitPerIP: connections over --max-conns-per-ip are closed
// on accept and counted; closing one frees its slot.
func TestConnectionLimitPerIP(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--max-conns-per-ip", "3")
	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", tn.udp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		conns = append(conns, c)
	}
	looptest.Eventually(t, "two connections refused", func() bool { return testutilClosed(tn, "tcp", "limit") == 2 })
	closed := 0
	for _, c := range conns {
		if closedWithin(c, 300*time.Millisecond) {
			closed++
		}
	}
	if closed != 2 {
		t.Fatalf("%d connections closed by the node, want 2", closed)
	}
	_ = conns[0].Close()
	looptest.Eventually(t, "the close noticed", func() bool { return testutilClosed(tn, "tcp", "peer_closed") >= 1 })
	tc := streamClient(t, "tcp", tn.udp, "alice", "pw")
	if _, err := tc.SendBindingRequest(); err != nil {
		t.Fatalf("a slot freed by a close is usable again: %v", err)
	}
}

// TestTLSClientReset: a TLS client that resets its connection (no
// close_notify, no FIN) is counted as peer_reset, and the close_notify the
// server can then no longer send is not logged as an error: clients on bad
// networks do this all the time.
func TestTLSClientReset(t *testing.T) {
	cert, key := writeTestCert(t)
	tn := startNode(t, "--user", "alice:pw", "--tls-listen", "127.0.0.1:0", "--cert", cert, "--key", key,
		"--log-level", "debug")
	before := testutilClosed(tn, "tls", "peer_reset")
	const n = 3
	for range n {
		raw, err := net.Dial("tcp", tn.tls)
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test's own certificate
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		if _, err := c.Write(req.Raw); err != nil {
			t.Fatal(err)
		}
		// The answer proves the server reads this connection.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp := make([]byte, 1500)
		if _, err := io.ReadAtLeast(c, resp, 20); err != nil {
			t.Fatalf("binding over TLS: %v", err)
		}
		_ = raw.(*net.TCPConn).SetLinger(0) // close sends RST
		_ = raw.Close()
	}
	looptest.Eventually(t, "the resets counted as peer_reset", func() bool {
		return testutilClosed(tn, "tls", "peer_reset") >= before+n
	})
	// pion closes its side after the count; its close_notify then fails.
	looptest.Eventually(t, "the failed close_notify logged", func() bool {
		return strings.Count(tn.logs.String(), "Failed to close conn") >= n
	})
	for _, line := range strings.Split(tn.logs.String(), "\n") {
		if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") {
			t.Errorf("logged above debug for a client reset: %s", line)
		}
	}
}

// stallDTLSHandshake sends one ClientHello to a DTLS listener and then goes
// deaf, as a client that never completes its handshake.
func stallDTLSHandshake(t *testing.T, server string) {
	t.Helper()
	pc := mustListenUDP(t, "udp4", "127.0.0.1:0")
	c, err := dtls.ClientWithOptions(deafPacketConn{pc}, mustUDPAddr(t, server), dtls.WithInsecureSkipVerify(true))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_ = c.HandshakeContext(ctx) // fails: the client hears nothing
	cancel()
	_ = c.Close()
}
