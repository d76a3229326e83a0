package main

import (
	"testing"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/metrics"
)

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
