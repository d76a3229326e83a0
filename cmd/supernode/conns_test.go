package main

import (
	"bytes"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/supernode/supernode/looptest"
)

func testutilPending(tn *testNode) float64 { return testutil.ToFloat64(tn.n.m.ConnectionsPending) }

// dialStream opens a plain TCP or TLS connection to the node, closed when
// the test ends.
func dialStream(t *testing.T, transport, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	if transport == "tls" {
		c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test certificate
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial %s %s: %v", transport, addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// streamRaw speaks STUN by hand over a TCP/TLS connection (framed as RFC
// 6062 §4 and RFC 8656 §12.5 say).
func streamRaw(t *testing.T, c net.Conn) *rawClient {
	return &rawClient{t: t, conn: turn.NewSTUNConn(c), server: c.RemoteAddr()}
}

// busy writes write(i) to c every 100 ms, at most 100 times, until a
// write fails or the returned stop is called; stop waits for it to end.
func busy(c net.Conn, write func(i int) []byte) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := range 100 {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(write(i)); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func bindingRequest(int) []byte { return stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw }

// TestConnAuthTimeout checks that --auth-timeout reaches the relay: a TCP
// connection that holds no allocation is closed that long after it was
// accepted, however it keeps the socket busy, and counted auth_timeout,
// while a connection that allocated and an RFC 6062 data connection that
// bound, both accepted before it, outlive their own auth deadlines. (Every
// transport and every way of keeping busy, on the bubble's clock: relay's
// TestStreamTimeouts and TestStreamTimeoutsAfterAllocation.)
func TestConnAuthTimeout(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--auth-timeout", "1s", "--allow-peer", "127.0.0.1")

	// A connection that allocated: the idle timeout (10m) rules, not the
	// auth deadline. (When the allocation ends it is pending again:
	// TestConnPendingAgainAfterDeallocate.)
	allocated := dialStream(t, "tcp", tn.udp)
	streamRaw(t, allocated).allocate("alice", "pw")
	if p := testutilPending(tn); p != 0 {
		t.Fatalf("pending connections %v after the allocation, want 0", p)
	}

	// RFC 6062: the data connection authenticates with ConnectionBind and
	// then carries peer bytes; the auth deadline no longer applies.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1024)
		for range 100 {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			_, _ = c.Write(buf[:n])
		}
	})
	control := dialStream(t, "tcp", tn.udp)
	c := newClient(t, turn.NewSTUNConn(control), tn.udp, "alice", "pw")
	alloc, err := c.AllocateTCP()
	if err != nil {
		t.Fatalf("allocate TCP: %v", err)
	}
	defer alloc.Close()
	data, err := alloc.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("connect through relay: %v", err)
	}
	defer data.Close()
	looptest.Eventually(t, "no pending connections", func() bool { return testutilPending(tn) == 0 })

	// Busy with Binding requests and no allocation: closed at its auth
	// deadline, after those of the connections above.
	before := testutilClosed(tn, "tcp", "auth_timeout")
	busyConn := dialStream(t, "tcp", tn.udp)
	start := time.Now()
	stop := busy(busyConn, bindingRequest)
	defer stop()
	if !closedWithin(busyConn, 5*time.Second) {
		t.Fatal("server kept the busy connection without an allocation open for 5s")
	}
	t.Logf("closed after %v", time.Since(start).Round(time.Millisecond))
	looptest.Eventually(t, "close counted as auth_timeout", func() bool {
		return testutilClosed(tn, "tcp", "auth_timeout") == before+1
	})

	if closedWithin(allocated, 100*time.Millisecond) {
		t.Fatal("connection that allocated was closed")
	}
	if got := testutilClosed(tn, "tcp", "auth_timeout"); got != before+1 {
		t.Fatalf("auth_timeout counted %v times, want %v", got, before+1)
	}
	if p := testutilPending(tn); p != 0 {
		t.Fatalf("pending connections %v with the allocations held, want 0", p)
	}
	msg := []byte("still relaying")
	if _, err := data.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	_ = data.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := ioReadFull(data, buf); err != nil || !bytes.Equal(buf, msg) {
		t.Fatalf("echo after the auth deadline: %q, %v", buf, err)
	}
}

// closeAllAndCheck closes conns (the ones the node accepted) and checks
// that every slot they held is given back exactly once: the pending gauge
// returns to zero, not below.
func closeAllAndCheck(t *testing.T, tn *testNode, conns []net.Conn) {
	t.Helper()
	before := testutilClosed(tn, "tcp", "peer_closed")
	for _, c := range conns {
		_ = c.Close()
	}
	looptest.Eventually(t, "every close noticed", func() bool {
		return testutilClosed(tn, "tcp", "peer_closed") >= before+float64(len(conns))
	})
	if p := testutilPending(tn); p != 0 {
		t.Fatalf("pending connections %v after all closed, want 0", p)
	}
}

// TestConnPendingLimit: connections without an allocation over
// --max-pending-conns are closed on accept and counted pending_limit; an
// Allocate frees the slot.
func TestConnPendingLimit(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--max-pending-conns", "5",
		"--first-message-timeout", "1m", "--auth-timeout", "1m")
	var conns []net.Conn
	for range 5 {
		conns = append(conns, dialStream(t, "tcp", tn.udp))
	}
	looptest.Eventually(t, "5 pending", func() bool { return testutilPending(tn) == 5 })

	refuse := func(want float64) {
		t.Helper()
		c := dialStream(t, "tcp", tn.udp)
		if !closedWithin(c, 5*time.Second) {
			t.Fatal("connection over --max-pending-conns kept open")
		}
		looptest.Eventually(t, "counted pending_limit", func() bool { return testutilClosed(tn, "tcp", "pending_limit") == want })
		if p := testutilPending(tn); p != 5 {
			t.Fatalf("pending gauge %v, want 5", p)
		}
	}
	refuse(1)

	streamRaw(t, conns[0]).allocate("alice", "pw")
	looptest.Eventually(t, "the allocated connection no longer pending", func() bool { return testutilPending(tn) == 4 })
	c := dialStream(t, "tcp", tn.udp)
	looptest.Eventually(t, "5 pending again", func() bool { return testutilPending(tn) == 5 })
	if closedWithin(c, 300*time.Millisecond) {
		t.Fatal("connection refused although an allocation freed a slot")
	}
	conns = append(conns, c)
	refuse(2)

	closeAllAndCheck(t, tn, conns)
}

// TestConnLimitPerIPCountsPendingOnly: --max-conns-per-ip bounds the
// connections one IP holds without an allocation; connections with one do
// not count, so many calls behind one NAT all get through.
func TestConnLimitPerIPCountsPendingOnly(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--max-conns-per-ip", "3",
		"--first-message-timeout", "1m", "--auth-timeout", "1m")
	var conns []net.Conn
	for i := range 10 {
		c := dialStream(t, "tcp", tn.udp)
		rc := streamRaw(t, c)
		resp := rc.do(stun.MethodAllocate, "alice", "pw", requestedTransport(17))
		if code := errCode(resp); code != 0 {
			t.Fatalf("allocate on connection %d: code %d", i, code)
		}
		if p := testutilPending(tn); p != 0 {
			t.Fatalf("pending gauge %v after allocation %d, want 0", p, i)
		}
		conns = append(conns, c)
	}
	for range 3 {
		conns = append(conns, dialStream(t, "tcp", tn.udp))
	}
	looptest.Eventually(t, "3 pending", func() bool { return testutilPending(tn) == 3 })
	before := testutilClosed(tn, "tcp", "limit")
	c := dialStream(t, "tcp", tn.udp)
	if !closedWithin(c, 5*time.Second) {
		t.Fatal("4th pending connection from one IP kept open")
	}
	looptest.Eventually(t, "counted limit", func() bool { return testutilClosed(tn, "tcp", "limit") == before+1 })
	if got := tn.counter("allocations_active", "tcp"); got != 10 {
		t.Fatalf("allocations_active{tcp} = %v, want 10", got)
	}
	closeAllAndCheck(t, tn, conns)
	looptest.Eventually(t, "allocations gone", func() bool { return tn.counter("allocations_active", "tcp") == 0 })
}

// TestConnPendingAgainAfterDeallocate tries what held thousands of
// connections uncounted: allocate on a TCP connection, delete the
// allocation with Refresh(0), keep the connection. It is pending again —
// counted, capped, and closed at a new auth deadline.
func TestConnPendingAgainAfterDeallocate(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--max-conns-per-ip", "2",
		"--first-message-timeout", "1m", "--auth-timeout", "1s")
	a := dialStream(t, "tcp", tn.udp)
	ra := streamRaw(t, a)
	if code := errCode(ra.do(stun.MethodAllocate, "alice", "pw", requestedTransport(17))); code != 0 {
		t.Fatalf("allocate: code %d", code)
	}
	looptest.Eventually(t, "no pending connection", func() bool { return testutilPending(tn) == 0 })
	before := testutilClosed(tn, "tcp", "auth_timeout")
	if code := errCode(ra.do(stun.MethodRefresh, "alice", "pw", lifetime(0))); code != 0 {
		t.Fatalf("Refresh(0): code %d", code)
	}
	looptest.Eventually(t, "the connection pending again", func() bool { return testutilPending(tn) == 1 })
	stop := busy(a, bindingRequest) // keeps it busy: the deadline does not move
	defer stop()
	if !closedWithin(a, 5*time.Second) {
		t.Fatal("a connection without an allocation any more kept open past --auth-timeout")
	}
	looptest.Eventually(t, "counted auth_timeout", func() bool { return testutilClosed(tn, "tcp", "auth_timeout") == before+1 })
	looptest.Eventually(t, "no pending connection", func() bool { return testutilPending(tn) == 0 })

	// With the per-IP cap full of pending connections, a connection whose
	// allocation ends cannot take a slot back: it is closed and counted.
	b := dialStream(t, "tcp", tn.udp)
	rb := streamRaw(t, b)
	if code := errCode(rb.do(stun.MethodAllocate, "alice", "pw", requestedTransport(17))); code != 0 {
		t.Fatalf("allocate: code %d", code)
	}
	dialStream(t, "tcp", tn.udp)
	dialStream(t, "tcp", tn.udp)
	looptest.Eventually(t, "2 pending", func() bool { return testutilPending(tn) == 2 })
	limited := testutilClosed(tn, "tcp", "limit")
	refresh := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime(0),
		stun.NewUsername("alice"), stun.NewRealm(rb.realm), stun.NewNonce(rb.nonce),
		stun.NewLongTermIntegrity("alice", rb.realm, "pw"), stun.Fingerprint)
	if _, err := rb.conn.WriteTo(refresh.Raw, rb.server); err != nil { // its answer may not come: the node closes
		t.Fatal(err)
	}
	if !closedWithin(b, 5*time.Second) {
		t.Fatal("a connection over the per-IP cap after its allocation ended kept open")
	}
	looptest.Eventually(t, "counted limit", func() bool { return testutilClosed(tn, "tcp", "limit") == limited+1 })
	if p := testutilPending(tn); p != 2 {
		t.Fatalf("pending gauge %v, want 2 (the slot was not taken)", p)
	}
}
