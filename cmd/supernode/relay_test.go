package main

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
)

// tapConn counts what a pion client sends and receives by kind, so a test
// can prove both Send/Data indications and ChannelData were used.
type tapConn struct {
	net.PacketConn
	sendInd, dataInd, chanOut, chanIn atomic.Int64
}

func (c *tapConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.classify(b, &c.sendInd, &c.chanOut, 0x0016)
	return c.PacketConn.WriteTo(b, a)
}

func (c *tapConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.classify(b[:n], &c.dataInd, &c.chanIn, 0x0017)
	}
	return n, a, err
}

func (c *tapConn) classify(b []byte, ind, ch *atomic.Int64, indType uint16) {
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

// newClient returns a pion TURN client over conn, listening.
func newClient(t *testing.T, conn net.PacketConn, server, user, pass string) *turn.Client {
	t.Helper()
	cfg := &turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: user, Password: pass, Realm: "supernode.test", LoggerFactory: pionLogs,
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

// tcpEchoPeer is a TCP peer on 127.0.0.1 that echoes every connection it
// accepts; it stops listening when the test ends.
func tcpEchoPeer(t *testing.T) net.Listener {
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

// tcpAllocation is pion's RFC 6062 client allocation (its type is internal
// to pion): a listener for peers' connections that also dials peers.
type tcpAllocation interface {
	net.Listener
	Dial(network, addr string) (net.Conn, error)
}

// allocateTCP makes an RFC 6062 TCP allocation on tn as user, over a TCP
// control connection to its listener; both close when the test ends.
func allocateTCP(t *testing.T, tn *testNode, user, pass string) tcpAllocation {
	t.Helper()
	control, err := net.Dial("tcp", tn.udp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { control.Close() })
	c := newClient(t, turn.NewSTUNConn(control), tn.udp, user, pass)
	alloc, err := c.AllocateTCP()
	if err != nil {
		t.Fatalf("allocate TCP: %v", err)
	}
	t.Cleanup(func() { alloc.Close() })
	return alloc
}

// exchange sends count numbered messages through relay to peer and waits for
// each echo; it returns how many came back.
func exchange(t *testing.T, relayConn net.PacketConn, peer net.Addr, count int) int {
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

func TestRelayUDPChannelDataAndIndications(t *testing.T) {
	tn := startNode(t, "--user", "alice:secret1", "--allow-peer", "127.0.0.1")
	peer := mustListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)

	tap := &tapConn{PacketConn: mustListenUDP(t, "udp4", "127.0.0.1:0")}
	c := newClient(t, tap, tn.udp, "alice", "secret1")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = relayConn.Close()
		}
	})
	if got := tn.counter("allocations_active", "udp"); got != 1 {
		t.Fatalf("allocations_active{udp} = %v, want 1", got)
	}
	// Peer first, before any channel exists: it arrives as a Data indication.
	if err := c.CreatePermission(peer.LocalAddr()); err != nil {
		t.Fatalf("create permission: %v", err)
	}
	if _, err := peer.WriteTo([]byte("hello from peer"), relayConn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1600)
	_ = relayConn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := relayConn.ReadFrom(buf); err != nil || string(buf[:n]) != "hello from peer" {
		t.Fatalf("peer-first packet: %q, %v", buf[:n], err)
	}
	if n := exchange(t, relayConn, peer.LocalAddr(), 60); n != 60 {
		t.Fatalf("%d of 60 messages came back", n)
	}
	if tap.sendInd.Load() == 0 || tap.chanOut.Load() == 0 || tap.dataInd.Load() == 0 || tap.chanIn.Load() == 0 {
		t.Fatalf("want both indications and ChannelData each way: send=%d chanOut=%d data=%d chanIn=%d",
			tap.sendInd.Load(), tap.chanOut.Load(), tap.dataInd.Load(), tap.chanIn.Load())
	}
	if got := tn.counter("relay_packets", metrics.ClientToPeer, "udp"); got != 60 {
		t.Errorf("relay_packets{client_to_peer,udp} = %v, want 60", got)
	}
	if got := tn.counter("relay_packets", metrics.PeerToClient, "udp"); got != 61 {
		t.Errorf("relay_packets{peer_to_client,udp} = %v, want 61", got)
	}
	if got := tn.counter("requests", "channel_bind", "success"); got < 1 {
		t.Errorf("requests{channel_bind,success} = %v, want >= 1", got)
	}
	// Closing the relay conn refreshes with lifetime 0: the allocation goes.
	closed = true
	if err := relayConn.Close(); err != nil {
		t.Fatal(err)
	}
	looptest.Eventually(t, "allocation deleted", func() bool {
		return tn.counter("allocations_active", "udp") == 0 && tn.counter("allocations_deleted", "udp") == 1
	})
	if got := tn.counter("requests", "refresh", "success"); got < 1 {
		t.Errorf("requests{refresh,success} = %v, want >= 1", got)
	}
}

// streamClient dials the node over TCP, TLS or DTLS and returns a client.
func streamClient(t *testing.T, transport, addr, user, pass string) *turn.Client {
	t.Helper()
	var conn net.Conn
	var err error
	switch transport {
	case "tcp":
		conn, err = net.Dial("tcp", addr)
	case "tls":
		conn, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test certificate
	case "dtls":
		conn, err = dtls.DialWithOptions("udp", mustUDPAddr(t, addr), dtls.WithInsecureSkipVerify(true))
	}
	if err != nil {
		t.Fatalf("dial %s %s: %v", transport, addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return newClient(t, turn.NewSTUNConn(conn), addr, user, pass)
}

func TestRelayStreamTransports(t *testing.T) {
	cert, key := writeTestCert(t)
	tn := startNode(t, "--user", "alice:secret1", "--allow-peer", "127.0.0.1",
		"--tls-listen", "127.0.0.1:0", "--dtls-listen", "127.0.0.1:0", "--cert", cert, "--key", key)
	peer := mustListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)
	for _, tc := range []struct{ transport, addr string }{
		{"tcp", tn.udp}, {"tls", tn.tls}, {"dtls", tn.dtls},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			c := streamClient(t, tc.transport, tc.addr, "alice", "secret1")
			relayConn, err := c.Allocate()
			if err != nil {
				t.Fatalf("allocate over %s: %v", tc.transport, err)
			}
			defer relayConn.Close()
			if n := exchange(t, relayConn, peer.LocalAddr(), 20); n != 20 {
				t.Fatalf("%d of 20 messages came back over %s", n, tc.transport)
			}
			if got := tn.counter("relay_packets", metrics.PeerToClient, tc.transport); got != 20 {
				t.Errorf("relay_packets{peer_to_client,%s} = %v, want 20", tc.transport, got)
			}
		})
	}
}

func TestRelayIPv6(t *testing.T) {
	needIPv6Loopback(t)
	tn := startNode(t, "--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--relay-ip", "127.0.0.1", "--relay-ip", "::1",
		"--user", "alice:secret1", "--allow-peer", "::1")
	addr6 := tn.n.listens["udp"][1]
	peer := mustListenUDP(t, "udp6", "[::1]:0")
	looptest.Echo(peer)
	c := newClient(t, mustListenUDP(t, "udp6", "[::1]:0"), addr6, "alice", "secret1")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relayConn.Close()
	if ip := relayConn.LocalAddr().(*net.UDPAddr).IP; !ip.Equal(net.IPv6loopback) {
		t.Fatalf("relayed address %v, want ::1", relayConn.LocalAddr())
	}
	if n := exchange(t, relayConn, peer.LocalAddr(), 20); n != 20 {
		t.Fatalf("%d of 20 messages came back over IPv6", n)
	}
}

func TestRelayTCPAllocation(t *testing.T) {
	tn := startNode(t, "--user", "alice:secret1", "--allow-peer", "127.0.0.1")
	ln := tcpEchoPeer(t)
	alloc := allocateTCP(t, tn, "alice", "secret1")
	dataConn, err := alloc.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("connect through relay: %v", err)
	}
	defer dataConn.Close()
	for i := range 10 {
		msg := []byte(fmt.Sprintf("tcp relay message %d", i))
		if _, err := dataConn.Write(msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		_ = dataConn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := ioReadFull(dataConn, buf); err != nil {
			t.Fatalf("read echo %d: %v", i, err)
		}
		if !bytes.Equal(buf, msg) {
			t.Fatalf("echo %d: got %q want %q", i, buf, msg)
		}
	}
	if got := tn.counter("requests", "connection_bind", "success"); got != 1 {
		t.Errorf("requests{connection_bind,success} = %v, want 1", got)
	}
	if got := tn.counter("relay_bytes", metrics.PeerToClient, "tcp"); got < 10 {
		t.Errorf("relay_bytes{peer_to_client,tcp} = %v, want the echoed bytes", got)
	}
}

// TestReservationAcrossSockets reserves port pairs with EVEN-PORT and claims
// the second port with RESERVATION-TOKEN from another client socket, as
// turnutils_uclient does for RTCP. With several SO_REUSEPORT sockets the
// kernel sends most second requests to a socket other than the one that
// issued the token; every claim must still get exactly the reserved port.
//
// A reserved port must be held, not merely hoped to stay free: on a busy
// host other programs' sockets land anywhere in the default relay range
// (it overlaps the kernel's ephemeral range), and a claim whose port one of
// them had bound got 508. Here the relay range lies below the ephemeral
// range, and another socket holds the odd port after every other even
// port, so half of the pairs pion would pick are taken, every run.
func TestReservationAcrossSockets(t *testing.T) {
	lo, hi := looptest.FreeUDPRange(t, 21000, 64) // lo is even
	for port := lo + 1; port <= hi; port += 4 {
		held, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
	}
	tn := startNode(t, "--udp-sockets", "4", "--user", "alice:pw",
		"--min-port", strconv.Itoa(lo), "--max-port", strconv.Itoa(hi))
	for i := range 8 {
		rtp := newRawClient(t, tn.udp)
		resp := rtp.do(stun.MethodAllocate, "alice", "pw", requestedTransport(17), evenPort{})
		if code := errCode(resp); code != 0 {
			t.Fatalf("pair %d: EVEN-PORT allocate: code %d", i, code)
		}
		port := relayedPort(t, resp)
		tok, err := resp.Get(stun.AttrReservationToken)
		if err != nil || port%2 != 0 {
			t.Fatalf("pair %d: port %d, token %v", i, port, err)
		}
		rtcp := newRawClient(t, tn.udp)
		resp = rtcp.do(stun.MethodAllocate, "alice", "pw", requestedTransport(17), reservationToken(tok))
		if code := errCode(resp); code != 0 {
			t.Fatalf("pair %d: RESERVATION-TOKEN allocate: code %d", i, code)
		}
		if got := relayedPort(t, resp); got != port+1 {
			t.Fatalf("pair %d: reserved port %d, got %d", i, port+1, got)
		}
		// The steered client keeps working: refresh and delete its allocation.
		if code := errCode(rtcp.do(stun.MethodRefresh, "alice", "pw", lifetime(0))); code != 0 {
			t.Fatalf("pair %d: refresh of the reserved allocation: code %d", i, code)
		}
	}
}

// TestTCPAllocationOverUDPRefused: RFC 6062 §5.1 — a TCP allocation asked
// for over UDP gets 400, and no TCP relay is opened.
func TestTCPAllocationOverUDPRefused(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw")
	c := newRawClient(t, tn.udp)
	if code := errCode(c.do(stun.MethodAllocate, "alice", "pw", requestedTransport(6))); code != 400 {
		t.Fatalf("TCP allocate over UDP: code %d, want 400", code)
	}
	if got := tn.counter("allocations_created", "udp"); got != 0 {
		t.Fatalf("allocations_created = %v", got)
	}
}

// needIPv6Loopback skips a test on a machine without ::1, or fails it when
// SUPERNODE_REQUIRE_INTEROP says every test must run.
func needIPv6Loopback(t *testing.T) {
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
