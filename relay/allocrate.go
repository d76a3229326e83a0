package relay

import (
	"sync"
	"time"
)

// Allocate attempts per user id (Config.UserAllocRate).
//
// --user-quota bounds what one credential holds; this bounds how fast it
// churns: without it one credential can allocate, free and allocate again as
// fast as the node binds sockets, and every attempt costs a bind, a goroutine
// and a table entry.

const (
	// allocBurstSeconds is the burst as seconds' worth of the rate.
	allocBurstSeconds = 5
	// maxUserBuckets bounds the buckets kept at once. A bucket that has
	// refilled is dropped (a missing one is a full one), so only user ids
	// that allocated in the last allocBurstSeconds count against this.
	maxUserBuckets = 65536
	// userBucketSweep is how often full buckets are swept out (a sweep
	// visits every bucket).
	userBucketSweep = time.Minute
)

// allocBucket is one user id's token bucket: tokens are Allocates.
type allocBucket struct {
	tokens float64
	last   time.Time
}

// userRates holds a token bucket per user id. The zero value is ready. It is
// consulted per Allocate, not per packet, so one mutex guards it.
type userRates struct {
	mu        sync.Mutex
	buckets   map[string]*allocBucket
	lastSweep time.Time
}

// allow takes one Allocate from user's bucket, refilled at rate per second
// up to allocBurstSeconds' worth (at least one), and reports whether there
// was one to take.
func (r *userRates) allow(user string, rate float64, now time.Time) bool {
	burst := max(rate*allocBurstSeconds, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buckets == nil {
		r.buckets = map[string]*allocBucket{}
		r.lastSweep = now
	}
	// A full map is swept at most once a second: between sweeps a new user
	// evicts a bucket instead, so no Allocate pays for a sweep each time.
	if since := now.Sub(r.lastSweep); since >= userBucketSweep || len(r.buckets) >= maxUserBuckets && since >= time.Second {
		r.sweep(rate, burst, now)
	}
	b := r.buckets[user]
	if b == nil {
		if len(r.buckets) >= maxUserBuckets {
			// Every bucket is in use: drop one at random (map order) rather
			// than grow. Its user gets a fresh burst, as a new user would.
			for k := range r.buckets {
				delete(r.buckets, k)
				break
			}
		}
		b = &allocBucket{tokens: burst, last: now}
		r.buckets[user] = b
	}
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = min(burst, b.tokens+dt.Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep drops the buckets that have refilled. The caller holds mu.
func (r *userRates) sweep(rate, burst float64, now time.Time) {
	r.lastSweep = now
	for user, b := range r.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*rate >= burst {
			delete(r.buckets, user)
		}
	}
}

// size returns the number of buckets held (for tests).
func (r *userRates) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buckets)
}
