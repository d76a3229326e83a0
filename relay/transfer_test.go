package relay_test

import (
	"testing"
	"time"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay/relaytest"
)

// TestMetricsMoveDuringTransfer: the relay's byte and packet counters and
// the active-allocation gauge move while a call streams, read as /metrics
// serves them.
func TestMetricsMoveDuringTransfer(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, AllowPeer: []string{"127.0.0.1"}})
	peer := relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)
	c := relaytest.NewClient(t, relaytest.ListenUDP(t, "udp4", "127.0.0.1:0"), tn.Addr(), "alice", "pw")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	s := relaytest.StartStreamer(t, relayConn, peer.LocalAddr())
	defer relayConn.Close()

	// Both paths: the first packets go as indications through user
	// space, the rest as ChannelData through the kernel path when it is on.
	paths := func(name, dir string) float64 {
		return tn.Scrape(`supernode_`+name+`{direction="`+dir+`",path="user",transport="udp"}`) +
			tn.Scrape(`supernode_`+name+`{direction="`+dir+`",path="kernel",transport="udp"}`)
	}
	const active = `supernode_allocations_active{transport="udp"}`
	looptest.Eventually(t, "traffic", func() bool { return s.Got.Load() > 5 })
	a1, b1 := paths("relay_bytes_total", "client_to_peer"), paths("relay_bytes_total", "peer_to_client")
	time.Sleep(500 * time.Millisecond)
	a2, b2 := paths("relay_bytes_total", "client_to_peer"), paths("relay_bytes_total", "peer_to_client")
	if tn.Scrape(active) != 1 {
		t.Fatal("allocation not active while streaming")
	}
	if !(a2 > a1 && a1 > 0) || !(b2 > b1 && b1 > 0) {
		t.Fatalf("relay bytes did not grow while the call was live: c2p %v -> %v, p2c %v -> %v", a1, a2, b1, b2)
	}
	s.Finish()
	if got := paths("relay_packets_total", "client_to_peer"); got != float64(s.Sent.Load()) {
		t.Errorf("relay_packets{client_to_peer} = %v, client sent %d", got, s.Sent.Load())
	}
}
