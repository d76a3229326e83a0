package relay_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/offload"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// expiryCall is one pion client with a channel bound to a plain peer
// socket (not an echo: each side sends only when the test says so).
type expiryCall struct {
	tn        *relaytest.Node
	tap       *relaytest.TapConn
	client    *turn.Client
	relayConn net.PacketConn
	peer      *net.UDPConn
}

// kernelPackets is what the kernel path has relayed so far, both ways.
func (c *expiryCall) kernelPackets() float64 {
	return c.tn.Counter("relay_packets", metrics.ClientToPeer, "udp", metrics.PathKernel) +
		c.tn.Counter("relay_packets", metrics.PeerToClient, "udp", metrics.PathKernel)
}

// startExpiryCall starts a relay with the kernel path as mode says
// (on: it must start) and the permission and channel lifetimes given (zero:
// the defaults), and a call on it with ChannelData flowing both ways.
func startExpiryCall(t *testing.T, mode offload.Mode, permission, channel time.Duration) *expiryCall {
	t.Helper()
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "secret1"}, AllowPeer: []string{"127.0.0.1"}, Offload: mode,
		Configure: func(c *relay.Config) { c.PermissionLifetime, c.ChannelLifetime = permission, channel }})
	c := &expiryCall{tn: tn, peer: relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")}
	c.tap = &relaytest.TapConn{PacketConn: relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")}
	c.client = relaytest.NewClient(t, c.tap, tn.Addr(), "alice", "secret1")
	var err error
	if c.relayConn, err = c.client.Allocate(); err != nil {
		t.Fatalf("allocate: %v", err)
	}
	t.Cleanup(func() { _ = c.relayConn.Close() })
	// pion sends the first packets as Send indications while it binds the
	// channel in the background: go on until ChannelData flows both ways.
	for i := 0; c.tap.ChanOut.Load() == 0 || c.tap.ChanIn.Load() == 0; i++ {
		if i == 100 {
			t.Fatal("no ChannelData either way after 100 round trips")
		}
		c.send(t, i)
		c.expectAtPeer(t, i)
		c.peerSend(t, i)
		c.expectAtClient(t, i)
	}
	if mode == offload.On {
		if got := tn.Scrape("supernode_offload_bindings"); got != 1 {
			t.Fatalf("supernode_offload_bindings = %v with the channel bound, want 1", got)
		}
		if c.kernelPackets() == 0 {
			t.Fatal("the kernel relayed nothing while the channel was bound")
		}
	}
	return c
}

func (c *expiryCall) send(t *testing.T, i int) {
	t.Helper()
	if _, err := c.relayConn.WriteTo([]byte(fmt.Sprintf("to peer %d", i)), c.peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
}

func (c *expiryCall) peerSend(t *testing.T, i int) {
	t.Helper()
	if _, err := c.peer.WriteTo([]byte(fmt.Sprintf("to client %d", i)), c.relayConn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
}

func (c *expiryCall) expectAtPeer(t *testing.T, i int) {
	t.Helper()
	buf := make([]byte, 1600)
	_ = c.peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := c.peer.ReadFrom(buf)
	if err != nil || string(buf[:n]) != fmt.Sprintf("to peer %d", i) || from.String() != c.relayConn.LocalAddr().String() {
		t.Fatalf("peer got %q from %v (%v), want %q from the relayed address %v", buf[:n], from, err, fmt.Sprintf("to peer %d", i), c.relayConn.LocalAddr())
	}
}

func (c *expiryCall) expectAtClient(t *testing.T, i int) {
	t.Helper()
	buf := make([]byte, 1600)
	_ = c.relayConn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := c.relayConn.ReadFrom(buf)
	if err != nil || string(buf[:n]) != fmt.Sprintf("to client %d", i) || from.String() != c.peer.LocalAddr().String() {
		t.Fatalf("client got %q from %v (%v), want %q from the peer %v", buf[:n], from, err, fmt.Sprintf("to client %d", i), c.peer.LocalAddr())
	}
}

// nothingAtPeer and nothingAtClient check that nothing arrives within a
// while. They are the weaker half of each check: callers first wait for
// a counter that proves the node handled (and dropped) the packets.
func (c *expiryCall) nothingAtPeer(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1600)
	_ = c.peer.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, from, err := c.peer.ReadFrom(buf); err == nil {
		t.Fatalf("peer got %q from %v after the data should have stopped", buf[:n], from)
	}
}

func (c *expiryCall) nothingAtClient(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1600)
	_ = c.relayConn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, from, err := c.relayConn.ReadFrom(buf); err == nil {
		t.Fatalf("client got %q from %v after the data should have stopped", buf[:n], from)
	}
}

// TestExpiryStopsData: on both paths, data stops in both directions when
// the permission expires, and at once on Refresh(0); when the channel
// expires its ChannelData stops and the peer's data, still permitted,
// comes as Data indications from user space. The kernel relays nothing
// after any of these.
func TestExpiryStopsData(t *testing.T) {
	for _, mode := range []offload.Mode{offload.On, offload.Off} {
		t.Run("offload-"+string(mode), func(t *testing.T) {
			t.Run("permission", func(t *testing.T) {
				c := startExpiryCall(t, mode, 2*time.Second, time.Hour)
				c.waitExpired(t, mode, "supernode_permissions_active")
				kernel := c.kernelPackets()
				noPerm := c.tn.Counter("dropped", metrics.DropNoPermission)
				for i := range 3 {
					c.send(t, 100+i)
				}
				looptest.Eventually(t, "user space to drop the client's 3 packets for want of a permission", func() bool {
					return c.tn.Counter("dropped", metrics.DropNoPermission) >= noPerm+3
				})
				c.nothingAtPeer(t)
				for i := range 3 {
					c.peerSend(t, 100+i)
				}
				looptest.Eventually(t, "user space to drop the peer's 3 packets for want of a permission", func() bool {
					return c.tn.Counter("dropped", metrics.DropNoPermission) >= noPerm+6
				})
				c.nothingAtClient(t)
				if got := c.kernelPackets(); got != kernel {
					t.Errorf("the kernel relayed %v packets after the permission expired", got-kernel)
				}
			})
			t.Run("channel", func(t *testing.T) {
				c := startExpiryCall(t, mode, time.Hour, 2*time.Second)
				c.waitExpired(t, mode, "supernode_channels_active")
				kernel := c.kernelPackets()
				dataInd := c.tap.DataInd.Load()
				for i := range 3 {
					c.send(t, 200+i) // still as ChannelData: the client has not noticed
				}
				c.nothingAtPeer(t)
				for i := range 3 {
					c.peerSend(t, 200+i)
					c.expectAtClient(t, 200+i)
				}
				if got := c.tap.DataInd.Load() - dataInd; got != 3 {
					t.Errorf("the peer's 3 packets came as %d Data indications, want 3", got)
				}
				if got := c.kernelPackets(); got != kernel {
					t.Errorf("the kernel relayed %v packets after the channel expired", got-kernel)
				}
			})
			t.Run("refresh-0", func(t *testing.T) {
				c := startExpiryCall(t, mode, 0, 0)
				kernel := c.kernelPackets()
				if err := c.relayConn.Close(); err != nil { // Refresh, lifetime 0
					t.Fatal(err)
				}
				// pion's Close does not wait for the answer: wait for the
				// node to have handled it. The kernel's state goes with the
				// relay socket, before the allocation is counted as gone.
				looptest.Eventually(t, "the allocation to end", func() bool { return c.tn.Counter("allocations_active", "udp") == 0 })
				if mode == offload.On {
					n, err := c.tn.Offload.MapEntries()
					if err != nil {
						t.Fatal(err)
					}
					for name, v := range n {
						if v != 0 && name != "counters" && name != "scratch" {
							t.Errorf("kernel map %s has %d entries right after Refresh(0)", name, v)
						}
					}
				}
				// The client's 5-tuple, the channel it had: raw ChannelData.
				noAlloc := c.tn.Counter("dropped", metrics.DropNoAllocation)
				cd := binary.BigEndian.AppendUint16(nil, 0x4000) // pion binds its first channel as 0x4000
				cd = binary.BigEndian.AppendUint16(cd, 4)
				cd = append(cd, "late"...)
				server, err := net.ResolveUDPAddr("udp4", c.tn.Addr())
				if err != nil {
					t.Fatal(err)
				}
				for range 3 {
					if _, err := c.tap.PacketConn.WriteTo(cd, server); err != nil {
						t.Fatal(err)
					}
				}
				looptest.Eventually(t, "the node to drop 3 ChannelData without an allocation", func() bool {
					return c.tn.Counter("dropped", metrics.DropNoAllocation) >= noAlloc+3
				})
				c.nothingAtPeer(t)
				in := c.tap.ChanIn.Load() + c.tap.DataInd.Load()
				for i := range 3 {
					c.peerSend(t, 300+i)
				}
				time.Sleep(300 * time.Millisecond)
				if got := c.tap.ChanIn.Load() + c.tap.DataInd.Load(); got != in {
					t.Errorf("the client got %d packets from the peer after Refresh(0)", got-in)
				}
				if got := c.kernelPackets(); got != kernel {
					t.Errorf("the kernel relayed %v packets after Refresh(0)", got-kernel)
				}
			})
		})
	}
}

// waitExpired waits for the gauge to fall to 0 by expiry, and then, on the
// kernel path, for the binding to be gone from the kernel too.
func (c *expiryCall) waitExpired(t *testing.T, mode offload.Mode, gauge string) {
	t.Helper()
	looptest.Eventually(t, gauge+" to fall to 0", func() bool { return c.tn.Scrape(gauge) == 0 })
	if mode == offload.On {
		if got := c.tn.Scrape("supernode_offload_bindings"); got != 0 {
			t.Fatalf("supernode_offload_bindings = %v once %s is 0, want 0", got, gauge)
		}
	}
}
