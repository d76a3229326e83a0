package relay

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pion/turn/v5"
)

// TestSamePortUDPAndTCPAllocations: a UDP and a TCP allocation on the same
// port number keep separate permission sets and port bitmaps.
func TestSamePortUDPAndTCPAllocations(t *testing.T) {
	l := newInspectListener(t, false)
	l.srv.records = map[string]*record{}
	l.srv.addrs.advertise4 = l.srv.addrs.relay4
	g := &generator{l: l}
	var pc net.PacketConn
	var ln net.Listener
	var udpRelay, tcpRelay net.Addr
	port := onFreePort(t, func(port int) (err error) {
		if pc, udpRelay, err = g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4", RequestedPort: port}); err != nil {
			return err
		}
		if ln, tcpRelay, err = g.AllocateListener(turn.AllocateListenerConfig{Network: "tcp4", RequestedPort: port}); err != nil {
			_ = pc.Close()
		}
		return err
	})
	defer pc.Close()
	peer := net.IPv4(203, 0, 113, 7)
	l.srv.permissionChanged(udpRelay, peer, true)
	rc := pc.(*relayPacketConn)
	if !rc.rec.has(netip.MustParseAddr("203.0.113.7")) {
		t.Fatal("the UDP allocation's permission landed elsewhere")
	}
	_ = ln.Close()
	l.srv.permissionChanged(udpRelay, net.IPv4(203, 0, 113, 8), true)
	if !rc.rec.has(netip.MustParseAddr("203.0.113.8")) {
		t.Fatal("closing the TCP allocation broke the UDP allocation's permissions")
	}
	if !l.srv.ports.udp4.has(port) || l.srv.ports.tcp4.has(port) {
		t.Fatal("port bitmaps wrong after closing the TCP allocation")
	}
	_ = tcpRelay
}

// onFreePort calls try with odd relay port numbers from 50101 on until it
// succeeds, and returns the port; try closes what it opened when it fails.
// Odd: a requested even port is an EVEN-PORT request, which may be served
// on another even port. A port is only busy when another socket on this
// machine holds it, so 100 in a row fail the test.
func onFreePort(t *testing.T, try func(port int) error) int {
	t.Helper()
	var err error
	for port := 50101; port < 50301; port += 2 {
		if err = try(port); err == nil {
			return port
		}
	}
	t.Fatalf("100 relay ports in a row busy, the last: %v", err)
	return 0
}

// TestPortBitmapsPerFamily: closing an IPv4 relay socket does not hide an
// IPv6 one on the same port number.
func TestPortBitmapsPerFamily(t *testing.T) {
	l := newInspectListener(t, false)
	l.srv.records = map[string]*record{}
	l.srv.addrs.relay6 = netip.MustParseAddr("::1")
	l.srv.addrs.advertise4, l.srv.addrs.advertise6 = l.srv.addrs.relay4, l.srv.addrs.relay6
	l.srv.addSelf(l.srv.addrs.relay4, true)
	l.srv.addSelf(l.srv.addrs.relay6, true)
	g := &generator{l: l}
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		_ = c.Close()
	}
	var v4, v6 net.PacketConn
	port := onFreePort(t, func(port int) (err error) {
		if v4, _, err = g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4", RequestedPort: port}); err != nil {
			return err
		}
		if v6, _, err = g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp6", RequestedPort: port}); err != nil {
			_ = v4.Close()
		}
		return err
	})
	defer v6.Close()
	_ = v4.Close()
	if got := verdictOf(l.srv, net.IPv6loopback, port); got != portAllowed {
		t.Fatalf("live IPv6 relay port judged %v after the IPv4 one closed", got)
	}
	if got := verdictOf(l.srv, net.IPv4(127, 0, 0, 1), port); got != portGone {
		t.Fatalf("closed IPv4 relay port judged %v, want gone", got)
	}
}

// TestRelaySocketsCloseOnce: a relay socket or listener closed a second
// time (Server.Close closes them all, and pion closes an allocation's again
// when it deletes it) returns nil rather than the socket's "use of closed
// network connection", which pion would log as an error.
func TestRelaySocketsCloseOnce(t *testing.T) {
	l := newInspectListener(t, false)
	l.srv.records = map[string]*record{}
	l.srv.addrs.advertise4 = l.srv.addrs.relay4
	g := &generator{l: l}
	pc, _, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4"})
	if err != nil {
		t.Fatal(err)
	}
	ln, _, err := g.AllocateListener(turn.AllocateListenerConfig{Network: "tcp4"})
	if err != nil {
		t.Fatal(err)
	}
	udpPort := pc.LocalAddr().(*net.UDPAddr).Port
	tcpPort := ln.Addr().(*net.TCPAddr).Port
	for _, c := range []interface{ Close() error }{pc, ln} {
		if err := c.Close(); err != nil {
			t.Fatalf("first Close: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v, want nil", err)
		}
	}
	if l.srv.ports.udp4.has(udpPort) || l.srv.ports.tcp4.has(tcpPort) {
		t.Fatal("a closed relay port is still live")
	}
}
