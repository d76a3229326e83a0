package relay

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pion/turn/v5"

	"github.com/supernode/supernode/relay/relaytest/ipforms"
)

var verdictNames = map[portVerdict]string{portAllowed: "allowed", portDenied: "denied", portGone: "gone"}

// newSelfServer builds a server whose own addresses are the relay address
// 127.0.0.1 (with one live relay socket, whose port it returns), the relay
// address ::1 and the host's other address 198.51.100.20. The policy allows
// the range around the other address and the NAT64 local-use prefix, so
// that only the own-address rule keeps a client off the other address.
func newSelfServer(t *testing.T, allow ...string) (*Server, int) {
	t.Helper()
	l := newInspectListener(t, false)
	s := l.srv
	p, err := NewPolicy(append([]string{"198.51.100.0/24", "64:ff9b:1::/48"}, allow...), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.Policy = p
	s.records = map[string]*record{}
	s.addrs.advertise4 = s.addrs.relay4
	s.addSelf(s.addrs.relay4, true)
	s.addSelf(netip.MustParseAddr("::1"), true)
	s.addSelf(netip.MustParseAddr("198.51.100.20"), false)
	pc, relay, err := (&generator{l: l}).AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4"})
	if err != nil {
		t.Fatalf("relay socket: %v", err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return s, relay.(*net.UDPAddr).Port
}

// TestSelfAddressForms: every form that carries one of the node's IPv4
// addresses gets the plain form's verdicts, for the permission and for each
// packet. Nothing is sent: the checks are called directly.
func TestSelfAddressForms(t *testing.T) {
	s, live := newSelfServer(t)
	gone := live + 1 // in the relay range, no socket there
	if gone > s.cfg.MaxPort {
		gone = live - 1
	}
	const service = 22 // outside the relay range: one of the node's services
	type want struct {
		permit bool
		ports  map[int]portVerdict
	}
	for _, tc := range []struct {
		name string
		v4   string
		want map[string]want // by form; "" for every form not listed
	}{
		{"relay address", "127.0.0.1", map[string]want{
			"": {true, map[int]portVerdict{live: portAllowed, gone: portGone, service: portDenied}},
		}},
		{"other local address", "198.51.100.20", map[string]want{
			"": {false, map[int]portVerdict{live: portDenied, gone: portDenied, service: portDenied}},
		}},
		{"unrelated public address", "8.8.8.8", map[string]want{
			"":           {true, map[int]portVerdict{live: portAllowed, service: portAllowed}},
			"compatible": {false, map[int]portVerdict{live: portAllowed}}, // ::/96 is denied by default
		}},
		{"unrelated denied address", "169.254.169.254", map[string]want{
			"": {false, map[int]portVerdict{live: portAllowed}}, // the policy refuses it; no per-packet rule
		}},
	} {
		for form, a := range ipforms.V4(netip.MustParseAddr(tc.v4)) {
			w, ok := tc.want[form]
			if !ok {
				w = tc.want[""]
			}
			t.Run(tc.name+"/"+form+"/"+a.String(), func(t *testing.T) {
				if got := s.peerAllowed(a); got != w.permit {
					t.Errorf("peerAllowed(%s) = %v, want %v", a, got, w.permit)
				}
				for port, v := range w.ports {
					if got := verdictOf(s, a.AsSlice(), port); got != v {
						t.Errorf("judgePeer(%s:%d) = %s, want %s", a, port, verdictNames[got], verdictNames[v])
					}
				}
			})
		}
	}
}

// TestSelfAddressExactAllow: an --allow-peer naming the plain address opens
// every form of it, on every port; a range does not (TestSelfAddressForms).
func TestSelfAddressExactAllow(t *testing.T) {
	s, _ := newSelfServer(t, "198.51.100.20")
	for form, a := range ipforms.V4(netip.MustParseAddr("198.51.100.20")) {
		if !s.peerAllowed(a) {
			t.Errorf("%s %s refused despite --allow-peer of the address", form, a)
		}
		if got := verdictOf(s, a.AsSlice(), 22); got != portAllowed {
			t.Errorf("%s %s port 22: %s, want allowed", form, a, verdictNames[got])
		}
	}
}

// TestSelfIPv6LoopbackIsItself: ::1 is the IPv6 relay address, not the
// IPv4-compatible form of 0.0.0.1, so its ports are the IPv6 relay ports.
func TestSelfIPv6LoopbackIsItself(t *testing.T) {
	s, live := newSelfServer(t)
	x, ok := s.selfLookup(netip.MustParseAddr("::1"))
	if !ok || x.addr != netip.MustParseAddr("::1") || !x.relay {
		t.Fatalf("selfLookup(::1) = %+v, %v", x, ok)
	}
	if got := verdictOf(s, net.IPv6loopback, live); got != portGone {
		t.Fatalf("::1 on a port live only for IPv4: %s, want gone", verdictNames[got])
	}
}

// TestFleetMemberForms: a fleet member's IPv4 address in any form is a peer
// only on the member's relay ports, like the plain form.
func TestFleetMemberForms(t *testing.T) {
	s, _ := newSelfServer(t)
	s.SetFleetPeers([]FleetPeer{{Addr: netip.MustParseAddr("203.0.113.50"), MinPort: 40000, MaxPort: 40999}})
	for form, a := range ipforms.V4(netip.MustParseAddr("203.0.113.50")) {
		if !s.peerAllowed(a) {
			t.Errorf("%s %s: fleet member refused", form, a)
		}
		if got := verdictOf(s, a.AsSlice(), 40500); got != portAllowed {
			t.Errorf("%s %s port 40500: %s, want allowed", form, a, verdictNames[got])
		}
		if got := verdictOf(s, a.AsSlice(), 22); got != portDenied {
			t.Errorf("%s %s port 22: %s, want denied", form, a, verdictNames[got])
		}
	}
}

// TestSelfLookupAllocatesNothing: the per-packet own-address check of an
// embedded form allocates nothing.
func TestSelfLookupAllocatesNothing(t *testing.T) {
	s, live := newSelfServer(t)
	s.SetFleetPeers([]FleetPeer{{Addr: netip.MustParseAddr("203.0.113.50"), MinPort: 40000, MaxPort: 40999}})
	for form, a := range ipforms.V4(netip.MustParseAddr("127.0.0.1")) {
		ip := a.AsSlice()
		if n := testing.AllocsPerRun(1000, func() { verdictOf(s, ip, live) }); n != 0 {
			t.Errorf("%s: %v allocations per packet, want 0", form, n)
		}
	}
}

func TestEmbeddedIPv4(t *testing.T) {
	for _, tc := range []struct {
		addr, want string // want "" for none
	}{
		{"192.0.2.1", ""},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"::192.0.2.1", "192.0.2.1"},
		{"::1", "0.0.0.1"},
		{"64:ff9b::192.0.2.1", "192.0.2.1"},
		{"64:ff9b:0:0:1::192.0.2.1", ""}, // outside the /96
		{"64:ff9b:1::192.0.2.1", "192.0.2.1"},
		{"64:ff9b:1:ffff:ffff:ffff:192.0.2.1", "192.0.2.1"},
		{"64:ff9b:2::192.0.2.1", ""}, // outside the /48
		{"2002:c000:201::", "192.0.2.1"},
		{"2002:c000:201:ffff::1", "192.0.2.1"},
		{"2001:db8::192.0.2.1", ""},
		{"fd00::2", ""},
	} {
		got, ok := embeddedIPv4(netip.MustParseAddr(tc.addr))
		if tc.want == "" {
			if ok {
				t.Errorf("embeddedIPv4(%s) = %s, want none", tc.addr, got)
			}
			continue
		}
		if !ok || got != netip.MustParseAddr(tc.want) {
			t.Errorf("embeddedIPv4(%s) = %s, %v, want %s", tc.addr, got, ok, tc.want)
		}
	}
}

// verdictOf is the port verdict of the peer decision for ip:port over UDP.
func verdictOf(s *Server, ip net.IP, port int) portVerdict {
	a, _ := netip.AddrFromSlice(ip)
	return s.judgePeer(netip.AddrPortFrom(a, uint16(port)), false).port //nolint:gosec // a test's port
}
