package relay

import (
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Tuning of the unauthenticated-request budget (Config.UnauthRate).
const (
	// budgetSlots is how many per-source buckets the budget keeps, whatever
	// the number of sources: 2^14 slots of 16 bytes, 256 KiB.
	budgetSlots = 1 << 14
	// budgetNodeFactor sizes the node-wide bucket: fifty sources' worth.
	// A flood from spoofed, ever-changing source addresses lands in fresh
	// slots with full buckets, so only this bucket bounds what it makes
	// the node answer (and reflect towards whoever owns those addresses).
	budgetNodeFactor = 50
	// budgetBurst is each bucket's depth in seconds of its rate: twice
	// the rate, as Config.UnauthRate documents.
	budgetBurst = 2 * time.Second
)

// sourceBudget rate-limits requests without MESSAGE-INTEGRITY (Binding,
// first Allocate) per source, plus node-wide. Every source gets a token
// bucket of rate r per second and depth 2r; on top, all of them together
// draw from one bucket of rate 50r and depth 100r. A request passes only
// when both its source's bucket and the node's have a token; one refused
// by either takes nothing from the other.
//
// A source is an IPv4 address (IPv4-mapped IPv6 addresses are unmapped
// first) or an IPv6 /64: a host is commonly given a whole /64 and can pick
// any address in it, so per-address buckets would give it 2^64 budgets.
// The price is that hosts sharing a /64 share a budget.
//
// Memory is fixed: a table of 2^14 buckets, picked by a hash of the
// source keyed with a random seed, so that a sender cannot tell which
// bucket a given victim uses. Sources that hash to the same bucket share
// it, which costs a source nothing unless its bucket-mate sends over
// budget: with k sources sending over budget, an honest source shares with
// one of them with probability about k/2^14, and is then refused with it
// until that source slows down. Remembering an owner per bucket would
// not change that: a newcomer could only take a bucket over once it is
// full again, which is what sharing gives it anyway, and evicting a busy
// owner instead would let a sender reset its own bucket by spraying
// spoofed addresses until one lands on it. A spoofed flood from random
// addresses touches every bucket, so honest sources compete with it; the
// node-wide bucket is what bounds such a flood, and authenticated requests
// are not subject to this budget at all.
//
// Buckets are kept as GCRA (a token bucket expressed as the theoretical
// arrival time of the next request, in nanoseconds since the budget was
// made: the bucket is full when that time has passed), so a slot is an
// int64 and a mutex, and the node-wide bucket one atomic int64.
type sourceBudget struct {
	now      func() time.Time
	epoch    time.Time
	seed     maphash.Seed
	interval int64 // nanoseconds per token of one source
	tol      int64 // how far a source's next arrival may run ahead of now: its depth
	node     atomic.Int64
	nodeIv   int64 // nanoseconds per token of the node
	nodeTol  int64
	slots    [budgetSlots]budgetSlot
}

type budgetSlot struct {
	mu  sync.Mutex
	tat int64 // theoretical arrival time: the bucket is full when tat <= now
}

// newSourceBudget returns a budget of ratePerSec requests per second per
// source with a burst of twice that, and fifty times that node-wide; now
// is its clock. A rate of zero or less (or NaN) returns nil, which allows
// everything.
func newSourceBudget(ratePerSec float64, now func() time.Time) *sourceBudget {
	if !(ratePerSec > 0) {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	b := &sourceBudget{now: now, epoch: now(), seed: maphash.MakeSeed()}
	b.interval, b.tol = gcra(ratePerSec)
	b.nodeIv, b.nodeTol = gcra(ratePerSec * budgetNodeFactor)
	return b
}

// gcra turns a rate per second into the emission interval and the
// tolerance of a bucket two seconds deep (at least one token deep).
func gcra(ratePerSec float64) (interval, tol int64) {
	iv := float64(time.Second) / ratePerSec
	interval = int64(min(max(iv, 1), math.MaxInt64/4))
	return interval, max(int64(budgetBurst), interval)
}

// allow takes a token for one unauthenticated request from ip, and reports
// whether there was one. It is safe for concurrent use and allocates
// nothing.
func (b *sourceBudget) allow(ip netip.Addr) bool {
	if b == nil {
		return true
	}
	s := b.slot(ip)
	now := int64(b.now().Sub(b.epoch))
	s.mu.Lock()
	defer s.mu.Unlock()
	next := max(s.tat, now) + b.interval
	if next-now > b.tol || !b.takeNode(now) {
		return false
	}
	s.tat = next
	return true
}

// slot returns the bucket of ip's source.
func (b *sourceBudget) slot(ip netip.Addr) *budgetSlot {
	k := sourceKey(ip)
	return &b.slots[maphash.Bytes(b.seed, k[:])&(budgetSlots-1)]
}

// takeNode takes a token from the node-wide bucket.
func (b *sourceBudget) takeNode(now int64) bool {
	for {
		tat := b.node.Load()
		next := max(tat, now) + b.nodeIv
		if next-now > b.nodeTol {
			return false // refused on a load alone: a flood does not write the line
		}
		if b.node.CompareAndSwap(tat, next) {
			return true
		}
	}
}

// sourceKey is what a source's budget and backoff are keyed by: the IPv4
// address (unmapped from IPv4-mapped IPv6), or the IPv6 /64. The two
// never collide: a /64 has its low 64 bits zero, an IPv4-mapped address
// has 0xffff in them. An invalid address gets the key of ::/64.
func sourceKey(ip netip.Addr) [16]byte {
	ip = ip.Unmap()
	k := ip.As16()
	if ip.Is6() {
		clear(k[8:])
	}
	return k
}
