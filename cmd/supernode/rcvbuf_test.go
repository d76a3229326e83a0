//go:build linux

package main

import (
	"errors"
	"io/fs"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/procfs"
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
	tn := startNode(t, "--udp-rcvbuf", "4096", "--udp-sockets", "1")
	if strings.Contains(tn.logs.String(), "smaller than --udp-rcvbuf") {
		t.Errorf("a 4 KiB buffer was logged as capped:\n%s", tn.logs)
	}
	const series = `supernode_packets_dropped_total{reason="rcvbuf"}`
	if v := scrape(t, tn.http, series); v != 0 {
		t.Fatalf("%s = %g before any traffic", series, v)
	}
	to := mustUDPAddr(t, tn.udp)
	port := to.Port
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	senders := []*net.UDPConn{mustListenUDP(t, "udp4", "127.0.0.1:0"), mustListenUDP(t, "udp4", "127.0.0.1:0")}
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
	if v := scrape(t, tn.http, series); v != kernel {
		t.Errorf("%s = %g, the kernel says %g", series, v, kernel)
	}
	t.Logf("kernel receive-buffer drops: %g", kernel)
}

// TestRcvbufCappedIsLogged: a receive buffer smaller than asked is logged
// once at start. Linux caps even SO_RCVBUFFORCE at INT_MAX/2, so asking for
// more is capped whatever the node's capabilities.
func TestRcvbufCappedIsLogged(t *testing.T) {
	for _, tc := range []struct {
		asked  string
		logged bool
	}{
		{"4096", false},
		{strconv.Itoa(1<<31 - 1), true},
	} {
		t.Run(tc.asked, func(t *testing.T) {
			tn := startNode(t, "--udp-rcvbuf", tc.asked, "--log-level", "info", "--listen", "127.0.0.1:0", "--listen", "[::1]:0")
			n := strings.Count(tn.logs.String(), "smaller than --udp-rcvbuf")
			switch {
			case tc.logged && n != 1:
				t.Errorf("logged %d times, want once:\n%s", n, tn.logs)
			case !tc.logged && n != 0:
				t.Errorf("logged %d times, want never:\n%s", n, tn.logs)
			}
		})
	}
}
