package relay

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"

	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/offload"
)

// kernelState is one UDP allocation's part of the kernel path
// (Config.Offload): the addresses the kernel program matches it by. The
// allocation's channels are in the kernel exactly while they are bound and
// their peer's permission is live; permits calls sync on every change of
// either, under its lock.
type kernelState struct {
	id     uint32
	bound  netip.AddrPort // the relay socket's own address (not the advertised one)
	client netip.AddrPort
	server netip.AddrPort // the listener's address; unspecified for a wildcard listener
	added  bool           // AddAllocation succeeded; nothing is installed before
}

// newKernelState prepares the kernel state of a UDP allocation whose relay
// socket is pc, or returns nil when the kernel path is off.
func (l *listener) newKernelState(pc net.PacketConn) *kernelState {
	if l.srv.cfg.Offload == nil || l.transport != metrics.TransportUDP {
		return nil
	}
	ua, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil
	}
	return &kernelState{id: l.srv.kernelIDs.Add(1), bound: unmapAddrPort(ua.AddrPort())}
}

// kernelStart adds the allocation to the kernel once pion reports it
// created (the client's address is known from then on). A client of
// another family than its relayed address stays in user space: the program
// does not translate between IPv4 and IPv6.
func (s *Server) kernelStart(p *record, client, server net.Addr) {
	k := p.k
	if k == nil {
		return
	}
	c, ok1 := addrPortOf(client)
	sv, ok2 := addrPortOf(server)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ok1 || !ok2 || c.Addr().Is4() != k.bound.Addr().Is4() {
		s.m.OffloadBindFailures.For(metrics.BindFamily).Inc()
		p.k = nil
		return
	}
	k.client, k.server = c, sv
	if err := s.cfg.Offload.AddAllocation(k.id, s.cfg.MaxBPS, maxMessageSize); err != nil {
		s.kernelFailed(err)
		p.k = nil
		return
	}
	k.added = true
	// Channels or permissions pion reported before the allocation itself.
	for n, peer := range p.channels {
		s.kernelSync(p, n, peer)
	}
}

// kernelSync installs or removes channel n (to peer) so that it is in the
// kernel exactly while it is bound and its peer's permission is live.
// Called with p.mu held.
func (s *Server) kernelSync(p *record, n uint16, peer netip.AddrPort) {
	k := p.k
	if k == nil || !k.added || !peer.IsValid() {
		return
	}
	d := s.judgePeer(peer, false)
	b := offload.Binding{Alloc: k.id, Client: k.client, Server: k.server, Relay: k.bound, Peer: peer, Channel: n,
		Fleet: d.crossHost}
	_, bound := p.channels[n]
	_, permitted := p.ips[peer.Addr()]
	// A peer on the node's own addresses (or a fleet member's) is reachable
	// only on live relay ports; user space checks every datagram, so a
	// channel to anything else stays there. (A relay port that closes
	// later keeps its binding until the channel goes: the kernel then
	// sends to a closed port where user space would drop as peer_gone.)
	ok := d.port == portAllowed
	if !bound || !permitted || !ok || p.closed.Load() {
		if s.cfg.Offload.Unbind(b) {
			s.m.OffloadBindings.Dec()
		}
		return
	}
	installed, err := s.cfg.Offload.Bind(b)
	switch {
	case err != nil:
		s.kernelFailed(err)
	case installed:
		s.m.OffloadBindings.Inc()
	}
}

// kernelEnd removes the allocation and whatever it still has from the
// kernel. Called with p.mu held.
func (s *Server) kernelEnd(p *record) {
	k := p.k
	if k == nil || !k.added {
		return
	}
	// What the kernel relayed for it goes with it: keep the count for the
	// session record.
	if st, err := s.cfg.Offload.AllocationStats(k.id); err == nil {
		p.kernelFinal = st
	}
	n := s.cfg.Offload.RemoveAllocation(k.id)
	s.m.OffloadBindings.Sub(float64(n))
	k.added = false
}

// kernelFailed counts a channel left to user space.
func (s *Server) kernelFailed(err error) {
	switch {
	case errors.Is(err, offload.ErrClosed):
		// The node is stopping: the kernel path closed after the relay.
	case errors.Is(err, offload.ErrFull):
		s.m.OffloadBindFailures.For(metrics.BindFull).Inc()
	case errors.Is(err, offload.ErrNoRoute):
		s.m.OffloadBindFailures.For(metrics.BindRoute).Inc()
	case errors.Is(err, offload.ErrUnoffloadable):
		s.m.OffloadBindFailures.For(metrics.BindFamily).Inc()
	default:
		s.m.OffloadBindFailures.For(metrics.BindError).Inc()
		if s.logs.allow(s.log, "", slog.LevelWarn, "kernel path: cannot install a channel") {
			s.log.Warn("kernel path: cannot install a channel", "err", err)
		}
	}
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	return unmapAddrPort(ua.AddrPort()), true
}

func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
