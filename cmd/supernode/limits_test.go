package main

import (
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
