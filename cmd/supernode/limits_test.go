package main

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
)

// TestMaxBPS checks that --max-bps reaches the relay: a burst of four
// times the token bucket through one allocation is cut, the excess dropped
// and counted, and what passes stays within the bucket's budget. (The
// bucket itself, on an injected clock: relay's TestMaxBPS.)
func TestMaxBPS(t *testing.T) {
	const maxBPS = 80_000 // 10,000 bytes/s; the bucket holds half a second
	tn := startNode(t, "--user", "alice:pw", "--allow-peer", "127.0.0.1", "--max-bps", "80000")
	peer := mustListenUDP(t, "udp4", "127.0.0.1:0")
	c := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), tn.udp, "alice", "pw")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relayConn.Close()
	payload := make([]byte, 1000)
	start := time.Now()
	const sent = 20 // 20 kB at once: four times the bucket, well within a socket buffer
	for range sent {
		if _, err := relayConn.WriteTo(payload, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	looptest.Eventually(t, "all packets accounted for", func() bool {
		return tn.counter("relay_packets", metrics.ClientToPeer, "udp")+tn.counter("dropped", "rate_limit") >= sent
	})
	elapsed := time.Since(start) // the bucket refilled for no longer than this
	passed := tn.counter("relay_bytes", metrics.ClientToPeer, "udp")
	budget := float64(maxBPS)/8*elapsed.Seconds() + float64(maxBPS)/16 + 2000 // rate x time + burst + slack
	if passed > budget {
		t.Fatalf("%v bytes passed in %v, over the %v byte budget", passed, elapsed, budget)
	}
	if passed < 4000 {
		t.Fatalf("only %v bytes passed; the limit should let the burst through", passed)
	}
	if drops := tn.counter("dropped", "rate_limit"); drops == 0 {
		t.Fatalf("dropped{rate_limit} = 0 after %d kB at once; --max-bps did not reach the relay", sent)
	}
}

// TestBindingOnEveryListener sends a STUN Binding request over each
// transport and checks the reflexive address.
func TestBindingOnEveryListener(t *testing.T) {
	cert, key := writeTestCert(t)
	tn := startNode(t, "--user", "alice:pw", "--tls-listen", "127.0.0.1:0", "--dtls-listen", "127.0.0.1:0",
		"--cert", cert, "--key", key)
	udp := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), tn.udp, "alice", "pw")
	if a, err := udp.SendBindingRequest(); err != nil || !strings.HasPrefix(a.String(), "127.0.0.1:") {
		t.Fatalf("udp binding: %v %v", a, err)
	}
	for _, tc := range []struct{ transport, addr string }{{"tcp", tn.udp}, {"tls", tn.tls}, {"dtls", tn.dtls}} {
		c := streamClient(t, tc.transport, tc.addr, "alice", "pw")
		if a, err := c.SendBindingRequest(); err != nil || !strings.HasPrefix(a.String(), "127.0.0.1:") {
			t.Errorf("%s binding: %v %v", tc.transport, a, err)
		}
	}
	if got := tn.counter("requests", "binding", "success"); got != 4 {
		t.Errorf("requests{binding,success} = %v, want 4", got)
	}
}

// TestConnectToDeniedPeer checks that an RFC 6062 Connect to a refused peer
// gets 403 and no TCP connection is attempted.
func TestConnectToDeniedPeer(t *testing.T) {
	tn := startNode(t, "--relay-ip", "127.0.0.3", "--user", "alice:pw")
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
	alloc := allocateTCP(t, tn, "alice", "pw")
	if _, err := alloc.Dial("tcp", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("connect to loopback peer: %v, want 403", err)
	}
	// pion's client asks for a permission before it connects; whichever of
	// the two the node refused is counted.
	if got := tn.counter("peer_denials", "connect") + tn.counter("peer_denials", "create_permission"); got != 1 {
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
	tn := startNode(t, "--user", "alice:pw", "--allow-peer", "127.0.0.1", "--max-bps", "80000")
	c := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), tn.udp, "alice", "pw")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relayConn.Close()
	stranger := mustListenUDP(t, "udp4", "127.0.0.1:0")
	for i := range 100 {
		_, _ = stranger.WriteTo(make([]byte, 1000), relayConn.LocalAddr())
		if i%10 == 9 {
			time.Sleep(2 * time.Millisecond) // stay within the socket's receive buffer
		}
	}
	looptest.Eventually(t, "stranger's packets dropped", func() bool { return tn.counter("dropped", "no_permission") >= 100 })
	if got := tn.counter("relay_packets", metrics.PeerToClient, "udp"); got != 0 {
		t.Fatalf("relay_packets{peer_to_client} = %v for a peer without permission", got)
	}
	if got := tn.counter("dropped", "rate_limit"); got != 0 {
		t.Fatalf("the stranger used up the budget: dropped{rate_limit} = %v", got)
	}
	// A permitted peer still gets its full burst through.
	peer := mustListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)
	if n := exchange(t, relayConn, peer.LocalAddr(), 5); n != 5 {
		t.Fatalf("%d of 5 echoed for the permitted peer", n)
	}
}
