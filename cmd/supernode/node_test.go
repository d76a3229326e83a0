package main

import (
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// testNode is a supernode started in-process with real sockets on loopback.
type testNode struct {
	t    *testing.T
	n    *node
	sigs chan os.Signal
	done chan error
	udp  string // UDP and TCP listen address
	tls  string
	dtls string
	http string
	logs *looptest.Log // what the node logged
}

// baseArgs are flags every test node gets: loopback only, ephemeral ports.
var baseArgs = []string{
	"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--relay-ip", "127.0.0.1",
	"--udp-sockets", "2", "--realm", "supernode.test", "--log-level", "warn",
}

// startNode runs a node with baseArgs plus args and stops it (with SIGINT)
// when the test ends, then checks that no goroutine leaked.
func startNode(t *testing.T, args ...string) *testNode {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	logs := &looptest.Log{}
	tn := &testNode{t: t, sigs: make(chan os.Signal, 4), done: make(chan error, 1), logs: logs}
	ready := make(chan *node, 1)
	// A flag given by the test replaces the base value (so --relay-ip or
	// --listen can be changed rather than added to).
	given := map[string]bool{}
	for _, a := range args {
		if strings.HasPrefix(a, "--") {
			given[a] = true
		}
	}
	var all []string
	for i := 0; i < len(baseArgs); i += 2 {
		if !given[baseArgs[i]] {
			all = append(all, baseArgs[i], baseArgs[i+1])
		}
	}
	all = append(all, args...)
	// The environment reaches the node only for SUPERNODE_OFFLOAD, so CI can
	// run a set of tests again with the kernel path off.
	env := func(k string) string {
		if k == "SUPERNODE_OFFLOAD" {
			return os.Getenv(k)
		}
		return ""
	}
	go func() { tn.done <- run(all, env, io.Discard, logs, tn.sigs, ready) }()
	select {
	case tn.n = <-ready:
	case err := <-tn.done:
		t.Fatalf("node did not start: %v\n%s", err, logs)
	case <-time.After(10 * time.Second):
		t.Fatal("node did not start in 10s")
	}
	if env("SUPERNODE_OFFLOAD") == "off" && !given["--offload"] && tn.n.offload != nil {
		t.Fatal("SUPERNODE_OFFLOAD=off, yet the node started the kernel path")
	}
	tn.udp = tn.n.listens["udp"][0]
	if l := tn.n.listens["tls"]; len(l) > 0 {
		tn.tls = l[0]
	}
	if l := tn.n.listens["dtls"]; len(l) > 0 {
		tn.dtls = l[0]
	}
	tn.http = tn.n.httpAddr()
	t.Cleanup(func() {
		tn.stop()
		http.DefaultClient.CloseIdleConnections()
		if t.Failed() {
			t.Logf("node log:\n%s", logs)
		}
		relaytest.VerifyNoLeaks(t, ignore)
	})
	return tn
}

// stop ends the node at once (SIGINT) and waits for run to return.
func (tn *testNode) stop() {
	select {
	case tn.sigs <- syscall.SIGINT:
	default:
	}
	select {
	case <-tn.done:
	case <-time.After(10 * time.Second):
		tn.t.Error("node did not stop within 10s of SIGINT")
	}
	tn.done <- nil // make stop idempotent
}

// counter is the current value of one of the node's metrics (see
// relaytest.Counter for the names).
func (tn *testNode) counter(name string, labels ...any) float64 {
	tn.t.Helper()
	return relaytest.Counter(tn.t, tn.n.m, name, labels...)
}

func testutilClosed(tn *testNode, transport, reason string) float64 {
	tn.t.Helper()
	return testutil.ToFloat64(tn.n.m.ConnectionsClosed.For(relaytest.Label(tn.t, metrics.Transports, transport), relaytest.Label(tn.t, metrics.CloseReasons, reason)))
}

func testutilRedirects(tn *testNode) float64 { return testutil.ToFloat64(tn.n.m.Redirects) }

// TestRelaytestHasTheDaemonsDefaults: the relay that relay's own tests start
// (relaytest) has the limits this binary starts with when no flag sets
// them, so a test moved there from here runs against the same relay.
func TestRelaytestHasTheDaemonsDefaults(t *testing.T) {
	o, err := parseOptions(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tn := relaytest.Start(t, relaytest.Options{})
	ro, rc := tn.Options, tn.Config // what relaytest made of empty Options, and the relay it started
	for _, c := range []struct {
		flag      string
		got, want float64
	}{
		{"--user-quota", float64(ro.UserQuota), float64(o.table.UserQuota)},
		{"--total-quota", float64(ro.TotalQuota), float64(o.table.TotalQuota)},
		{"--udp-rcvbuf", float64(ro.Rcvbuf), float64(o.udpRcvbuf)},
		// The relay.Config it started the relay with:
		{"--max-bps", float64(rc.MaxBPS), float64(o.relay.MaxBPS)},
		{"--user-alloc-rate", rc.UserAllocRate, o.relay.UserAllocRate},
		{"--unauth-rate", rc.UnauthRate, o.relay.UnauthRate},
		{"--max-conns-per-ip", float64(rc.MaxConnsPerIP), float64(o.relay.MaxConnsPerIP)},
		{"--max-pending-conns", float64(rc.MaxPendingConns), float64(o.relay.MaxPendingConns)},
		{"--log-sessions", map[bool]float64{true: 1}[rc.LogSessions], map[bool]float64{true: 1}[o.relay.LogSessions]},
		// relay.Config's zero values, which relaytest leaves them at:
		{"--max-permissions", relay.DefaultMaxPermissions, float64(o.relay.MaxPermissions)},
		{"--max-channels", relay.DefaultMaxChannels, float64(o.relay.MaxChannels)},
		{"--auth-failures", 10, float64(authFailures(o.authFailures))},
	} {
		if c.got != c.want {
			t.Errorf("relaytest's %s is %v, the daemon's default %v", c.flag, c.got, c.want)
		}
	}
	// What relaytest leaves at relay.Config's zero value is what this
	// binary sets by default (relay.Config documents each zero value).
	for _, c := range []struct {
		flag      string
		got, want time.Duration
	}{
		{"--allocation-lifetime", o.relay.AllocationLifetime, 10 * time.Minute},
		{"--permission-lifetime", o.relay.PermissionLifetime, 300 * time.Second},
		{"--channel-lifetime", o.relay.ChannelLifetime, 600 * time.Second},
		{"--idle-timeout", o.relay.IdleTimeout, 10 * time.Minute},
		{"--first-message-timeout", o.relay.FirstMessageTimeout, 10 * time.Second},
		{"--auth-timeout", o.relay.AuthTimeout, 30 * time.Second},
		{"--auth-backoff", o.relay.AuthBackoff, 5 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("the daemon's %s is %v by default, relay.Config's zero value %v", c.flag, c.got, c.want)
		}
	}
}
