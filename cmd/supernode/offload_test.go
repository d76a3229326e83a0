package main

import (
	"os"
	"strings"
	"testing"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
)

// needOffload starts the node's kernel path or fails: CI runs as root,
// where it must work. SUPERNODE_OFFLOAD_OPTIONAL=1 skips instead (for a
// machine without BPF).
func needOffload(t *testing.T, tn *testNode) {
	t.Helper()
	if tn.n.offload != nil {
		return
	}
	if os.Getenv("SUPERNODE_OFFLOAD_OPTIONAL") == "1" {
		t.Skip("kernel path unavailable here: " + tn.logs.String())
	}
	t.Fatalf("kernel path did not start (run as root, or set SUPERNODE_OFFLOAD_OPTIONAL=1); node log:\n%s", tn.logs.String())
}

// TestOffloadRelaysInKernel proves that a pion client's ChannelData goes
// through the kernel program both ways — the kernel counters move, the
// user-space relay sockets see only the packets sent before the channel
// was bound — and that once the allocation is gone every map is empty.
func TestOffloadRelaysInKernel(t *testing.T) {
	tn := startNode(t, "--user", "alice:secret1", "--allow-peer", "127.0.0.1", "--offload", "on", "--log-level", "info")
	needOffload(t, tn)
	if !strings.Contains(tn.logs.String(), "kernel path on") {
		t.Errorf("the log does not say the kernel path is on:\n%s", tn.logs.String())
	}
	peer := mustListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)
	tap := &tapConn{PacketConn: mustListenUDP(t, "udp4", "127.0.0.1:0")}
	c := newClient(t, tap, tn.udp, "alice", "secret1")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	if n := exchange(t, relayConn, peer.LocalAddr(), 60); n != 60 {
		t.Fatalf("%d of 60 messages came back", n)
	}
	kernelOut := tn.counter("relay_packets", metrics.ClientToPeer, "udp", metrics.PathKernel)
	kernelIn := tn.counter("relay_packets", metrics.PeerToClient, "udp", metrics.PathKernel)
	userOut := tn.counter("relay_packets", metrics.ClientToPeer, "udp", metrics.PathUser)
	userIn := tn.counter("relay_packets", metrics.PeerToClient, "udp", metrics.PathUser)
	t.Logf("client to peer: kernel %v, user %v; peer to client: kernel %v, user %v; client sent %d ChannelData, got %d",
		kernelOut, userOut, kernelIn, userIn, tap.ChanOut.Load(), tap.ChanIn.Load())
	if kernelOut+userOut != 60 || kernelIn+userIn != 60 {
		t.Errorf("relayed %v+%v and %v+%v packets, want 60 each way", kernelOut, userOut, kernelIn, userIn)
	}
	// pion sends the first packets as Send indications while it binds
	// the channel; every ChannelData after that is the kernel's.
	if kernelOut != float64(tap.ChanOut.Load()) || kernelOut < 50 {
		t.Errorf("kernel relayed %v packets to the peer, want every ChannelData the client sent (%d), at least 50", kernelOut, tap.ChanOut.Load())
	}
	// A peer's echo of one of those first packets can reach user space
	// after the channel is bound there and before the kernel binding is
	// installed; user space then frames it as ChannelData too. So every
	// ChannelData the client got came from the kernel, except at most the
	// packets user space relayed.
	if chanIn := float64(tap.ChanIn.Load()); kernelIn > chanIn || kernelIn < chanIn-userIn || kernelIn < 50 {
		t.Errorf("kernel relayed %v packets to the client, user space %v; want between %v and %v (the ChannelData the client got, less user space's), at least 50", kernelIn, userIn, chanIn-userIn, chanIn)
	}
	// /metrics shows the kernel's counts as they are at the scrape.
	if got := scrape(t, tn.http, "supernode_offload_enabled"); got != 1 {
		t.Errorf("supernode_offload_enabled = %v, want 1", got)
	}
	if got := scrape(t, tn.http, "supernode_offload_bindings"); got != 1 {
		t.Errorf("supernode_offload_bindings = %v, want 1", got)
	}
	if got := scrape(t, tn.http, `supernode_relay_packets_total{direction="client_to_peer",path="kernel",transport="udp"}`); got != kernelOut {
		t.Errorf("/metrics kernel client_to_peer packets = %v, want %v", got, kernelOut)
	}

	if err := relayConn.Close(); err != nil { // Refresh with lifetime 0
		t.Fatal(err)
	}
	looptest.Eventually(t, "every kernel map empty after the allocation ended", func() bool {
		n, err := tn.n.offload.MapEntries()
		if err != nil {
			t.Fatal(err)
		}
		return n["channels"] == 0 && n["peers"] == 0 && n["allocations"] == 0 && n["alloc_counters"] == 0
	})
	if got := scrape(t, tn.http, "supernode_offload_bindings"); got != 0 {
		t.Errorf("supernode_offload_bindings = %v after the allocation ended, want 0", got)
	}
}

// TestOffloadOff: with --offload off nothing is attached, the metric says
// so, and everything is relayed in user space.
func TestOffloadOff(t *testing.T) {
	tn := startNode(t, "--user", "alice:secret1", "--allow-peer", "127.0.0.1", "--offload", "off", "--log-level", "info")
	if tn.n.offload != nil {
		t.Fatal("kernel path started with --offload off")
	}
	if !strings.Contains(tn.logs.String(), "kernel path off (--offload off)") {
		t.Errorf("the log does not say the kernel path is off:\n%s", tn.logs.String())
	}
	peer := mustListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)
	c := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), tn.udp, "alice", "secret1")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	t.Cleanup(func() { _ = relayConn.Close() })
	if n := exchange(t, relayConn, peer.LocalAddr(), 20); n != 20 {
		t.Fatalf("%d of 20 messages came back", n)
	}
	if got := tn.counter("relay_packets", metrics.ClientToPeer, "udp", metrics.PathUser); got != 20 {
		t.Errorf("user-space relay_packets{client_to_peer} = %v, want 20", got)
	}
	if got := tn.counter("relay_packets", metrics.ClientToPeer, "udp", metrics.PathKernel); got != 0 {
		t.Errorf("kernel relay_packets{client_to_peer} = %v with --offload off, want 0", got)
	}
	if got := scrape(t, tn.http, "supernode_offload_enabled"); got != 0 {
		t.Errorf("supernode_offload_enabled = %v with --offload off, want 0", got)
	}
}
