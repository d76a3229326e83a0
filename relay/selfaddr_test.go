package relay_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/endpoint"
	"github.com/supernode/supernode/relay/relaytest"
	"github.com/supernode/supernode/relay/relaytest/ipforms"
)

// peerAddr6 is an XOR-PEER-ADDRESS written as an IPv6 address (family 2)
// whatever it carries: pion's encoder turns ::ffff:a.b.c.d into family 1.
type peerAddr6 struct {
	ip   netip.Addr
	port int
}

func (p peerAddr6) AddTo(m *stun.Message) error {
	const cookie = 0x2112A442
	var key [16]byte
	binary.BigEndian.PutUint32(key[0:4], cookie)
	copy(key[4:], m.TransactionID[:])
	v := make([]byte, 20)
	v[1] = 0x02
	binary.BigEndian.PutUint16(v[2:4], uint16(p.port)^cookie>>16) //nolint:gosec // a test port
	ip := p.ip.As16()
	for i := range ip {
		v[4+i] = ip[i] ^ key[i]
	}
	m.Add(stun.AttrXORPeerAddress, v)
	return nil
}

// requestIPv6 is REQUESTED-ADDRESS-FAMILY IPv6 (RFC 8656 §18.1).
type requestIPv6 struct{}

func (requestIPv6) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedAddressFamily, []byte{0x02, 0, 0, 0})
	return nil
}

// TestSelfAddressEmbeddedForms: the host's other addresses stay unreachable
// when a client writes them as IPv6 addresses carrying the IPv4 address
// (NAT64, 6to4...), even where the policy allows their range and the NAT64
// local-use prefix; the relay address written that way gets the permission
// its plain form gets. Only permissions are requested on an IPv6
// allocation; no packet is sent to any peer.
func TestSelfAddressEmbeddedForms(t *testing.T) {
	relaytest.NeedIPv6Loopback(t)

	// One of the host's addresses that is not a relay address: the node
	// learns them from endpoint.LocalIPs(). Loopback is the relay's family here, so
	// look for another IPv4 address; a host with none gets the metadata
	// address instead, which the policy must refuse in every form anyway.
	// The policy allows that address's /24, so only the own-address rule
	// stands between a client and the host's services there.
	local := netip.MustParseAddr("169.254.169.254")
	o := relaytest.Options{Listen: []string{"127.0.0.1:0", "[::1]:0"}, RelayIPs: []string{"127.0.0.1", "::1"},
		Users: map[string]string{"alice": "pw"}, AllowPeer: []string{"64:ff9b:1::/48"}}
	for _, ip := range endpoint.LocalIPs() {
		if ip.Is4() && !ip.IsLoopback() {
			local = ip
			o.AllowPeer = append(o.AllowPeer, netip.PrefixFrom(ip, 24).Masked().String())
			break
		}
	}
	t.Logf("non-relay address under test: %s", local)
	tn := relaytest.Start(t, o)
	c := relaytest.NewRawClient(t, tn.Addr())
	resp := c.Do(stun.MethodAllocate, "alice", "pw", relaytest.RequestedTransport(17), requestIPv6{})
	if code := relaytest.ErrCode(resp); code != 0 {
		t.Fatalf("IPv6 allocation: error code %d", code)
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil || !relayed.IP.Equal(net.IPv6loopback) {
		t.Fatalf("relayed address %v (%v), want ::1", relayed.IP, err)
	}

	refused := 0
	for name, a := range ipforms.V4(local) {
		if name == "plain" {
			continue // the IPv4 address itself: this test is about its IPv6 forms
		}
		t.Run("other local address/"+name+"/"+a.String(), func(t *testing.T) {
			if code := relaytest.ErrCode(c.Do(stun.MethodCreatePermission, "alice", "pw", peerAddr6{a, 9})); code != 403 {
				t.Fatalf("CreatePermission %s: code %d, want 403", a, code)
			}
		})
		refused++
	}
	for name, a := range ipforms.V4(netip.MustParseAddr("127.0.0.1")) {
		if name == "plain" || name == "mapped" {
			continue // an IPv4 peer: pion answers 443 on an IPv6 allocation
		}
		t.Run("relay address/"+name+"/"+a.String(), func(t *testing.T) {
			if code := relaytest.ErrCode(c.Do(stun.MethodCreatePermission, "alice", "pw", peerAddr6{a, 9})); code != 0 {
				t.Fatalf("CreatePermission %s: code %d, want success as for 127.0.0.1", a, code)
			}
		})
	}
	if got := tn.Counter("peer_denials", "create_permission"); got != float64(refused) {
		t.Errorf("peer_denials{create_permission} = %v, want %d", got, refused)
	}
}
