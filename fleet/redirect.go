package fleet

import (
	"net"
	"net/netip"

	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/endpoint"
	"github.com/supernode/supernode/relay"
)

// Redirect is relay.Config.Redirect: an Allocate whose credentials name a
// call placed on another live, non-draining member is sent there, unless
// this node sent the same client away recently (views of the fleet differ
// for a moment during changes; serving beats bouncing). Credentials that
// name the call but no node (minted elsewhere) are placed now. A call
// placed here (or nowhere in particular) while this node drains goes to
// the member placement would choose without it: drain, don't drop.
func (f *Fleet) Redirect(user string, src net.Addr, transport string) (relay.Alternate, bool) {
	s := f.state.Load()
	if s == nil || s.c == nil {
		return relay.Alternate{}, false
	}
	call, zone, placed, _, ok := cluster.ParseCallUser(user)
	if !ok {
		return relay.Alternate{}, false
	}
	from := addrPortOf(src)
	if !from.Addr().IsValid() || f.redirected.Seen(user, from) {
		return relay.Alternate{}, false
	}
	owner, ok := f.owner(s, call, zone, placed)
	if !ok {
		return relay.Alternate{}, false
	}
	alt, ok := alternateFor(owner.Meta, transport, from.Addr().Is6())
	if !ok {
		return relay.Alternate{}, false
	}
	f.redirected.Note(user, from)
	f.cfg.Metrics.Redirects.Inc()
	return relay.Alternate{Server: alt, Domain: endpoint.CertName(owner.Meta.Host)}, true
}

// owner is the member an Allocate for call belongs on when that is not
// this node; placed is the member its credentials name ("" for none).
func (f *Fleet) owner(s *state, call, zone, placed string) (cluster.Node, bool) {
	if placed != "" {
		if m, ok := s.c.Member(placed); ok && !m.Self && !m.Meta.Draining {
			return m, true
		}
		// Placed here, or on a member that is gone or draining: served
		// here, unless this node drains.
		return f.elsewhere(s, call, zone)
	}
	if o, out := s.c.Owner(call, zone); out != cluster.NoMember && !o.Self {
		return o, true
	}
	return f.elsewhere(s, call, zone)
}

// elsewhere is where a draining node sends a call it would otherwise
// serve: the member placement picks without it.
func (f *Fleet) elsewhere(s *state, call, zone string) (cluster.Node, bool) {
	if !s.relay.Draining() {
		return cluster.Node{}, false
	}
	o, out := s.c.OwnerExcept(call, zone, s.c.ID())
	return o, out != cluster.NoMember
}

// alternateFor is owner's listener for transport in the client's family
// (RFC 8656 §7.2: ALTERNATE-SERVER of the same family).
func alternateFor(m cluster.Meta, transport string, v6 bool) (netip.AddrPort, bool) {
	base := m.Listen(v6)
	if !base.IsValid() {
		return netip.AddrPort{}, false
	}
	var port uint16
	switch transport {
	case "udp", "tcp":
		return base, true
	case "tls":
		port = m.Ports.TLS
	case "dtls":
		port = m.Ports.DTLS
	}
	if port == 0 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(base.Addr(), port), true
}

// addrPortOf is a client's address, IPv4-mapped IPv6 unmapped.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
