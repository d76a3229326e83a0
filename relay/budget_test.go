package relay

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// guardClock is an injected clock for the budget and throttle tests; it
// only moves when told to.
type guardClock struct{ ns atomic.Int64 }

func (c *guardClock) now() time.Time          { return time.Unix(1_700_000_000, c.ns.Load()) }
func (c *guardClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// take calls allow n times and counts the passes.
func take(b *sourceBudget, ip netip.Addr, n int) (passed int) {
	for range n {
		if b.allow(ip) {
			passed++
		}
	}
	return passed
}

// randomV4 returns n distinct pseudo-random IPv4 addresses.
func randomV4(n int, seed uint64) []netip.Addr {
	r := rand.New(rand.NewPCG(seed, seed))
	seen := make(map[uint32]bool, n)
	out := make([]netip.Addr, 0, n)
	for len(out) < n {
		v := r.Uint32()
		if seen[v] {
			continue
		}
		seen[v] = true
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], v)
		out = append(out, netip.AddrFrom4(a))
	}
	return out
}

func TestBudgetDisabled(t *testing.T) {
	for _, rate := range []float64{0, -1} {
		if b := newSourceBudget(rate, nil); b != nil {
			t.Errorf("rate %v: got a budget, want nil", rate)
		}
	}
	var b *sourceBudget
	if take(b, netip.MustParseAddr("192.0.2.1"), 1000) != 1000 {
		t.Error("a nil budget refused a request")
	}
}

func TestBudgetBurstRefusalRefill(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rate  float64
		burst int           // passes at once from a full bucket
		every time.Duration // refill of one token
	}{
		{"10/s", 10, 20, 100 * time.Millisecond},
		{"200/s", 200, 400, 5 * time.Millisecond},
		{"0.5/s", 0.5, 1, 2 * time.Second},
		{"0.25/s: at least one token deep", 0.25, 1, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c guardClock
			b := newSourceBudget(tc.rate, c.now)
			ip := netip.MustParseAddr("192.0.2.1")
			if got := take(b, ip, tc.burst+50); got != tc.burst {
				t.Fatalf("from a full bucket %d passed, want the burst %d", got, tc.burst)
			}
			c.advance(tc.every - 1)
			if b.allow(ip) {
				t.Fatal("passed before a token was back")
			}
			c.advance(1)
			if got := take(b, ip, 10); got != 1 {
				t.Fatalf("after one refill interval %d passed, want 1", got)
			}
			c.advance(time.Hour)
			if got := take(b, ip, tc.burst+50); got != tc.burst {
				t.Fatalf("after an hour idle %d passed, want the burst %d (no more)", got, tc.burst)
			}
		})
	}
}

func TestBudgetSourceKeys(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"192.0.2.1", "::ffff:192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"2001:db8::1%eth0", "2001:db8::2", true},
		{"::ffff:0:0", "::", false},
	} {
		t.Run(tc.a+" "+tc.b, func(t *testing.T) {
			var c guardClock
			b := newSourceBudget(10, c.now)
			a, o := netip.MustParseAddr(tc.a), netip.MustParseAddr(tc.b)
			if same := sourceKey(a) == sourceKey(o); same != tc.same {
				t.Fatalf("same key: %v, want %v", same, tc.same)
			}
			if !tc.same && b.slot(a) == b.slot(o) {
				t.Skip("different sources in one slot (1 in 2^14 runs)")
			}
			take(b, a, 20)
			if got := take(b, o, 1); (got == 0) != tc.same {
				t.Errorf("%s after %s's burst: %d passed; want a budget of its own: %v", tc.b, tc.a, got, !tc.same)
			}
		})
	}
}

// slotSharer returns an address of another source in ip's slot.
func slotSharer(t *testing.T, b *sourceBudget, ip netip.Addr) netip.Addr {
	t.Helper()
	for i := range uint32(1 << 24) {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], 10<<24|i)
		o := netip.AddrFrom4(a)
		if b.slot(o) == b.slot(ip) && sourceKey(o) != sourceKey(ip) {
			return o
		}
	}
	t.Fatal("no address in 10/8 shares the slot")
	return netip.Addr{}
}

// TestBudgetFloodDoesNotStarveOthers: one source sending far over its
// budget gets its burst and then its rate; another source, in another
// slot, still gets its whole burst and rate.
func TestBudgetFloodDoesNotStarveOthers(t *testing.T) {
	var c guardClock
	b := newSourceBudget(10, c.now)
	flood := netip.MustParseAddr("198.51.100.7")
	other := netip.MustParseAddr("203.0.113.9")
	if b.slot(flood) == b.slot(other) {
		other = netip.MustParseAddr("203.0.113.10") // they shared a slot: 1 in 2^14 runs
	}
	floodPassed, otherPassed := 0, 0
	for range 10 * 100 { // ten seconds in 10ms steps
		floodPassed += take(b, flood, 100) // 10,000/s
		otherPassed += take(b, other, 1)   // 100/s
		c.advance(10 * time.Millisecond)
	}
	// Each: the burst of 20, then 10/s for the 9.99s after the first step.
	if floodPassed < 115 || floodPassed > 120 {
		t.Errorf("flooding source: %d passed in 10s, want about 20 + 10*10", floodPassed)
	}
	if otherPassed < 115 || otherPassed > 120 {
		t.Errorf("other source: %d passed in 10s, want about 20 + 10*10", otherPassed)
	}
}

// TestBudgetSharedSlot: sources hashing to one slot share its bucket.
func TestBudgetSharedSlot(t *testing.T) {
	var c guardClock
	b := newSourceBudget(10, c.now)
	first := netip.MustParseAddr("198.51.100.7")
	second := slotSharer(t, b, first)
	if got := take(b, first, 15); got != 15 {
		t.Fatalf("first: %d of 15 passed", got)
	}
	if got := take(b, second, 10); got != 5 {
		t.Fatalf("second, sharing a busy slot: %d passed, want the 5 left", got)
	}
	if got := take(b, first, 1); got != 0 {
		t.Fatalf("first, after the second drained the slot: %d passed, want 0", got)
	}
	c.advance(2 * time.Second) // full again
	if got := take(b, second, 30); got != 20 {
		t.Fatalf("second, alone on the slot: %d passed, want a full burst", got)
	}
}

// TestBudgetSpoofedFlood: 100k requests from 100k random addresses at one
// instant pass no more than the node-wide burst, a second later no more
// than the node-wide rate, and the budget allocates nothing meanwhile: its
// memory is the fixed table.
func TestBudgetSpoofedFlood(t *testing.T) {
	var c guardClock
	const rate = 10
	b := newSourceBudget(rate, c.now)
	ips := randomV4(100_000, 3)
	passed := 0
	// 20 runs, so that one allocation elsewhere in the process (a timer
	// of another test firing) does not read as one per flood.
	allocs := testing.AllocsPerRun(20, func() {
		passed = 0
		for _, ip := range ips {
			if b.allow(ip) {
				passed++
			}
		}
	})
	// AllocsPerRun ran the flood 21 times (a warm-up and the runs): the
	// node-wide burst went in the first; the others got nothing.
	if allocs != 0 {
		t.Errorf("%v allocations during a flood of 100k sources, want 0", allocs)
	}
	if passed != 0 {
		t.Errorf("second flood at the same instant: %d passed, want 0", passed)
	}
	c.advance(time.Hour)
	if got := countAllowed(b, ips); got != 2*rate*budgetNodeFactor {
		t.Errorf("flood from a full node bucket: %d passed, want the node-wide burst %d", got, 2*rate*budgetNodeFactor)
	}
	c.advance(time.Second)
	if got := countAllowed(b, ips); got != rate*budgetNodeFactor {
		t.Errorf("flood one second later: %d passed, want the node-wide rate %d", got, rate*budgetNodeFactor)
	}
}

func countAllowed(b *sourceBudget, ips []netip.Addr) (n int) {
	for _, ip := range ips {
		if b.allow(ip) {
			n++
		}
	}
	return n
}

// TestBudgetConcurrent: several read loops calling allow at once pass
// exactly a source's burst, and exactly the node's burst across sources.
func TestBudgetConcurrent(t *testing.T) {
	var c guardClock
	b := newSourceBudget(100, c.now)
	one := netip.MustParseAddr("192.0.2.1")
	ips := randomV4(20_000, 4)
	var onePassed, manyPassed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { onePassed.Add(int64(take(b, one, 1000))) })
	}
	wg.Wait()
	for g := range 8 {
		wg.Go(func() {
			for _, ip := range ips[g*2500 : (g+1)*2500] {
				if b.allow(ip) {
					manyPassed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := onePassed.Load(); got != 200 {
		t.Errorf("one source from 8 goroutines: %d passed, want its burst 200", got)
	}
	if got, want := onePassed.Load()+manyPassed.Load(), int64(2*100*budgetNodeFactor); got != want {
		t.Errorf("all sources: %d passed, want the node-wide burst %d", got, want)
	}
}

func TestBudgetAllocatesNothing(t *testing.T) {
	var c guardClock
	b := newSourceBudget(10, c.now)
	for _, s := range []string{"192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1", "fe80::1%eth0"} {
		ip := netip.MustParseAddr(s)
		// 1001 calls: the first 20 pass, the rest are refused.
		if n := testing.AllocsPerRun(1000, func() { b.allow(ip) }); n != 0 {
			t.Errorf("allow(%s): %v allocations per call, want 0", s, n)
		}
	}
}

func BenchmarkBudgetAllow(b *testing.B) {
	ips := randomV4(1<<16, 5)
	var fixed guardClock
	for _, bc := range []struct {
		name string
		rate float64
		ips  []netip.Addr
		now  func() time.Time
	}{
		{"pass", 1e12, ips[:1], time.Now},
		{"pass/fixed-clock", 1e12, ips[:1], fixed.now},
		{"refuse", 1e-3, ips[:1], time.Now},
		{"pass/many-sources", 1e12, ips, time.Now},
		{"refuse/many-sources", 1e-3, ips, time.Now},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bud := newSourceBudget(bc.rate, bc.now)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				bud.allow(bc.ips[i&(len(bc.ips)-1)])
				i++
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			bud := newSourceBudget(bc.rate, bc.now)
			b.ReportAllocs()
			var next atomic.Uint32
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(7919))
				for pb.Next() {
					bud.allow(bc.ips[i&(len(bc.ips)-1)])
					i++
				}
			})
		})
	}
}
