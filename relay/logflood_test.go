package relay_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// TestLogFlood sends Binding requests that each make pion log an ERROR (an
// unknown comprehension-required attribute; anyone can send one, from any
// spoofed address) and checks that the node writes a handful of those lines,
// counts the rest in supernode_log_lines_suppressed_total, reports them in
// one line when it stops, and keeps answering other clients.
func TestLogFlood(t *testing.T) {
	// Config.UnauthRate 0 (--unauth-rate 0): every one of the flood's Bindings reaches pion (the
	// per-source budget would drop most of them before they could log).
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, Configure: func(c *relay.Config) { c.UnauthRate = 0 }})
	const (
		n        = 2000
		maxLines = 5 // relay's logBurst: lines per message per window
		pionMsg  = "with unknown comprehension-required attributes"
	)
	// 0x0023 is in the comprehension-required range and unknown to pion/stun.
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest,
		stun.RawAttribute{Type: 0x0023, Value: []byte{1, 2, 3, 4}})
	if err != nil {
		t.Fatal(err)
	}
	attacker := relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")
	server := relaytest.UDPAddr(t, tn.Addr())
	before := tn.Counter("requests", "binding", "other_error") // 420 Unknown Attribute
	for i := range n {
		if _, err := attacker.WriteTo(req.Raw, server); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			time.Sleep(2 * time.Millisecond) // keep the kernel's socket buffer from overflowing
		}
	}
	// Each answered request was logged or suppressed first; a busy machine
	// may lose a few datagrams in the kernel.
	looptest.Eventually(t, "the requests answered with 420", func() bool {
		return tn.Counter("requests", "binding", "other_error")-before >= n*3/4
	})
	answered := tn.Counter("requests", "binding", "other_error") - before

	if got := countLines(tn.Logs.String(), pionMsg, "suppressed="); got > maxLines {
		t.Fatalf("%d lines %q logged for %v requests, want at most %d", got, pionMsg, answered, maxLines)
	}
	suppressed := tn.Scrape("supernode_log_lines_suppressed_total")
	if suppressed < answered-maxLines {
		t.Fatalf("supernode_log_lines_suppressed_total %v, want at least %v", suppressed, answered-maxLines)
	}
	t.Logf("%v requests answered, %v lines suppressed, %d bytes logged", answered, suppressed, len(tn.Logs.String()))

	// Still serving others.
	c := relaytest.NewRawClient(t, tn.Addr())
	if code := relaytest.ErrCode(c.RoundTrip(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)); code != 0 {
		t.Fatalf("binding after the flood: code %d", code)
	}
	c.Allocate("alice", "pw")

	// Stopping reports the open window's count in one line, even though the
	// window has not ended. (Requests still queued when /metrics was
	// scraped may have been suppressed since: compare with the final count.)
	tn.Stop()
	sum := countLines(tn.Logs.String(), pionMsg+" from %v: %v", "")
	want := fmt.Sprintf("suppressed=%d", int(testutil.ToFloat64(tn.Metrics.LogSuppressed)))
	if sum != 1 || !strings.Contains(tn.Logs.String(), want) {
		t.Fatalf("want one summary line with %s; log:\n%s", want, tn.Logs)
	}
}

// countLines counts the lines of log that contain substr and not except.
func countLines(log, substr, except string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, substr) && (except == "" || !strings.Contains(l, except)) {
			n++
		}
	}
	return n
}
