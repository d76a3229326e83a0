//go:build linux

package relay_test

import (
	"errors"
	"io/fs"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/procfs"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// kernelUDPDrops sums the drops column of /proc/net/udp over the sockets
// bound to port.
func kernelUDPDrops(t *testing.T, port int) float64 {
	t.Helper()
	n, _, err := procfs.ReadUDPDrops(port)
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		t.Skipf("no /proc/net/udp: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return float64(n)
}

// TestRcvbufDropsOnMetrics floods a node whose listener has a 4 KiB
// receive buffer with Binding requests, in bounded bursts, and checks that
// /metrics reports the kernel's drops as reason="rcvbuf".
func TestRcvbufDropsOnMetrics(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Rcvbuf: 4096, UDPSockets: 1})
	// The daemon logs a buffer smaller than asked for (its test of that
	// log is cmd/supernode's TestRcvbufCappedIsLogged): 4 KiB is not capped.
	if got, err := relay.RcvbufSize(tn.UDPConns[0]); err != nil || got < 4096 {
		t.Errorf("a 4 KiB buffer was capped: %d, %v", got, err)
	}
	const series = `supernode_packets_dropped_total{reason="rcvbuf"}`
	if v := tn.Scrape(series); v != 0 {
		t.Fatalf("%s = %g before any traffic", series, v)
	}
	to := relaytest.UDPAddr(t, tn.Addr())
	port := to.Port
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	senders := []*net.UDPConn{relaytest.ListenUDP(t, "udp4", "127.0.0.1:0"), relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")}
	// The node reads as fast as it can, so whether a burst overflows 4 KiB
	// depends on the scheduler; at most five bursts of 10,000.
	var kernel float64
	for burst := 0; burst < 5 && kernel == 0; burst++ {
		deadline := time.Now().Add(5 * time.Second)
		for i := range 10000 {
			c := senders[i%2]
			_ = c.SetWriteDeadline(deadline)
			if _, err := c.WriteTo(req, to); err != nil {
				t.Fatal(err)
			}
		}
		// Let the node empty its buffer, then the count stops moving.
		looptest.Eventually(t, "the kernel's drop count to settle", func() bool {
			before := kernelUDPDrops(t, port)
			time.Sleep(100 * time.Millisecond)
			kernel = kernelUDPDrops(t, port)
			return kernel == before
		})
	}
	if kernel == 0 {
		t.Fatal("50,000 datagrams never overflowed a 4 KiB receive buffer")
	}
	if v := tn.Scrape(series); v != kernel {
		t.Errorf("%s = %g, the kernel says %g", series, v, kernel)
	}
	t.Logf("kernel receive-buffer drops: %g", kernel)
}
