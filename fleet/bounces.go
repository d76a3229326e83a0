package fleet

import (
	"net/netip"
	"sync"
	"time"
)

// bounces remembers which clients (username and source address: the two
// legs of a call share a username but not a socket) this node recently sent
// elsewhere, so that a client sent back by a node whose view of the fleet
// differs (during a join, a failure or a drain) is served here instead of
// bouncing. The memory is bounded; the oldest entries go first.
type bounces struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	at    map[redirectKey]time.Time
	order []redirectKey
	now   func() time.Time
}

type redirectKey struct {
	user string
	src  netip.AddrPort
}

func keyOf(user string, src netip.AddrPort) redirectKey {
	return redirectKey{user, netip.AddrPortFrom(src.Addr().Unmap(), src.Port())}
}

// newBounces remembers up to max clients for ttl each; now may be nil
// (time.Now).
func newBounces(ttl time.Duration, max int, now func() time.Time) *bounces {
	if now == nil {
		now = time.Now
	}
	return &bounces{ttl: ttl, max: max, at: map[redirectKey]time.Time{}, now: now}
}

// Seen reports whether user from src was redirected within the ttl.
func (r *bounces) Seen(user string, src netip.AddrPort) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.at[keyOf(user, src)]
	return ok && r.now().Sub(t) < r.ttl
}

// Note records that user from src was redirected now.
func (r *bounces) Note(user string, src netip.AddrPort) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := keyOf(user, src)
	if _, ok := r.at[k]; !ok {
		r.order = append(r.order, k)
	}
	r.at[k] = r.now()
	for len(r.order) > r.max || (len(r.order) > 0 && r.now().Sub(r.at[r.order[0]]) >= r.ttl) {
		delete(r.at, r.order[0])
		r.order = r.order[1:]
	}
}
