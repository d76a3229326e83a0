package relay

import (
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/supernode/supernode/metrics"
)

// Tuning of the password-guessing backoff (Config.AuthFailures and after).
const (
	// throttleKeys is how many sources, and how many usernames, the
	// throttle tracks at most: 2^16 each, 32 bytes a key, about 4 MiB in
	// all, allocated up front.
	throttleKeys = 1 << 16
	// throttleWays is how many keys share a set: a key can only live in
	// the set its hash picks, so a lookup reads eight entries under one
	// of 8192 mutexes per scope.
	throttleWays = 8
	throttleSets = throttleKeys / throttleWays
	// throttleMaxLevel caps the count of backoffs in a row; far past any
	// useful doubling (2^61 times the first backoff).
	throttleMaxLevel = 62
)

// What failed reports having started; shared, never to be modified.
var (
	throttleStartedIP   = []metrics.Scope{metrics.ScopeIP}
	throttleStartedUser = []metrics.Scope{metrics.ScopeUser}
	throttleStartedBoth = []metrics.Scope{metrics.ScopeIP, metrics.ScopeUser}
)

// authThrottle slows down password guessing: it counts failed
// MESSAGE-INTEGRITY checks per source and per username, and after limit of
// them within window puts that source or username in backoff, during which
// the caller drops its requests without checking them.
//
//   - Sources are keyed like sourceBudget's: the IPv4 address, or the IPv6
//     /64 (a host that owns a /64 could otherwise guess from 2^64
//     addresses). Usernames are keyed by a 64-bit hash with a random seed;
//     the name itself (attacker-chosen, up to 509 bytes) is not kept.
//   - Counting: a key's window opens at its first failure (or its first
//     after the previous window or backoff ended) and lasts window; the
//     limit-th failure in it starts a backoff and empties the count. The
//     backoff covers [start, start+d): blocked reports the key from the
//     instant of that failure until exactly d later.
//   - Doubling: a backoff whose limit-th failure comes less than the
//     escalation memory after the key's previous backoff ended lasts twice
//     the previous one, capped at backoffMax; otherwise it lasts backoff.
//     The escalation memory is max(2*window, 2*backoffMax), 10m with the
//     defaults: an attacker who waits it out between rounds to start again
//     at the first backoff spends longer waiting than the capped backoff
//     would have made it.
//   - Failures reported while the key is in backoff (the caller let the
//     request through, e.g. a TURN REST username from a blocked source)
//     do not count and do not lengthen it: a backoff's end is known when
//     it starts.
//   - Success clears nothing, for either scope. Not for a source, since an
//     attacker can interleave checks with a valid credential of its own.
//   - Not for a username either: the user's own clients pass a check on
//     every authenticated request, so clearing on success would hand an
//     attacker guessing that username a fresh count every few seconds
//     while the user is active, i.e. no limit at all. The cost is that a
//     user's own misconfigured client (a stale password) puts that
//     username in backoff for its other clients too, as can anyone who
//     knows a static username and fails on purpose; the caller applies
//     the user scope, and sees it in supernode_auth_backoffs_total.
//   - An empty username has no user scope, an invalid address no source
//     scope.
//
// Memory is bounded: each scope is a table of 2^16 entries in sets of 8
// picked by a keyed hash. A new key takes a free or expired entry of its
// set; in a full set it evicts the entry that would expire soonest (a count
// expires window after it began, a backoff the escalation memory after it
// ends). An entry in backoff outlives any count, so a flood of fresh keys
// (1e6 usernames, say) evicts counts, oldest first, before it evicts a
// backoff, and evicts a backoff only when all 8 entries of its set are in
// one; a flood can, however, cost a key its partial count or its
// escalation memory.
type authThrottle struct {
	now    func() time.Time
	epoch  time.Time
	limit  uint32
	window int64 // nanoseconds, like every time below
	first  int64 // the first backoff
	most   int64 // backoffMax
	memory int64 // escalation memory
	ips    throttleTable
	users  throttleTable
}

type throttleTable struct {
	seed maphash.Seed
	// until is the end of the latest backoff the table has started, or 0
	// once blocked has seen it pass: while it is 0 blocked does not even
	// read the clock (time.Now costs more than the rest of a check), and
	// once it has passed nothing in the table is blocked.
	until atomic.Int64
	sets  [throttleSets]throttleSet
}

type throttleSet struct {
	mu sync.Mutex
	e  [throttleWays]throttleEntry
}

// throttleEntry is one key's state; count 0 and level 0 is a free entry.
type throttleEntry struct {
	key   uint64
	start int64  // when the current count's window opened
	until int64  // when the last backoff ends or ended
	count uint32 // failures in the current window
	level uint8  // backoffs in a row; the last lasted first<<(level-1), capped
}

// newAuthThrottle returns a throttle that starts a backoff after limit
// failed checks within window, first backoff long and doubling up to
// backoffMax (raised to backoff if below it); now is its clock. A limit or
// backoff of zero or less returns nil, which blocks nothing (Config turns
// AuthFailures 0 into 10 before; negative disables).
func newAuthThrottle(limit int, window, backoff, backoffMax time.Duration, now func() time.Time) *authThrottle {
	if limit <= 0 || backoff <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	backoffMax = max(backoffMax, backoff)
	t := &authThrottle{
		now:    now,
		epoch:  now(),
		limit:  uint32(min(limit, 1<<31)),
		window: int64(max(window, 0)),
		first:  int64(backoff),
		most:   int64(backoffMax),
		memory: int64(max(2*window, 2*backoffMax)),
	}
	t.ips.seed = maphash.MakeSeed()
	t.users.seed = maphash.MakeSeed()
	return t
}

// blocked reports whether requests from ip, and for username, are in
// backoff; the two scopes are separate so that the caller can decide which
// applies to a request. It allocates nothing, and when no backoff is under
// way it reads two atomics and returns.
func (t *authThrottle) blocked(ip netip.Addr, username string) (ipBlocked, userBlocked bool) {
	if t == nil {
		return false, false
	}
	ipUntil, userUntil := t.ips.until.Load(), t.users.until.Load()
	if ipUntil == 0 && userUntil == 0 {
		return false, false
	}
	now := t.nanos()
	if t.ips.active(ipUntil, now) && ip.IsValid() {
		k := sourceKey(ip)
		ipBlocked = t.ips.blocked(maphash.Bytes(t.ips.seed, k[:]), now)
	}
	if t.users.active(userUntil, now) && username != "" {
		userBlocked = t.users.blocked(maphash.String(t.users.seed, username), now)
	}
	return ipBlocked, userBlocked
}

// failed records one failed MESSAGE-INTEGRITY check (wrong password,
// unknown user) of a request from ip for username, and returns the scopes
// whose backoff it started (metrics.ScopeIP, metrics.ScopeUser), for
// counting; the slice is shared and must not be modified.
func (t *authThrottle) failed(ip netip.Addr, username string) (started []metrics.Scope) {
	if t == nil {
		return nil
	}
	now := t.nanos()
	var byIP, byUser bool
	if ip.IsValid() {
		k := sourceKey(ip)
		byIP = t.ips.failed(t, maphash.Bytes(t.ips.seed, k[:]), now)
	}
	if username != "" {
		byUser = t.users.failed(t, maphash.String(t.users.seed, username), now)
	}
	switch {
	case byIP && byUser:
		return throttleStartedBoth
	case byIP:
		return throttleStartedIP
	case byUser:
		return throttleStartedUser
	}
	return nil
}

func (t *authThrottle) nanos() int64 { return int64(t.now().Sub(t.epoch)) }

// backoffAt is how long the level-th backoff in a row lasts.
func (t *authThrottle) backoffAt(level uint8) int64 {
	d := t.first
	for i := uint8(1); i < level && d < t.most; i++ {
		d *= 2
	}
	return min(d, t.most)
}

// expiry is when e stops mattering: its count's window has closed and its
// escalation memory has lapsed.
func (t *authThrottle) expiry(e *throttleEntry) int64 {
	var end int64
	if e.count > 0 {
		end = e.start + t.window
	}
	if e.level > 0 {
		end = max(end, e.until+t.memory)
	}
	return end
}

// active reports whether a backoff of the table may be under way, given
// until as loaded; once until has passed it clears it, unless a new
// backoff has raised it meanwhile (failed raises it with a CAS as well).
func (tb *throttleTable) active(until, now int64) bool {
	if until == 0 {
		return false
	}
	if now >= until {
		tb.until.CompareAndSwap(until, 0)
		return false
	}
	return true
}

func (tb *throttleTable) blocked(h uint64, now int64) bool {
	s := &tb.sets[(h>>32)%throttleSets]
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.e {
		if e := &s.e[i]; e.key == h && (e.count > 0 || e.level > 0) {
			return e.level > 0 && now < e.until
		}
	}
	return false
}

func (tb *throttleTable) failed(t *authThrottle, h uint64, now int64) (started bool) {
	s := &tb.sets[(h>>32)%throttleSets]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.find(t, h, now)
	if e.level > 0 && now < e.until {
		return false // in backoff
	}
	if e.level > 0 && now >= e.until+t.memory {
		e.level = 0
	}
	if e.count == 0 || now-e.start >= t.window {
		e.count, e.start = 0, now
	}
	e.count++
	if e.count < t.limit {
		return false
	}
	e.count = 0
	e.level = min(e.level+1, throttleMaxLevel)
	e.until = now + t.backoffAt(e.level)
	for {
		u := tb.until.Load()
		if u >= e.until || tb.until.CompareAndSwap(u, e.until) {
			return true
		}
	}
}

// find returns h's entry in the set, making one if there is none: in a
// free or expired entry, else in the one that would expire soonest.
func (s *throttleSet) find(t *authThrottle, h uint64, now int64) *throttleEntry {
	var victim *throttleEntry
	var soonest int64
	for i := range s.e {
		e := &s.e[i]
		exp := int64(math.MinInt64) // free
		if e.count > 0 || e.level > 0 {
			exp = t.expiry(e)
			if e.key == h {
				if exp <= now {
					*e = throttleEntry{key: h}
				}
				return e
			}
		}
		if victim == nil || exp < soonest {
			victim, soonest = e, exp
		}
	}
	*victim = throttleEntry{key: h}
	return victim
}
