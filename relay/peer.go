package relay

import (
	"net/netip"
)

// The peer decision: one call per packet says everything the packet path
// needs to know about the peer at the other end of it.

// portVerdict is what the node's own-address rules (self.go) and the fleet's
// relay ranges (fleet.go) say about a peer's port.
type portVerdict int

const (
	portAllowed portVerdict = iota
	portDenied              // one of the node's own services, or a member's
	portGone                // a relay port whose allocation has ended
)

// peerDecision is the verdict on one peer transport address.
type peerDecision struct {
	port portVerdict
	// crossHost: the peer's address is another fleet member's relay
	// address and the port is not one of this node's own live relay ports
	// (members may share a relay IP), so the bytes count as cross-host
	// traffic, on both data paths.
	crossHost bool
}

// judgePeer decides about the peer ap of one packet (tcp: of an RFC 6062
// connection): whether its port may be reached, and whether it is another
// fleet member. It looks the address up once among the node's own
// addresses and once among the fleet's, and allocates nothing.
//
// On one of the node's relay or external addresses only live relay ports
// of the same protocol are reachable (a port in the relay range whose
// socket has closed is "gone": the other leg hung up a moment ago and its
// last packets still come); on its other addresses nothing, unless an exact
// --allow-peer opens them. A fleet member's address is a peer only on the
// member's relay ports: its permission came from membership, not from the
// policy, and must not open the member's other services.
func (s *Server) judgePeer(ap netip.AddrPort, tcp bool) peerDecision {
	fleet := s.fleet.Load() != nil
	if len(s.self) == 0 && !fleet {
		return peerDecision{}
	}
	a, port := ap.Addr().Unmap(), int(ap.Port())
	if !a.IsValid() {
		return peerDecision{port: portDenied}
	}
	members, member := s.fleetMember(a)
	memberPort := false
	for _, m := range members {
		memberPort = memberPort || (port >= m.MinPort && port <= m.MaxPort)
	}
	x, self := s.selfLookup(a)
	live := self && x.relay && s.ports.live(tcp, x.addr.Is6(), port)
	// A member sharing this node's relay IP: this node's own live ports
	// are not cross-host.
	d := peerDecision{crossHost: member && !live}
	switch {
	case x.open:
	case !self:
		if member && !memberPort {
			d.port = portDenied
		}
	case !x.relay:
		if !memberPort { // else another member on this host
			d.port = portDenied
		}
	case live:
	case memberPort: // another member sharing this relay IP
	case port >= s.cfg.MinPort && port <= s.cfg.MaxPort:
		d.port = portGone
	default:
		d.port = portDenied
	}
	return d
}

// tcpPeerAllowed decides an RFC 6062 Connect to ap (the request, and the
// connection pion then dials): on the node's own addresses only live TCP
// relay ports.
func (s *Server) tcpPeerAllowed(ap netip.AddrPort) bool {
	return s.judgePeer(ap, true).port == portAllowed
}
