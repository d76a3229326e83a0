package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

// TestMaxBPS sends far more than MaxBPS allows from a client through a
// relay socket, on the relay's injected clock, and checks that the excess
// is dropped and counted as rate_limit, that what passes stays within the
// token bucket's budget and reaches the peer, and that an idle bucket
// refills to its burst and no further. (cmd/supernode's TestMaxBPS checks
// that --max-bps reaches the relay.)
func TestMaxBPS(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		maxBPS  = 80_000 // 10,000 bytes/s; the bucket holds half a second
		size    = 1000
		sent    = 200 // one every 2 ms: 200 kB in 0.4 s, twenty times the rate
		spacing = 2 * time.Millisecond
	)
	var clock guardClock
	l := newInspectListener(t, false)
	l.srv.cfg.MaxBPS = maxBPS
	l.srv.cfg.Now = clock.now
	relaySock, peerSock := listenLoopback(t), listenLoopback(t)
	peer := peerSock.LocalAddr().(*net.UDPAddr)
	rc := l.wrapRelayPacketConn(relaySock, relaySock.LocalAddr().(*net.UDPAddr).Port, l.srv.newRecord(nil))
	rc.rec.add(netip.MustParseAddr("127.0.0.1"))

	payload := make([]byte, size)
	send := func(n int) {
		t.Helper()
		for range n {
			if _, err := rc.WriteTo(payload, peer); err != nil {
				t.Fatal(err)
			}
			clock.advance(spacing)
		}
	}
	start := clock.now()
	send(sent)
	elapsed := clock.now().Sub(start)

	passed := testutil.ToFloat64(l.c2pBytes)
	drops := testutil.ToFloat64(l.dropRate)
	if got := testutil.ToFloat64(l.c2pPackets) + drops; got != sent {
		t.Fatalf("relayed %v + dropped %v packets, want all %d accounted for", testutil.ToFloat64(l.c2pPackets), drops, sent)
	}
	budget := float64(maxBPS)/8*elapsed.Seconds() + float64(maxBPS)/16 // rate x time + burst
	if passed > budget {
		t.Fatalf("%v bytes passed in %v, over the %v byte budget", passed, elapsed, budget)
	}
	if passed < 4000 {
		t.Fatalf("only %v bytes passed; the limit should let the burst through", passed)
	}
	if drops < sent/2 {
		t.Fatalf("dropped{rate_limit} = %v, want most of %d", drops, sent)
	}
	buf := make([]byte, 2*size)
	for i := range int(passed) / size {
		_ = peerSock.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := peerSock.ReadFrom(buf); err != nil {
			t.Fatalf("the peer got %d of the %v bytes passed: %v", i, passed, err)
		}
	}

	// Idle for a minute: the bucket is full again, not fuller. Its burst
	// (half a second at the rate) passes at once and the next packet not.
	clock.advance(time.Minute)
	before := testutil.ToFloat64(l.c2pPackets)
	for range 6 {
		_, _ = rc.WriteTo(payload, peer)
	}
	if got := testutil.ToFloat64(l.c2pPackets) - before; got != maxBPS/16/size {
		t.Fatalf("%v packets passed from a bucket idle for a minute, want its burst of %d", got, maxBPS/16/size)
	}
	if got := testutil.ToFloat64(l.dropRate); got != drops+1 {
		t.Fatalf("dropped{rate_limit} = %v after the burst, want %v", got, drops+1)
	}
}

// listenLoopback opens a UDP socket on 127.0.0.1, closed when the test ends.
func listenLoopback(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
