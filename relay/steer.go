package relay

import (
	"encoding/binary"
	"maps"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// RFC 8656 reservations across SO_REUSEPORT sockets.
//
// Each UDP socket has its own pion server and so its own allocations and
// reservations, and the kernel picks the socket by hashing the client's
// 5-tuple. A client that reserves a port pair with EVEN-PORT (R bit) and then
// allocates the second port with RESERVATION-TOKEN from another local port
// (coturn's turnutils_uclient does this for RTCP) usually lands on another
// socket, which knows nothing of the token. The group remembers which socket
// issued each token, and from the moment such an Allocate arrives it hands
// every datagram of that client's 5-tuple to the issuing socket, whose
// replies leave from the same address and port.

const (
	attrReservationToken = 0x0022
	reservationLifetime  = 30 * time.Second // pion keeps a reservation this long
	steerIdle            = 2 * time.Minute  // a steer whose allocation never appeared
	maxSteerEntries      = 1 << 16          // bound on tokens and on steered clients
)

// udpGroup is the SO_REUSEPORT sockets sharing one address. Every datagram
// of every socket asks steer whether it belongs to another socket, so that
// question is answered without a lock: the steered clients are an
// immutable map replaced whole (copy on write) when a client is added or
// removed — per reservation claimed, never per packet — and while tokens
// wait to be claimed a datagram costs an atomic load and, for an Allocate
// request only, a look at its attributes.
type udpGroup struct {
	mu      sync.Mutex            // serialises changes to tokens and steered
	tokens  map[string]tokenOwner // guarded by mu
	nTokens atomic.Int32          // len(tokens), read without the lock
	steered atomic.Pointer[steerMap]
}

// steerMap maps a client to the socket that holds its allocation. A map
// that has been stored in udpGroup.steered is never modified.
type steerMap map[netip.AddrPort]steerEntry

type tokenOwner struct {
	c  *clientPacketConn
	at time.Time
}

type steerEntry struct {
	c  *clientPacketConn
	at time.Time
}

func newUDPGroup() *udpGroup {
	return &udpGroup{tokens: map[string]tokenOwner{}}
}

// steeredClients returns the current steered clients, nil when none.
func (g *udpGroup) steeredClients() steerMap {
	if m := g.steered.Load(); m != nil {
		return *m
	}
	return nil
}

// setSteeredLocked publishes m as the steered clients. The caller holds mu
// and does not modify m afterwards.
func (g *udpGroup) setSteeredLocked(m steerMap) {
	if len(m) == 0 {
		g.steered.Store(nil)
		return
	}
	g.steered.Store(&m)
}

func (g *udpGroup) pruneLocked(now time.Time) {
	for t, o := range g.tokens {
		if now.Sub(o.at) > reservationLifetime {
			delete(g.tokens, t)
		}
	}
	g.nTokens.Store(int32(len(g.tokens))) //nolint:gosec // at most maxSteerEntries
	old := g.steeredClients()
	var keep steerMap
	for a, e := range old {
		if now.Sub(e.at) > steerIdle && !e.c.l.srv.cfg.Table.Has(e.c.l.key(net.UDPAddrFromAddrPort(a))) {
			if keep == nil {
				keep = maps.Clone(old)
			}
			delete(keep, a)
		}
	}
	if keep != nil {
		g.setSteeredLocked(keep)
	}
}

// noteReservation records the token of an Allocate success response that c
// is sending (h is its header).
func (g *udpGroup) noteReservation(c *clientPacketConn, b []byte, h outHeader) {
	if h.kind != respAllocated {
		return
	}
	tok, ok := findAttr(b, attrReservationToken)
	if !ok {
		return
	}
	now := time.Now()
	g.mu.Lock()
	g.pruneLocked(now)
	if len(g.tokens) < maxSteerEntries {
		g.tokens[string(tok)] = tokenOwner{c: c, at: now}
	}
	g.nTokens.Store(int32(len(g.tokens))) //nolint:gosec // at most maxSteerEntries
	g.mu.Unlock()
}

// steer reports whether the datagram b from addr, received on c, belongs to
// another socket of the group, and if so hands it over. It takes no lock
// unless b is an Allocate request carrying a token to claim.
func (g *udpGroup) steer(c *clientPacketConn, b []byte, addr net.Addr) bool {
	m := g.steeredClients()
	if m == nil && g.nTokens.Load() == 0 {
		return false
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return false
	}
	ap := ua.AddrPort()
	e, ok := m[ap]
	if !ok && g.nTokens.Load() > 0 && len(b) >= stunHeaderSize && binary.BigEndian.Uint16(b) == 0x0003 { // Allocate request
		e, ok = g.claim(c, b, addr, ap)
	}
	if !ok || e.c == c {
		return false
	}
	e.c.inject(b, addr)
	return true
}

// claim starts steering the client at ap to the socket that issued the
// RESERVATION-TOKEN in the Allocate request b. A token is claimed once, and
// never for a client that already has an allocation on the receiving socket
// (so a spoofed request cannot pull a victim's traffic away from it).
func (g *udpGroup) claim(c *clientPacketConn, b []byte, addr net.Addr, ap netip.AddrPort) (steerEntry, bool) {
	tok, found := findAttr(b, attrReservationToken)
	if !found {
		return steerEntry{}, false
	}
	g.mu.Lock()
	o, known := g.tokens[string(tok)]
	g.mu.Unlock()
	if !known || o.c == c || c.l.srv.cfg.Table.Has(c.l.key(addr)) {
		return steerEntry{}, false
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, still := g.tokens[string(tok)]; !still {
		return steerEntry{}, false // claimed meanwhile
	}
	delete(g.tokens, string(tok))
	g.pruneLocked(now)
	old := g.steeredClients()
	if len(old) >= maxSteerEntries {
		return steerEntry{}, false
	}
	next := make(steerMap, len(old)+1)
	maps.Copy(next, old)
	e := steerEntry{c: o.c, at: now}
	next[ap] = e
	g.setSteeredLocked(next)
	return e, true
}

// forget ends the steering of a client whose allocation was deleted.
func (g *udpGroup) forget(addr net.Addr) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return
	}
	ap := ua.AddrPort()
	if _, steered := g.steeredClients()[ap]; !steered {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.steeredClients()
	if _, steered := old[ap]; steered {
		next := maps.Clone(old)
		delete(next, ap)
		g.setSteeredLocked(next)
	}
}

// findAttr returns the value of the first attribute of type typ in a raw
// STUN message whose header has already been checked.
func findAttr(b []byte, typ uint16) ([]byte, bool) {
	end := stunHeaderSize + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) {
		return nil, false
	}
	for off := stunHeaderSize; off+4 <= end; {
		t := binary.BigEndian.Uint16(b[off:])
		n := int(binary.BigEndian.Uint16(b[off+2:]))
		v := off + 4
		if v+n > end {
			return nil, false
		}
		if t == typ {
			return b[v : v+n], true
		}
		off = v + (n+3)&^3
	}
	return nil, false
}
