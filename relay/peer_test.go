package relay_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// TestPeerPolicy runs against a node whose relay IP is 127.0.0.3, so the
// usual loopback address 127.0.0.1 is not one of the node's own addresses
// and gets no special treatment. No packet is sent to any peer: only
// permissions are requested.
func TestPeerPolicy(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{RelayIPs: []string{"127.0.0.3"}, Users: map[string]string{"alice": "pw"},
		AllowPeer: []string{"198.51.100.0/25"}, DenyPeer: []string{"8.8.8.0/24"}})
	c := relaytest.NewRawClient(t, tn.Addr())
	c.Allocate("alice", "pw")

	denied := []string{
		"127.0.0.1", "::ffff:127.0.0.1", "0.0.0.0", "169.254.169.254", "10.0.0.1", "172.16.5.4",
		"192.168.0.1", "100.64.0.1", "224.0.0.251", "255.255.255.255", "192.0.2.1", "203.0.113.5",
		"198.51.100.200", // documentation range; only the lower /25 is allowed
		"8.8.8.8",        // public, but denied by --deny-peer
	}
	for _, s := range denied {
		ip := net.ParseIP(s)
		t.Run("deny "+s, func(t *testing.T) {
			before := tn.Counter("peer_denials", "create_permission")
			if code := relaytest.ErrCode(c.Do(stun.MethodCreatePermission, "alice", "pw", relaytest.PeerAddr{IP: ip, Port: 9})); code != 403 {
				t.Fatalf("CreatePermission %s: code %d, want 403", s, code)
			}
			if code := relaytest.ErrCode(c.Do(stun.MethodChannelBind, "alice", "pw", relaytest.ChannelNumber(0x4000), relaytest.PeerAddr{IP: ip, Port: 9})); code != 403 {
				t.Fatalf("ChannelBind %s: code %d, want 403", s, code)
			}
			if got := tn.Counter("peer_denials", "create_permission"); got != before+1 {
				t.Fatalf("peer_denials{create_permission} %v -> %v, want +1", before, got)
			}
		})
	}
	if got := tn.Counter("peer_denials", "channel_bind"); got != float64(len(denied)) {
		t.Errorf("peer_denials{channel_bind} = %v, want %d", got, len(denied))
	}
	// The IPv6 forms are refused on an IPv4 allocation too (family mismatch
	// or policy); either way no permission is installed.
	for _, s := range []string{"::1", "::"} {
		if code := relaytest.ErrCode(c.Do(stun.MethodCreatePermission, "alice", "pw", relaytest.PeerAddr{IP: net.ParseIP(s), Port: 9})); code == 0 {
			t.Errorf("CreatePermission %s succeeded", s)
		}
	}

	allowed := []string{"198.51.100.7", "1.1.1.1", "8.8.4.4"}
	for i, s := range allowed {
		if code := relaytest.ErrCode(c.Do(stun.MethodCreatePermission, "alice", "pw", relaytest.PeerAddr{IP: net.ParseIP(s), Port: 9})); code != 0 {
			t.Errorf("CreatePermission %s: code %d, want success", s, code)
		}
		if code := relaytest.ErrCode(c.Do(stun.MethodChannelBind, "alice", "pw", relaytest.ChannelNumber(0x4001+i), relaytest.PeerAddr{IP: net.ParseIP(s), Port: 9})); code != 0 {
			t.Errorf("ChannelBind %s: code %d, want success", s, code)
		}
	}
	// One request naming an allowed and a denied peer is refused whole.
	if code := relaytest.ErrCode(c.Do(stun.MethodCreatePermission, "alice", "pw",
		relaytest.PeerAddr{IP: net.ParseIP("1.1.1.1"), Port: 9}, relaytest.PeerAddr{IP: net.ParseIP("127.0.0.1"), Port: 9})); code != 403 {
		t.Errorf("mixed CreatePermission: code %d, want 403", code)
	}
}

// TestPeerSelfPorts checks that the node's own relay IP is reachable as a
// peer only on relay ports: a client cannot use the relay to reach, say, the
// node's HTTP API on the same address.
func TestPeerSelfPorts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		allow []string
		open  bool
	}{
		{"no rule", nil, false},
		{"a range is not enough", []string{"127.0.0.0/8"}, false},
		{"the exact address opens it", []string{"127.0.0.1"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Relay ports below the kernel's ephemeral range (32768+), so the
			// "service" socket below is never inside the relay range.
			tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, AllowPeer: tc.allow,
				Configure: func(c *relay.Config) { c.MinPort, c.MaxPort = 20000, 20999 }})
			// A "service" on the node's own address that is not a relay socket.
			svc := relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")
			c := relaytest.NewClient(t, relaytest.ListenUDP(t, "udp4", "127.0.0.1:0"), tn.Addr(), "alice", "pw")
			relayConn, err := c.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			defer relayConn.Close()
			for range 5 {
				if _, err := relayConn.WriteTo([]byte("poke"), svc.LocalAddr()); err != nil {
					t.Fatalf("write: %v", err)
				}
			}
			if tc.open {
				looptest.Eventually(t, "packets relayed", func() bool { return tn.Counter("relay_packets", "client_to_peer", "udp") >= 5 })
				return
			}
			looptest.Eventually(t, "self-port drops counted", func() bool { return tn.Counter("dropped", "peer_denied") >= 5 })
			if got := tn.Counter("relay_packets", "client_to_peer", "udp"); got != 0 {
				t.Fatalf("%v packets relayed to a non-relay port on the node's own address", got)
			}
		})
	}
}

// TestTCPRelayPortsExclusive: with one relay port, a second TCP allocation
// must fail rather than share the port (SO_REUSEPORT would let it).
func TestTCPRelayPortsExclusive(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw", "mallory": "pw"},
		Configure: func(c *relay.Config) { c.MinPort, c.MaxPort = 50555, 50555 }})
	alloc := func(user string) error {
		control, err := net.Dial("tcp", tn.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = control.Close() })
		c := relaytest.NewClient(t, turn.NewSTUNConn(control), tn.Addr(), user, "pw")
		a, err := c.AllocateTCP()
		if err == nil {
			t.Cleanup(func() { _ = a.Close() })
		}
		return err
	}
	if err := alloc("alice"); err != nil {
		t.Fatalf("first TCP allocation: %v", err)
	}
	if err := alloc("mallory"); err == nil || !strings.Contains(err.Error(), "508") {
		t.Fatalf("second TCP allocation on the only port: %v, want 508", err)
	}
}

// TestConnectToDeniedPeer checks that an RFC 6062 Connect to a refused peer
// gets 403 and no TCP connection is attempted.
func TestConnectToDeniedPeer(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{RelayIPs: []string{"127.0.0.3"}, Users: map[string]string{"alice": "pw"}})
	ln, err := net.Listen("tcp4", "127.0.0.1:0") // would-be victim
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	alloc := relaytest.AllocateTCP(t, tn.Addr(), "alice", "pw")
	if _, err := alloc.Dial("tcp", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("connect to loopback peer: %v, want 403", err)
	}
	// pion's client asks for a permission before it connects; whichever of
	// the two the node refused is counted.
	if got := tn.Counter("peer_denials", "connect") + tn.Counter("peer_denials", "create_permission"); got != 1 {
		t.Fatalf("peer_denials{connect|create_permission} = %v, want 1", got)
	}
	select {
	case <-accepted:
		t.Fatal("the relay connected to a denied peer")
	case <-time.After(200 * time.Millisecond):
	}
}

// TestUnpermittedPeerTraffic: datagrams from a peer the allocation has no
// permission for are dropped and counted as such, not as relayed traffic,
// and do not use up the allocation's --max-bps budget.
func TestUnpermittedPeerTraffic(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, AllowPeer: []string{"127.0.0.1"},
		Configure: func(c *relay.Config) { c.MaxBPS = 80000 }})
	c := relaytest.NewClient(t, relaytest.ListenUDP(t, "udp4", "127.0.0.1:0"), tn.Addr(), "alice", "pw")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relayConn.Close()
	stranger := relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")
	for i := range 100 {
		_, _ = stranger.WriteTo(make([]byte, 1000), relayConn.LocalAddr())
		if i%10 == 9 {
			time.Sleep(2 * time.Millisecond) // stay within the socket's receive buffer
		}
	}
	looptest.Eventually(t, "stranger's packets dropped", func() bool { return tn.Counter("dropped", "no_permission") >= 100 })
	if got := tn.Counter("relay_packets", metrics.PeerToClient, "udp"); got != 0 {
		t.Fatalf("relay_packets{peer_to_client} = %v for a peer without permission", got)
	}
	if got := tn.Counter("dropped", "rate_limit"); got != 0 {
		t.Fatalf("the stranger used up the budget: dropped{rate_limit} = %v", got)
	}
	// A permitted peer still gets its full burst through.
	peer := relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)
	if n := relaytest.Exchange(t, relayConn, peer.LocalAddr(), 5); n != 5 {
		t.Fatalf("%d of 5 echoed for the permitted peer", n)
	}
}
