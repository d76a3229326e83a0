//go:build linux

package main

import (
	"strconv"
	"strings"
	"testing"
)

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
