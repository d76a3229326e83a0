package main

import (
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
)

// signedAllocate builds an Allocate for UDP relaying signed with c's nonce.
func (c *rawClient) signedAllocate(user, pass string) *stun.Message {
	c.t.Helper()
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedTransport(17),
		stun.NewUsername(user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce), stun.NewLongTermIntegrity(user, c.realm, pass),
		stun.Fingerprint)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// TestPortRangeExhausted: one user holds every relay port of a 64-port range.
// Another user's Allocate then gets 508 at once, and a stream of such
// refusals does not stall the listener: a third client's Bindings on the
// same socket, queued behind them, are all answered.
func TestPortRangeExhausted(t *testing.T) {
	const ports = 64
	lo, hi := looptest.FreeUDPRange(t, 21000, ports)
	tn := startNode(t, "--udp-sockets", "1", "--min-port", strconv.Itoa(lo), "--max-port", strconv.Itoa(hi),
		"--user-quota", "0", "--user-alloc-rate", "0", "--unauth-rate", "0",
		"--user", "hog:pw", "--user", "bob:pw")
	got := map[int]bool{}
	for i := range ports {
		c := newRawClient(t, tn.udp)
		resp := c.do(stun.MethodAllocate, "hog", "pw", requestedTransport(17))
		if code := errCode(resp); code != 0 {
			t.Fatalf("allocation %d of %d in %d..%d: code %d (is something else on the host binding these ports?)",
				i+1, ports, lo, hi, code)
		}
		port := relayedPort(t, resp)
		if port < lo || port > hi || got[port] {
			t.Fatalf("allocation %d: port %d out of %d..%d or handed out twice", i+1, port, lo, hi)
		}
		got[port] = true
	}

	// (a) The 65th Allocate, by another user, gets 508 Insufficient Capacity.
	bob := newRawClient(t, tn.udp)
	if code := errCode(bob.do(stun.MethodAllocate, "bob", "pw", requestedTransport(17))); code != 508 {
		t.Fatalf("Allocate past the range: code %d, want 508", code)
	}

	// (b) Rounds of ten refused Allocates sent back to back, then a Binding
	// from a third client: the Binding waits in the socket behind them.
	carol := newRawClient(t, tn.udp)
	const rounds, burst = 20, 10
	buf := make([]byte, 2048)
	for r := range rounds {
		want := map[[stun.TransactionIDSize]byte]bool{}
		for range burst {
			m := bob.signedAllocate("bob", "pw")
			want[m.TransactionID] = true
			if _, err := bob.conn.WriteTo(m.Raw, bob.server); err != nil {
				t.Fatal(err)
			}
		}
		if resp := carol.roundTrip(stun.TransactionID, stun.BindingRequest, stun.Fingerprint); resp == nil ||
			resp.Type != stun.BindingSuccess {
			t.Fatalf("round %d: Binding behind %d refused Allocates not answered: %v", r, burst, resp)
		}
		// Collect bob's answers: every one a 508 (a bound on the wait, not
		// a timing assertion).
		_ = bob.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(want) > 0 {
			n, _, err := bob.conn.ReadFrom(buf)
			if err != nil {
				t.Fatalf("round %d: %d refused Allocates unanswered: %v", r, len(want), err)
			}
			resp := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if resp.Decode() != nil || !want[resp.TransactionID] {
				continue
			}
			if code := errCode(resp); code != 508 {
				t.Fatalf("round %d: Allocate past the range: code %d, want 508", r, code)
			}
			delete(want, resp.TransactionID)
		}
	}
	if got := tn.counter("allocations_active", "udp"); got != ports {
		t.Fatalf("allocations_active = %v, want %d", got, ports)
	}
}

// TestPortFreedOnDeallocate: a port the range ran out of comes back when its
// allocation is deleted, and the next Allocate gets it.
func TestPortFreedOnDeallocate(t *testing.T) {
	lo, hi := looptest.FreeUDPRange(t, 21000, 4)
	tn := startNode(t, "--min-port", strconv.Itoa(lo), "--max-port", strconv.Itoa(hi), "--user", "alice:pw")
	var clients []*rawClient
	var ports []int
	for range 4 {
		c := newRawClient(t, tn.udp)
		ports = append(ports, relayedPort(t, c.allocate("alice", "pw")))
		clients = append(clients, c)
	}
	late := newRawClient(t, tn.udp)
	if code := errCode(late.do(stun.MethodAllocate, "alice", "pw", requestedTransport(17))); code != 508 {
		t.Fatalf("Allocate past the range: code %d, want 508", code)
	}
	if code := errCode(clients[2].do(stun.MethodRefresh, "alice", "pw", lifetime(0))); code != 0 {
		t.Fatalf("deallocate: code %d", code)
	}
	if got := relayedPort(t, late.allocate("alice", "pw")); got != ports[2] {
		t.Fatalf("port %d after a deallocation, want the freed %d", got, ports[2])
	}
}

// TestQuotaUserDefault: with the default --user-quota of 100, a user's 101st
// allocation gets 486 and is counted as quota="user".
func TestQuotaUserDefault(t *testing.T) {
	// The default --user-alloc-rate (a burst of 50) would refuse first.
	tn := startNode(t, "--user-alloc-rate", "0", "--user", "alice:pw", "--user", "bob:pw")
	for i := range 100 {
		c := newRawClient(t, tn.udp)
		if code := errCode(c.do(stun.MethodAllocate, "alice", "pw", requestedTransport(17))); code != 0 {
			t.Fatalf("allocation %d of the default quota: code %d", i+1, code)
		}
	}
	c := newRawClient(t, tn.udp)
	if code := errCode(c.do(stun.MethodAllocate, "alice", "pw", requestedTransport(17))); code != 486 {
		t.Fatalf("101st allocation: code %d, want 486", code)
	}
	if got := tn.counter("quota", metrics.QuotaUser); got != 1 {
		t.Fatalf("quota_rejections_total{quota=user} = %v, want 1", got)
	}
	newRawClient(t, tn.udp).allocate("bob", "pw") // the quota is per user
}

// TestQuotaAllocRate: --user-alloc-rate lets a burst of five seconds' worth
// through, refuses the next Allocate with 486 and counts it as
// quota="rate"; other users keep their own budget.
func TestQuotaAllocRate(t *testing.T) {
	// 0.4 a second: a burst of 2, then one every 2.5 s, so the third
	// Allocate is refused however slowly this machine runs the first two.
	tn := startNode(t, "--user-alloc-rate", "0.4", "--user", "alice:pw", "--user", "bob:pw")
	for range 2 {
		newRawClient(t, tn.udp).allocate("alice", "pw")
	}
	c := newRawClient(t, tn.udp)
	if code := errCode(c.do(stun.MethodAllocate, "alice", "pw", requestedTransport(17))); code != 486 {
		t.Fatalf("Allocate past the burst: code %d, want 486", code)
	}
	if got := scrape(t, tn.http, `supernode_quota_rejections_total{quota="rate"}`); got != 1 {
		t.Fatalf(`/metrics: supernode_quota_rejections_total{quota="rate"} = %v, want 1`, got)
	}
	if got := tn.counter("quota", metrics.QuotaUser); got != 0 {
		t.Fatalf("quota_rejections_total{quota=user} = %v, want 0", got)
	}
	newRawClient(t, tn.udp).allocate("bob", "pw")
	if got := tn.counter("allocations_active", "udp"); got != 3 {
		t.Fatalf("allocations_active = %v, want 3", got)
	}
}
