package relay_test

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// closeAllAndCheck closes conns (the ones the node accepted) and checks
// that every slot they held is given back exactly once: the pending gauge
// returns to zero, not below.
func closeAllAndCheck(t *testing.T, tn *relaytest.Node, conns []net.Conn) {
	t.Helper()
	before := tn.Counter("connections_closed", "tcp", "peer_closed")
	for _, c := range conns {
		_ = c.Close()
	}
	looptest.Eventually(t, "every close noticed", func() bool {
		return tn.Counter("connections_closed", "tcp", "peer_closed") >= before+float64(len(conns))
	})
	if p := tn.Counter("connections_pending"); p != 0 {
		t.Fatalf("pending connections %v after all closed, want 0", p)
	}
}

// TestConnPendingLimit: connections without an allocation over
// --max-pending-conns are closed on accept and counted pending_limit; an
// Allocate frees the slot.
func TestConnPendingLimit(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, Configure: func(c *relay.Config) {
		c.MaxPendingConns, c.FirstMessageTimeout, c.AuthTimeout = 5, time.Minute, time.Minute
	}})
	var conns []net.Conn
	for range 5 {
		conns = append(conns, relaytest.DialStream(t, "tcp", tn.Addr()))
	}
	looptest.Eventually(t, "5 pending", func() bool { return tn.Counter("connections_pending") == 5 })

	refuse := func(want float64) {
		t.Helper()
		c := relaytest.DialStream(t, "tcp", tn.Addr())
		if !relaytest.ClosedWithin(c, 5*time.Second) {
			t.Fatal("connection over --max-pending-conns kept open")
		}
		looptest.Eventually(t, "counted pending_limit", func() bool { return tn.Counter("connections_closed", "tcp", "pending_limit") == want })
		if p := tn.Counter("connections_pending"); p != 5 {
			t.Fatalf("pending gauge %v, want 5", p)
		}
	}
	refuse(1)

	relaytest.StreamRaw(t, conns[0]).Allocate("alice", "pw")
	looptest.Eventually(t, "the allocated connection no longer pending", func() bool { return tn.Counter("connections_pending") == 4 })
	c := relaytest.DialStream(t, "tcp", tn.Addr())
	looptest.Eventually(t, "5 pending again", func() bool { return tn.Counter("connections_pending") == 5 })
	if relaytest.ClosedWithin(c, 300*time.Millisecond) {
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
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, Configure: func(c *relay.Config) {
		c.MaxConnsPerIP, c.FirstMessageTimeout, c.AuthTimeout = 3, time.Minute, time.Minute
	}})
	var conns []net.Conn
	for i := range 10 {
		c := relaytest.DialStream(t, "tcp", tn.Addr())
		rc := relaytest.StreamRaw(t, c)
		resp := rc.Do(stun.MethodAllocate, "alice", "pw", relaytest.RequestedTransport(17))
		if code := relaytest.ErrCode(resp); code != 0 {
			t.Fatalf("allocate on connection %d: code %d", i, code)
		}
		if p := tn.Counter("connections_pending"); p != 0 {
			t.Fatalf("pending gauge %v after allocation %d, want 0", p, i)
		}
		conns = append(conns, c)
	}
	for range 3 {
		conns = append(conns, relaytest.DialStream(t, "tcp", tn.Addr()))
	}
	looptest.Eventually(t, "3 pending", func() bool { return tn.Counter("connections_pending") == 3 })
	before := tn.Counter("connections_closed", "tcp", "limit")
	c := relaytest.DialStream(t, "tcp", tn.Addr())
	if !relaytest.ClosedWithin(c, 5*time.Second) {
		t.Fatal("4th pending connection from one IP kept open")
	}
	looptest.Eventually(t, "counted limit", func() bool { return tn.Counter("connections_closed", "tcp", "limit") == before+1 })
	if got := tn.Counter("allocations_active", "tcp"); got != 10 {
		t.Fatalf("allocations_active{tcp} = %v, want 10", got)
	}
	closeAllAndCheck(t, tn, conns)
	looptest.Eventually(t, "allocations gone", func() bool { return tn.Counter("allocations_active", "tcp") == 0 })
}

// TestConnPendingAgainAfterDeallocate tries what held thousands of
// connections uncounted: allocate on a TCP connection, delete the
// allocation with Refresh(0), keep the connection. It is pending again —
// counted, capped, and closed at a new auth deadline.
func TestConnPendingAgainAfterDeallocate(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, Configure: func(c *relay.Config) {
		c.MaxConnsPerIP, c.FirstMessageTimeout, c.AuthTimeout = 2, time.Minute, time.Second
	}})
	a := relaytest.DialStream(t, "tcp", tn.Addr())
	ra := relaytest.StreamRaw(t, a)
	if code := relaytest.ErrCode(ra.Do(stun.MethodAllocate, "alice", "pw", relaytest.RequestedTransport(17))); code != 0 {
		t.Fatalf("allocate: code %d", code)
	}
	looptest.Eventually(t, "no pending connection", func() bool { return tn.Counter("connections_pending") == 0 })
	before := tn.Counter("connections_closed", "tcp", "auth_timeout")
	if code := relaytest.ErrCode(ra.Do(stun.MethodRefresh, "alice", "pw", relaytest.Lifetime(0))); code != 0 {
		t.Fatalf("Refresh(0): code %d", code)
	}
	looptest.Eventually(t, "the connection pending again", func() bool { return tn.Counter("connections_pending") == 1 })
	stop := relaytest.Busy(a, relaytest.BindingRequest) // keeps it busy: the deadline does not move
	defer stop()
	if !relaytest.ClosedWithin(a, 5*time.Second) {
		t.Fatal("a connection without an allocation any more kept open past --auth-timeout")
	}
	looptest.Eventually(t, "counted auth_timeout", func() bool { return tn.Counter("connections_closed", "tcp", "auth_timeout") == before+1 })
	looptest.Eventually(t, "no pending connection", func() bool { return tn.Counter("connections_pending") == 0 })

	// With the per-IP cap full of pending connections, a connection whose
	// allocation ends cannot take a slot back: it is closed and counted.
	b := relaytest.DialStream(t, "tcp", tn.Addr())
	rb := relaytest.StreamRaw(t, b)
	if code := relaytest.ErrCode(rb.Do(stun.MethodAllocate, "alice", "pw", relaytest.RequestedTransport(17))); code != 0 {
		t.Fatalf("allocate: code %d", code)
	}
	relaytest.DialStream(t, "tcp", tn.Addr())
	relaytest.DialStream(t, "tcp", tn.Addr())
	looptest.Eventually(t, "2 pending", func() bool { return tn.Counter("connections_pending") == 2 })
	limited := tn.Counter("connections_closed", "tcp", "limit")
	refresh := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), relaytest.Lifetime(0),
		stun.NewUsername("alice"), stun.NewRealm(rb.Realm), stun.NewNonce(rb.Nonce),
		stun.NewLongTermIntegrity("alice", rb.Realm, "pw"), stun.Fingerprint)
	if _, err := rb.Conn.WriteTo(refresh.Raw, rb.Server); err != nil { // its answer may not come: the node closes
		t.Fatal(err)
	}
	if !relaytest.ClosedWithin(b, 5*time.Second) {
		t.Fatal("a connection over the per-IP cap after its allocation ended kept open")
	}
	looptest.Eventually(t, "counted limit", func() bool { return tn.Counter("connections_closed", "tcp", "limit") == limited+1 })
	if p := tn.Counter("connections_pending"); p != 2 {
		t.Fatalf("pending gauge %v, want 2 (the slot was not taken)", p)
	}
}
