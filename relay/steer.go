package relay

import (
	"encoding/binary"
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

type udpGroup struct {
	mu      sync.Mutex
	tokens  map[string]tokenOwner
	steered map[netip.AddrPort]steerEntry
	active  atomic.Int32 // len(tokens) + len(steered), read without the lock
}

type tokenOwner struct {
	c  *clientPacketConn
	at time.Time
}

type steerEntry struct {
	c  *clientPacketConn
	at time.Time
}

func newUDPGroup() *udpGroup {
	return &udpGroup{tokens: map[string]tokenOwner{}, steered: map[netip.AddrPort]steerEntry{}}
}

func (g *udpGroup) updateActiveLocked() {
	g.active.Store(int32(len(g.tokens) + len(g.steered)))
}

func (g *udpGroup) pruneLocked(now time.Time) {
	for t, o := range g.tokens {
		if now.Sub(o.at) > reservationLifetime {
			delete(g.tokens, t)
		}
	}
	for a, e := range g.steered {
		if now.Sub(e.at) > steerIdle && !e.c.l.srv.cfg.Table.Has(e.c.l.key(net.UDPAddrFromAddrPort(a))) {
			delete(g.steered, a)
		}
	}
	g.updateActiveLocked()
}

// noteReservation records the token of an Allocate success response that c
// is sending.
func (g *udpGroup) noteReservation(c *clientPacketConn, b []byte) {
	if len(b) < stunHeaderSize || binary.BigEndian.Uint16(b) != 0x0103 { // Allocate success
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
	g.updateActiveLocked()
	g.mu.Unlock()
}

// steer reports whether the datagram b from addr, received on c, belongs to
// another socket of the group, and if so hands it over.
func (g *udpGroup) steer(c *clientPacketConn, b []byte, addr net.Addr) bool {
	if g.active.Load() == 0 {
		return false
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return false
	}
	ap := ua.AddrPort()
	g.mu.Lock()
	e, ok := g.steered[ap]
	g.mu.Unlock()
	if !ok && len(b) >= stunHeaderSize && binary.BigEndian.Uint16(b) == 0x0003 { // Allocate request
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
	if len(g.steered) >= maxSteerEntries {
		g.updateActiveLocked()
		return steerEntry{}, false
	}
	e := steerEntry{c: o.c, at: now}
	g.steered[ap] = e
	g.updateActiveLocked()
	return e, true
}

// forget ends the steering of a client whose allocation was deleted.
func (g *udpGroup) forget(addr net.Addr) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || g.active.Load() == 0 {
		return
	}
	g.mu.Lock()
	delete(g.steered, ua.AddrPort())
	g.updateActiveLocked()
	g.mu.Unlock()
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
