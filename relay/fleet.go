package relay

import "net/netip"

// SetFleetPeers replaces the relay addresses of the other fleet members.
// Peers there are allowed whatever the peer policy says of their range
// (fleet members may relay to each other on private addresses without
// opening whole private ranges), and the bytes relayed to and from them
// are counted as cross-host traffic.
//
// When members share a host, a member's relay address can also be one of
// this node's own addresses; there only the member's relay port range is
// opened, never the address's other ports.
func (s *Server) SetFleetPeers(peers []FleetPeer) {
	if len(peers) == 0 {
		s.fleet.Store(nil)
		return
	}
	m := make(map[netip.Addr][]FleetPeer, len(peers))
	for _, p := range peers {
		p.Addr = p.Addr.Unmap()
		m[p.Addr] = append(m[p.Addr], p)
	}
	s.fleet.Store(&m)
}

// FleetPeer is another fleet member's relay address and relay port range.
type FleetPeer struct {
	Addr             netip.Addr
	MinPort, MaxPort int
}

// fleetMember returns the fleet members on address a, found as itself or
// by the IPv4 address it carries (embeddedIPv4), like the node's own
// addresses in selfLookup.
func (s *Server) fleetMember(a netip.Addr) ([]FleetPeer, bool) {
	m := s.fleet.Load()
	if m == nil {
		return nil, false
	}
	a = a.Unmap()
	if ps, ok := (*m)[a]; ok {
		return ps, true
	}
	if v4, ok := embeddedIPv4(a); ok {
		ps, ok := (*m)[v4]
		return ps, ok
	}
	return nil, false
}

// fleetPeer reports whether a is another fleet member's relay address.
func (s *Server) fleetPeer(a netip.Addr) bool {
	_, ok := s.fleetMember(a)
	return ok
}
