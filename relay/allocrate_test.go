package relay

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/supernode/supernode/metrics"
)

// TestUserAllocRate: a burst of five seconds' worth, then one Allocate per
// 1/rate seconds, per user id.
func TestUserAllocRate(t *testing.T) {
	tests := []struct {
		name  string
		rate  float64
		burst int
		every time.Duration // when one more token is there
	}{
		{"ten per second", 10, 50, 100 * time.Millisecond},
		{"one per second", 1, 5, time.Second},
		{"one per ten seconds", 0.1, 1, 10 * time.Second}, // the burst is at least one
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r userRates
			now := t0
			for i := range tc.burst {
				if !r.allow("alice", tc.rate, now) {
					t.Fatalf("attempt %d of the burst refused", i+1)
				}
			}
			if r.allow("alice", tc.rate, now) {
				t.Fatal("attempt past the burst allowed")
			}
			if !r.allow("bob", tc.rate, now) {
				t.Fatal("another user refused: buckets are per user")
			}
			now = now.Add(tc.every - time.Millisecond)
			if r.allow("alice", tc.rate, now) {
				t.Fatal("allowed before a token refilled")
			}
			now = now.Add(2 * time.Millisecond) // a little over, for float rounding
			if !r.allow("alice", tc.rate, now) {
				t.Fatal("refused once a token refilled")
			}
			if r.allow("alice", tc.rate, now) {
				t.Fatal("a refused attempt must not leave a token behind")
			}
			// Idle for long: the bucket is full again, not fuller.
			now = now.Add(time.Hour)
			for i := range tc.burst {
				if !r.allow("alice", tc.rate, now) {
					t.Fatalf("after an idle hour, attempt %d refused", i+1)
				}
			}
			if r.allow("alice", tc.rate, now) {
				t.Fatal("after an idle hour the burst grew")
			}
		})
	}
}

// TestUserAllocRateSweep: buckets that have refilled are dropped, so memory
// follows the users allocating now, not every user ever seen.
func TestUserAllocRateSweep(t *testing.T) {
	var r userRates
	now := t0
	for i := range 1000 {
		r.allow("user"+strconv.Itoa(i), 10, now)
	}
	r.allow("busy", 10, now)
	if r.size() != 1001 {
		t.Fatalf("%d buckets, want 1001", r.size())
	}
	for range 60 {
		now = now.Add(time.Second)
		for range 10 {
			r.allow("busy", 10, now)
		}
	}
	if got := r.size(); got != 1 {
		t.Fatalf("%d buckets a minute later, want only the busy user's", got)
	}
}

// TestUserAllocRateBounded: however many user ids allocate at once, the
// buckets held stay at maxUserBuckets.
func TestUserAllocRateBounded(t *testing.T) {
	var r userRates
	now := t0
	for i := range maxUserBuckets + 5000 {
		if i%1000 == 0 {
			now = now.Add(100 * time.Millisecond) // none refills in this time
		}
		if !r.allow("u"+strconv.Itoa(i), 1, now) {
			t.Fatalf("user %d refused its first Allocate", i)
		}
	}
	if got := r.size(); got > maxUserBuckets {
		t.Fatalf("%d buckets, want at most %d", got, maxUserBuckets)
	}
}

// TestQuotaAllocRate: listener.quota refuses past the rate and counts it
// under quota="rate"; zero is unlimited.
func TestQuotaAllocRate(t *testing.T) {
	l := newInspectListener(t, false)
	now := t0
	l.srv.cfg.Now = func() time.Time { return now }
	l.srv.cfg.UserAllocRate = 1
	rate := l.srv.m.QuotaRejections.For(metrics.QuotaRate)
	src := func(i int) net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 10000 + i} }
	for i := range 5 {
		if !l.quota("alice", "", src(i)) {
			t.Fatalf("Allocate %d of the burst refused", i+1)
		}
	}
	if l.quota("alice", "", src(5)) {
		t.Fatal("Allocate past the burst allowed")
	}
	if got := promToFloat(rate); got != 1 {
		t.Fatalf("quota_rejections_total{quota=rate} = %v, want 1", got)
	}
	now = now.Add(time.Second)
	if !l.quota("alice", "", src(6)) {
		t.Fatal("refused a second later")
	}
	l.srv.cfg.UserAllocRate = 0
	for i := range 20 {
		if !l.quota("alice", "", src(7+i)) {
			t.Fatal("refused with no rate set")
		}
	}
	if got := promToFloat(rate); got != 1 {
		t.Fatalf("quota_rejections_total{quota=rate} = %v, want still 1", got)
	}
}

// BenchmarkUserAllocRate is the rate check's cost per Allocate, refused.
func BenchmarkUserAllocRate(b *testing.B) {
	var r userRates
	for i := range 10000 {
		r.allow("u"+strconv.Itoa(i), 10, t0)
	}
	for b.Loop() {
		r.allow("u42", 10, t0)
	}
}
