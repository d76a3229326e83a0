package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/pion/turn/v5"
	"golang.org/x/sys/unix"

	"github.com/supernode/supernode/metrics"
)

// Errors from relay address generation.
var (
	ErrNoRelayIP      = errors.New("relay: no relay address configured for this address family")
	ErrPortsExhausted = errors.New("relay: no free relay port in --min-port..--max-port")
	ErrSelfPeer       = errors.New("relay: peer is one of this node's own non-relay ports")
)

// addrs maps an address family to the relay and advertised addresses.
type addrs struct {
	relay4, relay6         netip.Addr // bound by relay sockets
	advertise4, advertise6 netip.Addr // put in XOR-RELAYED-ADDRESS
}

// dualStack reports whether both families have a relay IP.
func (a *addrs) dualStack() bool { return a.relay4.IsValid() && a.relay6.IsValid() }

func (a *addrs) forNetwork(network string) (bind, adv netip.Addr, err error) {
	if network == "udp6" || network == "tcp6" {
		bind, adv = a.relay6, a.advertise6
	} else {
		bind, adv = a.relay4, a.advertise4
	}
	if !bind.IsValid() {
		return bind, adv, fmt.Errorf("%w (%s)", ErrNoRelayIP, network)
	}
	return bind, adv, nil
}

// generator implements turn.RelayAddressGenerator for one listener: it opens
// relay sockets on the relay IP on ports taken from the node's pool of free
// relay ports (portpool.go), advertises the external IP, and wraps each
// socket so relayed traffic is counted and rate-limited as it flows.
type generator struct {
	l *listener
}

func (g *generator) Validate() error { return nil }

// reuseControl sets SO_REUSEADDR and SO_REUSEPORT so that RFC 6062 peer
// connections can be dialled from the allocation's relay port.
func reuseControl(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// allocFailed logs, rate-limited, why a relay socket could not be made.
// Pion answers the Allocate with 508 and writes the reason only at its debug
// level, so a node out of relay ports or unable to bind its relay IP would
// otherwise fail every call in silence. A client asking for a family the
// node has no relay IP for, or for a port (requested: EVEN-PORT, a
// reservation), is the client's affair and is not logged here.
func (g *generator) allocFailed(network string, bindIP netip.Addr, requested int, err error) {
	if requested != 0 || errors.Is(err, ErrNoRelayIP) {
		return
	}
	s := g.l.srv
	msg := "cannot open a relay socket: Allocate answered 508 (check --relay-ip)"
	if errors.Is(err, ErrPortsExhausted) {
		msg = "no free relay port: Allocate answered 508 (widen --min-port..--max-port, or lower --user-quota or --total-quota)"
	}
	if s.logs.allow(s.log, "", slog.LevelWarn, msg) {
		s.log.Warn(msg, "network", network, "relay_ip", bindIP.String(), "err", err.Error())
	}
}

func (g *generator) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	bindIP, adv, err := g.l.srv.addrs.forNetwork(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	port, pc, err := g.bindUDP(conf.Network, bindIP, conf.RequestedPort)
	if err != nil {
		g.allocFailed(conf.Network, bindIP, conf.RequestedPort, err)
		return nil, nil, err
	}
	pool := g.l.srv.portPool(conf.Network)
	g.l.srv.ports.set(conf.Network).add(port)
	relay := &net.UDPAddr{IP: adv.AsSlice(), Port: port}
	rec := g.l.srv.newRecord(g.l.newKernelState(pc))
	rc := g.l.wrapRelayPacketConn(pc, port, rec)
	rc.ports, rc.pool, rc.relay = g.l.srv.ports.set(conf.Network), pool, relay
	rec.closer = rc // before the record is shared: Kill and Close read it
	g.l.srv.registerRecord(relay, rec)
	return rc, relay, nil
}

// bindUDP opens a UDP relay socket on bindIP: on a random free port of the
// pool; for an EVEN-PORT (an even requested port) on an even port, with
// the next one reserved; for a RESERVATION-TOKEN (an odd one) on the port
// reserved for it, or on that port if it is free. See reserve.go.
func (g *generator) bindUDP(network string, bindIP netip.Addr, requested int) (int, net.PacketConn, error) {
	s := g.l.srv
	pool := s.portPool(network)
	listen := func(p int) (net.PacketConn, error) {
		return net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bindIP, uint16(p)))) //nolint:gosec
	}
	switch {
	case requested != 0 && requested%2 == 0:
		if port, pc, err := s.bindEven(network, pool, requested, listen); pc != nil || err != nil {
			return port, pc, err
		}
		// No free pair: requested alone, without a reservation, below.
	case requested != 0:
		if pc := s.reserved.claim(network, requested); pc != nil {
			return requested, pc, nil
		}
	}
	var pc net.PacketConn
	port, err := pool.bind(requested, s.now(), func(p int) error {
		c, err := listen(p)
		if err != nil {
			return err
		}
		pc = c
		return nil
	})
	return port, pc, err
}

func (g *generator) AllocateListener(conf turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	bindIP, adv, err := g.l.srv.addrs.forNetwork(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	lc := net.ListenConfig{Control: reuseControl}
	var ln net.Listener
	pool := g.l.srv.portPool(conf.Network)
	port, err := pool.bind(conf.RequestedPort, g.l.srv.now(), func(p int) error {
		// SO_REUSEPORT (needed to dial peers from the relay port) would let
		// the kernel bind a port another allocation listens on and split
		// its incoming peer connections. The pool hands a port to one
		// allocation at a time; the bitmap check is a second guard.
		if !g.l.srv.ports.set(conf.Network).add(p) {
			return errPortHeld
		}
		l, err := lc.Listen(context.Background(), conf.Network, net.JoinHostPort(bindIP.String(), strconv.Itoa(p)))
		if err != nil {
			g.l.srv.ports.set(conf.Network).remove(p)
			return err
		}
		ln = l
		return nil
	})
	if err != nil {
		g.allocFailed(conf.Network, bindIP, conf.RequestedPort, err)
		return nil, nil, err
	}
	relay := &net.TCPAddr{IP: adv.AsSlice(), Port: port}
	rec := g.l.srv.newRecord(nil)
	rl := &relayListener{Listener: ln, l: g.l, port: port, ports: g.l.srv.ports.set(conf.Network), pool: pool,
		relay: relay, rec: rec}
	rec.closer, rec.tcp = rl, true // before the record is shared: Kill and Close read it
	g.l.srv.registerRecord(relay, rec)
	return rl, relay, nil
}

func (g *generator) AllocateConn(conf turn.AllocateConnConfig) (net.Conn, error) {
	bindIP, _, err := g.l.srv.addrs.forNetwork(conf.Network)
	if err != nil {
		return nil, err
	}
	local, ok := conf.LocalAddr.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("relay: relay address %v is not TCP", conf.LocalAddr)
	}
	remote, ok := conf.RemoteAddr.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("relay: peer address %v is not TCP", conf.RemoteAddr)
	}
	if !g.l.srv.tcpPeerAllowed(remote.AddrPort()) {
		g.l.srv.m.PeerDenials.For(metrics.MethodConnect).Inc()
		return nil, ErrSelfPeer
	}
	d := net.Dialer{
		// Bind to the relay IP even when an external IP is advertised.
		LocalAddr: &net.TCPAddr{IP: bindIP.AsSlice(), Port: local.Port},
		Control:   reuseControl,
		Timeout:   g.l.srv.cfg.ConnectTimeout,
	}
	c, err := d.Dial(conf.Network, remote.String())
	if err != nil {
		return nil, err
	}
	return g.l.wrapRelayConn(c, g.l.srv.lookupRecord(conf.LocalAddr)), nil
}
