package relay

import (
	"net"
	"net/netip"
	"sync/atomic"
)

// permits mirrors one allocation's permissions (peer IPs, RFC 8656 §9) so
// the relay socket can discard traffic from peers without a permission
// before it spends --max-bps tokens on it or counts it as relayed. The
// packet path reads it without a lock; writers (pion's permission events)
// are serialised by Server.permMu and replace the slice.
type permits struct {
	ips atomic.Pointer[[]netip.Addr]
}

func (p *permits) has(a netip.Addr) bool {
	ips := p.ips.Load()
	if ips == nil {
		return false
	}
	for _, x := range *ips {
		if x == a {
			return true
		}
	}
	return false
}

func (p *permits) len() int {
	if ips := p.ips.Load(); ips != nil {
		return len(*ips)
	}
	return 0
}

// add reports whether a was new. Callers hold Server.permMu.
func (p *permits) add(a netip.Addr) bool {
	if p.has(a) {
		return false
	}
	var next []netip.Addr
	if ips := p.ips.Load(); ips != nil {
		next = append(next, *ips...)
	}
	next = append(next, a)
	p.ips.Store(&next)
	return true
}

// remove reports whether a was there. Callers hold Server.permMu.
func (p *permits) remove(a netip.Addr) bool {
	ips := p.ips.Load()
	if ips == nil || !p.has(a) {
		return false
	}
	next := make([]netip.Addr, 0, len(*ips)-1)
	for _, x := range *ips {
		if x != a {
			next = append(next, x)
		}
	}
	p.ips.Store(&next)
	return true
}

// permitsKey names a relayed address with its protocol: a UDP and a TCP
// allocation may hold the same port number.
func permitsKey(relay net.Addr) string {
	return relay.Network() + "/" + relay.String()
}

// registerPermits makes the permission set of the allocation whose relayed
// address is relay.
func (s *Server) registerPermits(relay net.Addr) *permits {
	p := &permits{}
	s.permMu.Lock()
	s.perms[permitsKey(relay)] = p
	s.permMu.Unlock()
	return p
}

// unregisterPermits drops an allocation's set when its relay socket closes.
func (s *Server) unregisterPermits(relay net.Addr, p *permits) {
	s.permMu.Lock()
	if s.perms[permitsKey(relay)] == p {
		delete(s.perms, permitsKey(relay))
		s.m.PermissionsActive.Sub(float64(p.len()))
	}
	s.permMu.Unlock()
}

// permissionChanged applies one of pion's permission events. Pion may report
// a deletion twice (timer and Close racing); the set makes the gauge exact.
func (s *Server) permissionChanged(relay net.Addr, peer net.IP, created bool) {
	a, ok := netip.AddrFromSlice(peer)
	if !ok || relay == nil {
		return
	}
	a = a.Unmap()
	s.permMu.Lock()
	defer s.permMu.Unlock()
	p := s.perms[permitsKey(relay)]
	if p == nil {
		return
	}
	switch {
	case created && p.add(a):
		s.m.PermissionsActive.Inc()
	case !created && p.remove(a):
		s.m.PermissionsActive.Dec()
	}
}
