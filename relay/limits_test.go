package relay

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/metrics"
)

// xorPeer is an XOR-PEER-ADDRESS. The addresses below are public ones that
// no test sends to: the inspector only decides on permissions.
type xorPeer string

func (p xorPeer) AddTo(m *stun.Message) error {
	a := &stun.XORMappedAddress{IP: net.ParseIP(string(p)), Port: 9}
	return a.AddToAs(m, stun.AttrXORPeerAddress)
}

type channel uint16

func (c channel) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChannelNumber, []byte{byte(c >> 8), byte(c), 0, 0})
	return nil
}

// TestPerAllocationLimits: the inspector refuses a request that would pass
// --max-permissions or --max-channels with 508 and one with too many peer
// addresses with 400, counts each, and lets refreshes of what exists
// through. (The listener allows 3 permissions, 2 channels, 2 peers a
// request.)
func TestPerAllocationLimits(t *testing.T) {
	l := newInspectListener(t, false)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	relayAddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
	l.srv.cfg.Table.Commit(l.key(src), "alice", "udp", relayAddr)
	p := l.srv.registerRecord(relayAddr, l.srv.newRecord(nil))
	l.srv.linkClient(l.key(src), relayAddr, src, relayAddr)
	nonce := testNonces.issue(netip.MustParseAddr("127.0.0.1"))
	try := func(method stun.Method, extra ...stun.Setter) (bool, []int) {
		r := &discardReplier{}
		_, pass := l.inspect(authRequest(t, method, nonce, "pw", extra...), src, r)
		return pass, r.codes
	}
	for _, ip := range []string{"1.1.1.1", "1.0.0.1", "9.9.9.9"} {
		if pass, codes := try(stun.MethodCreatePermission, xorPeer(ip)); !pass {
			t.Fatalf("permission %s under the limit refused: %v", ip, codes)
		}
		l.srv.permissionChanged(relayAddr, net.ParseIP(ip), true) // as pion's event would
	}
	steps := []struct {
		name   string
		method stun.Method
		attrs  []stun.Setter
		code   int // 0: passed to pion
		limit  metrics.Limit
	}{
		{"a fourth peer IP", stun.MethodCreatePermission, []stun.Setter{xorPeer("8.8.8.8")}, 508, metrics.LimitPermissions},
		{"refresh of two existing ones", stun.MethodCreatePermission, []stun.Setter{xorPeer("1.1.1.1"), xorPeer("9.9.9.9")}, 0, ""},
		{"three addresses in one request", stun.MethodCreatePermission, []stun.Setter{xorPeer("1.1.1.1"), xorPeer("1.0.0.1"), xorPeer("9.9.9.9")}, 400, metrics.LimitRequestPeers},
		{"channel to a new peer IP", stun.MethodChannelBind, []stun.Setter{channel(0x4000), xorPeer("8.8.4.4")}, 508, metrics.LimitPermissions},
		{"first channel", stun.MethodChannelBind, []stun.Setter{channel(0x4000), xorPeer("1.1.1.1")}, 0, ""},
	}
	for _, st := range steps {
		before := promToFloat(l.srv.m.LimitRejections.For(metricsOr(st.limit)))
		pass, codes := try(st.method, st.attrs...)
		switch {
		case st.code == 0 && !pass:
			t.Errorf("%s: refused %v", st.name, codes)
		case st.code != 0 && (pass || len(codes) != 1 || codes[0] != st.code):
			t.Errorf("%s: pass=%v codes=%v, want one %d", st.name, pass, codes, st.code)
		case st.limit != "" && promToFloat(l.srv.m.LimitRejections.For(st.limit)) != before+1:
			t.Errorf("%s: limit_rejections_total{limit=%q} did not move", st.name, st.limit)
		}
	}
	l.srv.channelChanged(relayAddr, peerAddr(1), 0x4000, true)
	l.srv.channelChanged(relayAddr, peerAddr(2), 0x4001, true)
	if pass, codes := try(stun.MethodChannelBind, channel(0x4002), xorPeer("1.0.0.1")); pass || len(codes) != 1 || codes[0] != 508 {
		t.Errorf("third channel: pass=%v codes=%v, want one 508", pass, codes)
	}
	if pass, codes := try(stun.MethodChannelBind, channel(0x4001), xorPeer("1.0.0.1")); !pass {
		t.Errorf("refresh of a bound channel refused: %v", codes)
	}
	// Closing gives every entry back: the gauges return to zero.
	for _, ip := range []string{"1.1.1.1", "1.0.0.1", "9.9.9.9"} {
		l.srv.permissionChanged(relayAddr, net.ParseIP(ip), false)
	}
	l.srv.unregisterRecord(relayAddr, p)
	if g, c := promToFloat(l.srv.m.PermissionsActive), promToFloat(l.srv.m.ChannelsActive); g != 0 || c != 0 {
		t.Errorf("after close: permissions_active %v channels_active %v, want 0 0", g, c)
	}
}

func metricsOr(limit metrics.Limit) metrics.Limit {
	if limit == "" {
		return metrics.LimitPermissions
	}
	return limit
}

// BenchmarkPermitsClose measures closing an allocation at the permission
// limit the way pion does it: one deletion event per permission.
func BenchmarkPermitsClose(b *testing.B) {
	l := newInspectListener(b, false)
	relayAddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
	ips := make([]net.IP, DefaultMaxPermissions)
	for i := range ips {
		ips[i] = net.IPv4(11, 0, byte(i>>8), byte(i))
	}
	for b.Loop() {
		p := l.srv.registerRecord(relayAddr, l.srv.newRecord(nil))
		for _, ip := range ips {
			l.srv.permissionChanged(relayAddr, ip, true)
		}
		for _, ip := range ips {
			l.srv.permissionChanged(relayAddr, ip, false)
		}
		l.srv.unregisterRecord(relayAddr, p)
	}
}

// TestChannelNumberRange: a ChannelBind outside 0x4000-0x7FFF gets 400
// (pion would bind it).
func TestChannelNumberRange(t *testing.T) {
	l := newInspectListener(t, false)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	relayAddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50001}
	l.srv.cfg.Table.Commit(l.key(src), "alice", "udp", relayAddr)
	l.srv.registerRecord(relayAddr, l.srv.newRecord(nil))
	l.srv.linkClient(l.key(src), relayAddr, src, relayAddr)
	nonce := testNonces.issue(netip.MustParseAddr("127.0.0.1"))
	for _, tc := range []struct {
		n    uint16
		pass bool
	}{{0x0001, false}, {0x3FFF, false}, {0x4000, true}, {0x7FFF, true}, {0x8000, false}, {0xFFFF, false}} {
		r := &discardReplier{}
		_, pass := l.inspect(authRequest(t, stun.MethodChannelBind, nonce, "pw", channel(tc.n), xorPeer("1.1.1.1")), src, r)
		if pass != tc.pass || (!pass && (r.n != 1 || r.codes[0] != 400)) {
			t.Errorf("channel %#x: pass=%v codes=%v, want pass=%v (else one 400)", tc.n, pass, r.codes, tc.pass)
		}
	}
}

// peerAddr is a documentation-range peer (never sent to).
func peerAddr(i int) net.Addr {
	return &net.UDPAddr{IP: net.IPv4(192, 0, 2, byte(i)), Port: 5000 + i}
}
