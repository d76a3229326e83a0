package relay

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/supernode/supernode/metrics"
)

var (
	throttleIP   = netip.MustParseAddr("198.51.100.7")
	throttleUser = "alice"
)

// newTestThrottle: 3 failures within a minute; backoffs 5s, 10s, 20s, 40s,
// 40s...; escalation memory max(2m, 80s) = 2m.
func newTestThrottle(c *guardClock) *authThrottle {
	return newAuthThrottle(3, time.Minute, 5*time.Second, 40*time.Second, c.now)
}

// failIP records n failures from ip without a username, and returns what
// the last one started.
func failIP(t *authThrottle, ip netip.Addr, n int) (started []metrics.Scope) {
	for range n {
		started = t.failed(ip, "")
	}
	return started
}

func ipBlocked(t *authThrottle, ip netip.Addr) bool {
	b, _ := t.blocked(ip, "")
	return b
}

func TestThrottleDisabled(t *testing.T) {
	for _, tc := range []struct {
		limit   int
		backoff time.Duration
	}{{-1, time.Second}, {0, time.Second}, {3, 0}} {
		if th := newAuthThrottle(tc.limit, time.Minute, tc.backoff, time.Minute, nil); th != nil {
			t.Errorf("limit %d backoff %v: got a throttle, want nil", tc.limit, tc.backoff)
		}
	}
	var th *authThrottle
	for range 100 {
		if s := th.failed(throttleIP, throttleUser); s != nil {
			t.Fatalf("a nil throttle started %v", s)
		}
	}
	if ip, user := th.blocked(throttleIP, throttleUser); ip || user {
		t.Error("a nil throttle blocked")
	}
}

// TestThrottleBackoff walks one source through the whole life of its
// backoffs: the limit, the exact end, doubling, the cap and the reset.
func TestThrottleBackoff(t *testing.T) {
	var c guardClock
	th := newTestThrottle(&c)
	round := func(want time.Duration) {
		t.Helper()
		if s := failIP(th, throttleIP, 2); s != nil || ipBlocked(th, throttleIP) {
			t.Fatalf("blocked (started %v) after limit-1 failures", s)
		}
		if s := failIP(th, throttleIP, 1); !slices.Equal(s, []metrics.Scope{metrics.ScopeIP}) {
			t.Fatalf("the limit-th failure started %v, want [ip]", s)
		}
		c.advance(want - 1)
		if !ipBlocked(th, throttleIP) {
			t.Fatalf("not blocked 1ns before the end of a %v backoff", want)
		}
		c.advance(1)
		if ipBlocked(th, throttleIP) {
			t.Fatalf("still blocked at the end of a %v backoff", want)
		}
	}
	round(5 * time.Second)
	round(10 * time.Second)
	round(20 * time.Second)
	round(40 * time.Second)
	round(40 * time.Second) // capped
	c.advance(2*time.Minute - 1)
	round(40 * time.Second) // 1ns short of the escalation memory: still doubling
	c.advance(2 * time.Minute)
	round(5 * time.Second) // quiet for the escalation memory: back to the first
	round(10 * time.Second)
	// The limit-th failure decides: two failures before the memory lapses
	// and the third at its end start the first backoff again.
	c.advance(2*time.Minute - time.Second)
	failIP(th, throttleIP, 2)
	c.advance(time.Second)
	if failIP(th, throttleIP, 1); !ipBlocked(th, throttleIP) {
		t.Fatal("the third failure, a second after the first two, did not start a backoff")
	}
	c.advance(5 * time.Second)
	if ipBlocked(th, throttleIP) {
		t.Fatal("a backoff started as the escalation memory lapsed was doubled")
	}
}

// TestThrottleIdleAfterBackoff: once every backoff has ended, blocked
// stops reading the clock, and a later backoff is seen again.
func TestThrottleIdleAfterBackoff(t *testing.T) {
	var c guardClock
	reads := 0
	th := newAuthThrottle(3, time.Minute, 5*time.Second, 40*time.Second, func() time.Time { reads++; return c.now() })
	if th.blocked(throttleIP, throttleUser); reads != 1 { // newAuthThrottle's epoch
		t.Fatalf("blocked read the clock with no backoff ever started (%d reads)", reads-1)
	}
	for range 3 {
		th.failed(throttleIP, throttleUser)
	}
	c.advance(5 * time.Second)
	if ip, user := th.blocked(throttleIP, throttleUser); ip || user {
		t.Fatal("blocked after the backoff ended")
	}
	reads = 0
	if th.blocked(throttleIP, throttleUser); reads != 0 {
		t.Fatal("blocked still reads the clock after every backoff ended")
	}
	for range 3 {
		th.failed(throttleIP, throttleUser)
	}
	if ip, user := th.blocked(throttleIP, throttleUser); !ip || !user {
		t.Fatal("a backoff started after the fast path cleared was missed")
	}
}

func TestThrottleWindow(t *testing.T) {
	var c guardClock
	th := newTestThrottle(&c)
	failIP(th, throttleIP, 2)
	c.advance(time.Minute) // the window of those two closes
	if s := failIP(th, throttleIP, 2); s != nil || ipBlocked(th, throttleIP) {
		t.Fatal("failures of a closed window counted")
	}
	c.advance(time.Minute - 1) // the window of the last two is still open
	if s := failIP(th, throttleIP, 1); !slices.Equal(s, []metrics.Scope{metrics.ScopeIP}) || !ipBlocked(th, throttleIP) {
		t.Fatalf("3 failures within the window started %v, want [ip] and blocked", s)
	}
	// The same after a backoff, while the key is remembered for doubling.
	c.advance(5 * time.Second)
	failIP(th, throttleIP, 2)
	c.advance(time.Minute)
	if s := failIP(th, throttleIP, 2); s != nil || ipBlocked(th, throttleIP) {
		t.Fatal("after a backoff, failures of a closed window counted")
	}
}

// TestThrottleFailuresDuringBackoff: failures the caller reports while a
// key is in backoff neither count nor lengthen it.
func TestThrottleFailuresDuringBackoff(t *testing.T) {
	var c guardClock
	th := newTestThrottle(&c)
	failIP(th, throttleIP, 3)
	c.advance(time.Second)
	if s := failIP(th, throttleIP, 100); s != nil {
		t.Fatalf("a failure during the backoff started %v", s)
	}
	c.advance(4 * time.Second)
	if ipBlocked(th, throttleIP) {
		t.Fatal("failures during the backoff lengthened it")
	}
	if s := failIP(th, throttleIP, 2); s != nil {
		t.Fatal("failures during the backoff counted towards the next")
	}
}

func TestThrottleScopes(t *testing.T) {
	for _, tc := range []struct {
		name            string
		fail            func(th *authThrottle, i int) []metrics.Scope
		ip              netip.Addr
		user            string
		wantIP, wantUsr bool
		started         []metrics.Scope
	}{
		{"one source, many usernames",
			func(th *authThrottle, i int) []metrics.Scope { return th.failed(throttleIP, "u"+strconv.Itoa(i)) },
			throttleIP, "someone-else", true, false, []metrics.Scope{metrics.ScopeIP}},
		{"one username, many sources",
			func(th *authThrottle, i int) []metrics.Scope {
				return th.failed(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), throttleUser)
			},
			netip.MustParseAddr("10.0.0.9"), throttleUser, false, true, []metrics.Scope{metrics.ScopeUser}},
		{"one source, one username",
			func(th *authThrottle, i int) []metrics.Scope { return th.failed(throttleIP, throttleUser) },
			throttleIP, throttleUser, true, true, []metrics.Scope{metrics.ScopeIP, metrics.ScopeUser}},
		{"same IPv6 /64, same IPv4 mapped or not",
			func(th *authThrottle, i int) []metrics.Scope {
				return th.failed([]netip.Addr{netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2::2"),
					netip.MustParseAddr("2001:db8:1:2::3")}[i], "u"+strconv.Itoa(i))
			},
			netip.MustParseAddr("2001:db8:1:2:aaaa::1"), "", true, false, []metrics.Scope{metrics.ScopeIP}},
		{"no username, no user scope",
			func(th *authThrottle, i int) []metrics.Scope {
				return th.failed(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), "")
			},
			netip.MustParseAddr("10.0.0.0"), "", false, false, nil},
		{"invalid address, no source scope",
			func(th *authThrottle, i int) []metrics.Scope { return th.failed(netip.Addr{}, "u"+strconv.Itoa(i)) },
			netip.Addr{}, "u2", false, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c guardClock
			th := newTestThrottle(&c)
			var started []metrics.Scope
			for i := range 3 {
				started = tc.fail(th, i)
			}
			if !slices.Equal(started, tc.started) {
				t.Errorf("started %v, want %v", started, tc.started)
			}
			if ip, user := th.blocked(tc.ip, tc.user); ip != tc.wantIP || user != tc.wantUsr {
				t.Errorf("blocked(%v, %q) = %v, %v; want %v, %v", tc.ip, tc.user, ip, user, tc.wantIP, tc.wantUsr)
			}
			// Neither scope leaks to other keys.
			if ip, user := th.blocked(netip.MustParseAddr("192.0.2.200"), "bob"); ip || user {
				t.Errorf("an unrelated source and username are blocked: %v, %v", ip, user)
			}
		})
	}
	var c guardClock
	th := newTestThrottle(&c)
	failIP(th, netip.MustParseAddr("192.0.2.1"), 3)
	if !ipBlocked(th, netip.MustParseAddr("::ffff:192.0.2.1")) {
		t.Error("an IPv4-mapped address escapes its IPv4 address's backoff")
	}
}

// TestThrottleEviction: a million distinct usernames, and 200k distinct
// sources, one failure each, allocate nothing (the tables are fixed), and
// do not evict backoffs under way.
func TestThrottleEviction(t *testing.T) {
	var c guardClock
	th := newTestThrottle(&c)
	victimIP, victimUser := netip.MustParseAddr("203.0.113.1"), "mallory"
	for range 3 {
		th.failed(victimIP, victimUser)
	}
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	names := make([]string, n)
	for i := range names {
		names[i] = "user-" + strconv.Itoa(i)
	}
	// AllocsPerRun calls the flood twice, a warm-up and the measured run:
	// each floods half.
	done := 0
	allocs := testing.AllocsPerRun(1, func() {
		half := done + n/2
		for ; done < half; done++ {
			ip := netip.Addr{}
			if done%5 == 0 {
				var a [16]byte
				binary.BigEndian.PutUint64(a[:], 0x2001_0db8_0000_0000|uint64(done)) // a /64 each
				ip = netip.AddrFrom16(a)
			}
			th.failed(ip, names[done])
			if done%1000 == 0 {
				c.advance(time.Millisecond) // 1s in all
			}
		}
	})
	if done != n {
		t.Fatalf("flooded %d usernames, want %d", done, n)
	}
	if allocs != 0 {
		t.Errorf("%v allocations over %d new usernames and %d sources, want 0", allocs, n/2, n/10)
	}
	if ip, user := th.blocked(victimIP, victimUser); !ip || !user {
		t.Errorf("after the flood blocked = %v, %v; want both still in backoff", ip, user)
	}
	// The last names are tracked (each table holds 2^16), with their
	// count: two more failures put them in backoff.
	last := names[n-1]
	th.failed(netip.Addr{}, last)
	if s := th.failed(netip.Addr{}, last); !slices.Equal(s, []metrics.Scope{metrics.ScopeUser}) {
		t.Errorf("a recent username lost its count: started %v", s)
	}
}

// TestThrottleEvictsSoonestExpiry fills one set and checks which entry a
// newcomer replaces: a free or expired one first, then the count that
// would expire soonest, and a backoff only when the set holds nothing else.
func TestThrottleEvictsSoonestExpiry(t *testing.T) {
	var c guardClock
	th := newAuthThrottle(3, time.Minute, time.Hour, time.Hour, c.now) // escalation memory 2h
	tb := &th.users
	key := func(i int) uint64 { return uint64(i) } // all in set 0
	now := func() int64 { return th.nanos() }
	present := func(h uint64) bool {
		for _, e := range tb.sets[0].e {
			if e.key == h && (e.count > 0 || e.level > 0) {
				return true
			}
		}
		return false
	}
	for i := range throttleWays {
		tb.failed(th, key(i), now())
		c.advance(time.Second)
	}
	tb.failed(th, key(100), now())
	if present(key(0)) || !present(key(1)) {
		t.Fatal("a full set did not evict its oldest count")
	}
	// Put keys 1..7 and 100 in backoff, one at a time, a second apart.
	backoffs := []uint64{1, 2, 3, 4, 5, 6, 7, 100}
	for _, h := range backoffs {
		tb.failed(th, h, now())
		tb.failed(th, h, now())
		c.advance(time.Second)
	}
	for _, h := range backoffs {
		if !tb.blocked(h, now()) {
			t.Fatalf("key %d not in backoff", h)
		}
	}
	tb.failed(th, key(200), now())
	if present(key(1)) || !tb.blocked(key(2), now()) || !present(key(200)) {
		t.Fatal("a set of backoffs did not make room by evicting the one ending first")
	}
	c.advance(2 * time.Minute) // key 200's count expires
	tb.failed(th, key(300), now())
	if present(key(200)) || !present(key(300)) {
		t.Fatal("a newcomer did not take the expired entry")
	}
	for _, h := range backoffs[1:] {
		if !tb.blocked(h, now()) {
			t.Fatalf("key %d lost its backoff to a newcomer while an expired entry was there", h)
		}
	}
}

func TestThrottleAllocatesNothing(t *testing.T) {
	var c guardClock
	th := newTestThrottle(&c)
	user := "a-long-username-" + string(make([]byte, 480))
	other := netip.MustParseAddr("2001:db8::1")
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"blocked, nothing blocked", func() { th.blocked(throttleIP, user) }},
		{"failed", func() { th.failed(other, user) }},
		{"blocked, in backoff", func() { th.blocked(other, user) }},
		{"blocked, others in backoff", func() { th.blocked(throttleIP, "bob") }},
	} {
		if n := testing.AllocsPerRun(1000, tc.f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", tc.name, n)
		}
	}
	if ip, u := th.blocked(other, user); !ip || !u {
		t.Error("the failures did not start a backoff: the blocked paths went untested")
	}
}

func BenchmarkThrottleBlocked(b *testing.B) {
	user := "1735689600:a-typical-rest-username"
	var fixed guardClock
	for _, bc := range []struct {
		name  string
		now   func() time.Time
		setup func(th *authThrottle)
	}{
		{"idle", time.Now, func(*authThrottle) {}},
		{"others-in-backoff", time.Now, func(th *authThrottle) {
			for i := range 1000 {
				for range 3 {
					th.failed(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), "u"+strconv.Itoa(i))
				}
			}
		}},
		{"in-backoff", time.Now, func(th *authThrottle) {
			for range 3 {
				th.failed(throttleIP, user)
			}
		}},
		{"in-backoff/fixed-clock", fixed.now, func(th *authThrottle) {
			for range 3 {
				th.failed(throttleIP, user)
			}
		}},
	} {
		th := newAuthThrottle(3, time.Minute, time.Hour, time.Hour, bc.now)
		bc.setup(th)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				th.blocked(throttleIP, user)
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					th.blocked(throttleIP, user)
				}
			})
		})
	}
}

func BenchmarkThrottleFailed(b *testing.B) {
	th := newAuthThrottle(10, time.Minute, 5*time.Second, 5*time.Minute, time.Now)
	names := make([]string, 1<<16)
	for i := range names {
		names[i] = "user-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		th.failed(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), names[i&(len(names)-1)])
		i++
	}
}
