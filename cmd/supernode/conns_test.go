package main

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay/relaytest"
)

func testutilPending(tn *testNode) float64 { return testutil.ToFloat64(tn.n.m.ConnectionsPending) }

// The stream helpers: relaytest's, one copy.
var (
	dialStream     = relaytest.DialStream
	busy           = relaytest.Busy
	bindingRequest = relaytest.BindingRequest
)

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
	// relay's TestConnPendingAgainAfterDeallocate.)
	allocated := dialStream(t, "tcp", tn.udp)
	relaytest.StreamRaw(t, allocated).Allocate("alice", "pw")
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
