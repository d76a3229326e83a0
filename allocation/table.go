// Package allocation keeps the node's in-memory allocation state: the table
// of live allocations with their quotas (Table), and the credentials that
// admit them (Store: long-term users and TURN REST secrets, verified
// without storing anything per credential but, while secrets rotate, a
// bounded cache of which secret matched a username), read from the node's
// flags and files at start and on SIGHUP (Sources). It does not count
// traffic or hold permissions and channels: those are the relay's, in its
// per-allocation record.
package allocation

import (
	"errors"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Quota errors returned by Reserve.
var (
	ErrUserQuota  = errors.New("allocation: per-user allocation quota reached")
	ErrTotalQuota = errors.New("allocation: node allocation quota reached")
)

// pendingTimeout bounds how long a reservation waits for its allocation to
// be created before the slot is given back (the creation failed silently).
const pendingTimeout = 30 * time.Second

// Key identifies an allocation by its 5-tuple: the listener socket that
// received it and the client's source address.
type Key struct {
	Listener int    // index of the listener socket
	Client   string // client transport address, host:port
}

// Entry describes one live allocation.
type Entry struct {
	Key       Key
	UserID    string
	Transport string // client transport: udp, tcp, tls, dtls
	Relay     string // relayed transport address
	Created   time.Time
	// Expires is when the allocation ends unless refreshed (SetExpiry);
	// zero until set.
	Expires time.Time
}

type pending struct {
	user string
	at   time.Time
}

// DefaultUserQuota is the per-user quota the daemon starts with: a browser
// holds one to three allocations per peer connection (one per TURN URL and
// local interface), so 100 covers a 30-way mesh call, while one credential
// can take at most 100 of the 16,384 relay ports of the default range.
const DefaultUserQuota = 100

// TableConfig configures a Table.
type TableConfig struct {
	// UserQuota is the most allocations one user id may hold; 0 is
	// unlimited (DefaultUserQuota is the daemon's default).
	UserQuota int
	// TotalQuota is the most allocations on the node; 0 is unlimited.
	TotalQuota int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Table is the set of live allocations. Quotas hold exactly under
// concurrent Allocates: a slot is reserved atomically before the relay
// socket is opened and either committed or released afterwards.
type Table struct {
	cfg     TableConfig
	mu      sync.Mutex
	live    map[Key]*Entry
	pending map[Key]pending
	perUser map[string]int // live + pending per user id
	// nPending mirrors len(pending) so Release can skip the lock when no
	// Allocate is in flight (it runs for every failed client packet).
	nPending atomic.Int64
}

// NewTable returns an empty table.
func NewTable(cfg TableConfig) *Table {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Table{cfg: cfg, live: make(map[Key]*Entry), pending: make(map[Key]pending), perUser: make(map[string]int)}
}

func (t *Table) dropPendingLocked(k Key) {
	p, ok := t.pending[k]
	if !ok {
		return
	}
	delete(t.pending, k)
	t.nPending.Store(int64(len(t.pending)))
	t.decUserLocked(p.user)
}

func (t *Table) decUserLocked(user string) {
	if t.perUser[user] <= 1 {
		delete(t.perUser, user)
	} else {
		t.perUser[user]--
	}
}

// Reserve takes a slot for an allocation about to be created for user on k.
func (t *Table) Reserve(k Key, user string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	for pk, p := range t.pending {
		if now.Sub(p.at) > pendingTimeout {
			t.dropPendingLocked(pk)
		}
	}
	t.dropPendingLocked(k) // a retried Allocate replaces its own reservation
	if t.cfg.TotalQuota > 0 && len(t.live)+len(t.pending) >= t.cfg.TotalQuota {
		return ErrTotalQuota
	}
	if t.cfg.UserQuota > 0 && t.perUser[user] >= t.cfg.UserQuota {
		return ErrUserQuota
	}
	t.pending[k] = pending{user: user, at: now}
	t.nPending.Store(int64(len(t.pending)))
	t.perUser[user]++
	return nil
}

// HasPending reports whether any reservation is waiting for its allocation.
func (t *Table) HasPending() bool { return t.nPending.Load() > 0 }

// Release gives back a reservation whose allocation was not created.
func (t *Table) Release(k Key) {
	t.mu.Lock()
	t.dropPendingLocked(k)
	t.mu.Unlock()
}

// Commit turns the reservation on k into a live allocation.
func (t *Table) Commit(k Key, user, transport string, relay net.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.pending[k]; ok {
		delete(t.pending, k)
		t.nPending.Store(int64(len(t.pending)))
		if p.user != user { // cannot happen with pion, but keep counts exact
			t.decUserLocked(p.user)
			t.perUser[user]++
		}
	} else {
		t.perUser[user]++
	}
	if old, ok := t.live[k]; ok { // replaced without a delete event
		t.decUserLocked(old.UserID)
	}
	r := ""
	if relay != nil {
		r = relay.String()
	}
	t.live[k] = &Entry{Key: k, UserID: user, Transport: transport, Relay: r, Created: t.cfg.Now()}
}

// SetExpiry records when the allocation on k ends unless refreshed.
func (t *Table) SetExpiry(k Key, at time.Time) {
	t.mu.Lock()
	if e, ok := t.live[k]; ok {
		e.Expires = at
	}
	t.mu.Unlock()
}

// Delete removes the allocation on k and returns it.
func (t *Table) Delete(k Key) (Entry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.live[k]
	if !ok {
		return Entry{}, false
	}
	delete(t.live, k)
	t.decUserLocked(e.UserID)
	return *e, true
}

// Has reports whether k has a live allocation.
func (t *Table) Has(k Key) bool {
	t.mu.Lock()
	_, ok := t.live[k]
	t.mu.Unlock()
	return ok
}

// Owner returns the user id that created the allocation on k.
func (t *Table) Owner(k Key) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.live[k]
	if !ok {
		return "", false
	}
	return e.UserID, true
}

// Count returns the number of live allocations.
func (t *Table) Count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.live)
}

// UserCount returns live plus reserved allocations held by user.
func (t *Table) UserCount(user string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.perUser[user]
}

// List returns a snapshot of live allocations, oldest first.
func (t *Table) List() []Entry {
	t.mu.Lock()
	out := make([]Entry, 0, len(t.live))
	for _, e := range t.live {
		out = append(out, *e)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}
