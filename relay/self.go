package relay

import (
	"net/netip"
	"sync/atomic"
)

// The node's own addresses as peers.
//
// Two legs of a call relayed by this node reach each other at the node's
// relay (or external) address, so that address must be a permitted peer even
// where the policy refuses its range (a private or loopback relay IP). But
// the same address also carries the node's other services — its HTTP API,
// SSH, the kubelet — which a client must not reach through the relay. So a
// peer on a relay or external address is reachable only on ports that are
// live relay sockets of this node, and a peer on any other local address not
// at all, unless an --allow-peer rule names that exact address (/32, /128).
//
// Every IPv6 form that carries one of the node's IPv4 addresses (mapped,
// compatible, NAT64, 6to4: embeddedIPv4) is the same address here: a packet
// to it can reach the node's IPv4 address through a translator, so it gets
// the verdicts of the plain form, and its ports are the IPv4 relay ports.

// selfAddr is one of the node's own addresses.
type selfAddr struct {
	addr  netip.Addr
	relay bool // a relay or external address: live relay ports are reachable
	open  bool // an exact --allow-peer names it: every port is reachable
}

func (s *Server) addSelf(ip netip.Addr, relay bool) {
	ip = ip.Unmap()
	for i, x := range s.self {
		if x.addr == ip {
			s.self[i].relay = x.relay || relay
			return
		}
	}
	s.self = append(s.self, selfAddr{addr: ip, relay: relay, open: s.cfg.Policy.OperatorAllowsExactly(ip)})
}

// selfLookup finds a among the node's own addresses, as itself or by the
// IPv4 address it carries. It runs per packet and allocates nothing.
func (s *Server) selfLookup(a netip.Addr) (selfAddr, bool) {
	a = a.Unmap() // an IPv4 peer often comes as a 16-byte net.IP
	v4, embedded := embeddedIPv4(a)
	found := -1
	for i := range s.self {
		switch s.self[i].addr {
		case a:
			return s.self[i], true // ::1 is ::1 before it is ::0.0.0.1
		case v4:
			if embedded {
				found = i
			}
		}
	}
	if found < 0 {
		return selfAddr{}, false
	}
	return s.self[found], true
}

// peerAllowed decides a permission (CreatePermission, ChannelBind, Connect):
// the node's relay addresses are allowed (ports are checked per packet),
// its other addresses only when named exactly, anything else by policy.
func (s *Server) peerAllowed(a netip.Addr) bool {
	if x, ok := s.selfLookup(a); ok {
		return x.relay || x.open || s.fleetPeer(a) // ports checked per packet
	}
	if s.fleetPeer(a) {
		return true
	}
	return s.cfg.Policy.AllowedAddr(a)
}

// relayPorts records which ports this node's relay sockets hold, per
// protocol and family, as bitmaps read without locks on the packet path.
// There is one relay IP per family, so a port number identifies a socket.
type relayPorts struct {
	udp4, udp6, tcp4, tcp6 portSet
}

// set returns the bitmap for a network name: udp4, udp6, tcp4 or tcp6.
func (r *relayPorts) set(network string) *portSet {
	switch network {
	case "udp6":
		return &r.udp6
	case "tcp4":
		return &r.tcp4
	case "tcp6":
		return &r.tcp6
	}
	return &r.udp4
}

func (r *relayPorts) live(tcp, v6 bool, port int) bool {
	switch {
	case tcp && v6:
		return r.tcp6.has(port)
	case tcp:
		return r.tcp4.has(port)
	case v6:
		return r.udp6.has(port)
	}
	return r.udp4.has(port)
}

// portSet is a set of ports as 65,536 bits.
type portSet struct {
	bits [1024]atomic.Uint64
}

func (p *portSet) has(port int) bool {
	if port <= 0 || port > 65535 {
		return false
	}
	return p.bits[port>>6].Load()&(1<<(port&63)) != 0
}

// add sets port and reports whether it was unset before.
func (p *portSet) add(port int) bool {
	w := &p.bits[port>>6]
	bit := uint64(1) << (port & 63)
	for {
		old := w.Load()
		if old&bit != 0 {
			return false
		}
		if w.CompareAndSwap(old, old|bit) {
			return true
		}
	}
}

func (p *portSet) remove(port int) {
	w := &p.bits[port>>6]
	bit := uint64(1) << (port & 63)
	for {
		old := w.Load()
		if w.CompareAndSwap(old, old&^bit) {
			return
		}
	}
}
