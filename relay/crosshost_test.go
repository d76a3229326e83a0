package relay_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/offload"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// TestSharedRelayIPIsNotCrossHost: fleet members may share a relay IP
// (several nodes on one host, each with its own port range). A call whose
// two legs are allocations of this node on that IP stays on this host:
// neither data path counts its bytes as cross-host. Traffic to a port of
// the other member's range on the same IP is cross-host, on both paths.
func TestSharedRelayIPIsNotCrossHost(t *testing.T) {
	for _, mode := range []offload.Mode{offload.On, offload.Off} {
		t.Run(string(mode), func(t *testing.T) {
			// The other member's "relay port": a socket of ours, outside
			// this node's range.
			var member *net.UDPConn
			for member == nil || member.LocalAddr().(*net.UDPAddr).Port/1000 == 50 {
				member = relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")
			}
			memberPort := member.LocalAddr().(*net.UDPAddr).Port
			tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, AllowPeer: []string{"127.0.0.1"},
				Offload: mode, Configure: func(c *relay.Config) { c.MinPort, c.MaxPort = 50000, 50999 }})
			tn.Server.SetFleetPeers([]relay.FleetPeer{{Addr: netip.MustParseAddr("127.0.0.1"), MinPort: memberPort, MaxPort: memberPort}})

			type leg struct {
				tap   *relaytest.TapConn
				relay net.PacketConn
			}
			legs := make([]leg, 2)
			for i := range legs {
				legs[i].tap = &relaytest.TapConn{PacketConn: relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")}
				c := relaytest.NewClient(t, legs[i].tap, tn.Addr(), "alice", "pw")
				rc, err := c.Allocate()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = rc.Close() })
				legs[i].relay = rc
			}
			// Each leg sends to the other's relayed address until ChannelData
			// flows both ways on both (pion binds channels in the background;
			// a packet sent before the other leg's permission is dropped).
			buf := make([]byte, 1500)
			for i := 0; ; i++ {
				if i == 200 {
					t.Fatal("no ChannelData both ways on both legs after 200 rounds")
				}
				for j, l := range legs {
					other := legs[1-j]
					if _, err := l.relay.WriteTo([]byte(fmt.Sprintf("leg %d says %d", j, i)), other.relay.LocalAddr()); err != nil {
						t.Fatal(err)
					}
					_ = other.relay.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					_, _, _ = other.relay.ReadFrom(buf)
				}
				if legs[0].tap.ChanOut.Load() > 0 && legs[0].tap.ChanIn.Load() > 0 && legs[1].tap.ChanOut.Load() > 0 && legs[1].tap.ChanIn.Load() > 0 {
					break
				}
			}
			if mode == offload.On && tn.Counter("relay_packets", metrics.ClientToPeer, "udp", metrics.PathKernel) == 0 {
				t.Fatal("the kernel path relayed nothing of the call")
			}
			for _, d := range []metrics.Direction{metrics.ClientToPeer, metrics.PeerToClient} {
				if got := tn.Counter("cross_host_bytes", d); got != 0 {
					t.Errorf("cross-host bytes %s = %v for a call between two allocations of this node", d, got)
				}
			}

			// The other member's port on the shared IP is another host's.
			for i := 0; tn.Counter("cross_host_bytes", metrics.ClientToPeer) == 0; i++ {
				if i == 200 {
					t.Fatal("traffic to the other member's port not counted as cross-host")
				}
				if _, err := legs[0].relay.WriteTo([]byte("to the member"), member.LocalAddr()); err != nil {
					t.Fatal(err)
				}
				_ = member.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				_, _, _ = member.ReadFrom(buf)
			}
		})
	}
}
