package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
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
		opts := []goleak.Option{ignore, goleak.IgnoreTopFunction("github.com/pion/transport/v5/deadline.(*Deadline).SetDeadline.func1")}
		// goleak's own retries last about two seconds; on this 2-core machine
		// under the full suite, closing DTLS and pion goroutines can take
		// longer. A real leak is still there after ten.
		for deadline := time.Now().Add(10 * time.Second); goleak.Find(opts...) != nil && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
		goleak.VerifyNone(t, opts...)
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

// counter returns the current value of one metric child. labels are its
// label values in order, as metrics constants or as the strings they
// stand for; a value none of metrics' lists holds fails the test.
func (tn *testNode) counter(name string, labels ...any) float64 {
	tn.t.Helper()
	m := tn.n.m
	m.Refresh() // the kernel path's counts, as a scrape would read them
	t := tn.t
	switch name {
	case "relay_bytes", "relay_packets":
		// Both paths unless a path is named.
		series := m.RelayBytes
		if name == "relay_packets" {
			series = m.RelayPackets
		}
		d, tr := label(t, metrics.Directions, labels[0]), label(t, metrics.Transports, labels[1])
		if len(labels) == 3 {
			return testutil.ToFloat64(series.For(d, tr, label(t, metrics.Paths, labels[2])))
		}
		var sum float64
		for _, p := range metrics.Paths {
			if metrics.HasPath(tr, p) {
				sum += testutil.ToFloat64(series.For(d, tr, p))
			}
		}
		return sum
	case "allocations_active":
		return testutil.ToFloat64(m.AllocationsActive.For(label(t, metrics.Transports, labels[0])))
	case "allocations_created":
		return testutil.ToFloat64(m.AllocationsCreated.For(label(t, metrics.Transports, labels[0])))
	case "allocations_deleted":
		return testutil.ToFloat64(m.AllocationsDeleted.For(label(t, metrics.Transports, labels[0])))
	case "dropped":
		return testutil.ToFloat64(m.PacketsDropped.For(label(t, metrics.DropReasons, labels[0])))
	case "requests":
		return testutil.ToFloat64(m.Requests.For(label(t, metrics.Methods, labels[0]), label(t, metrics.Results, labels[1])))
	case "auth_failures":
		return testutil.ToFloat64(m.AuthFailures.For(label(t, metrics.AuthReasons, labels[0])))
	case "quota":
		return testutil.ToFloat64(m.QuotaRejections.For(label(t, metrics.Quotas, labels[0])))
	case "peer_denials":
		return testutil.ToFloat64(m.PeerDenials.For(label(t, metrics.PeerMethods, labels[0])))
	}
	tn.t.Fatalf("unknown metric %q", name)
	return 0
}

// label is the value of all that v is or spells.
func label[T ~string](t *testing.T, all []T, v any) T {
	t.Helper()
	s := fmt.Sprint(v)
	for _, x := range all {
		if string(x) == s {
			return x
		}
	}
	t.Fatalf("label value %q is none of %q", s, all)
	return ""
}

// pionLogs silences pion clients in tests.
var pionLogs = func() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelWarn
	f.Writer = io.Discard
	return f
}()

// mustListenUDP opens a plain UDP socket on loopback (a peer or a client).
func mustListenUDP(t *testing.T, network, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP(network, mustUDPAddr(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func mustUDPAddr(t *testing.T, addr string) *net.UDPAddr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func testutilPanics(tn *testNode) float64 { return testutil.ToFloat64(tn.n.m.HandlerPanics) }

func testutilClosed(tn *testNode, transport, reason string) float64 {
	tn.t.Helper()
	return testutil.ToFloat64(tn.n.m.ConnectionsClosed.For(label(tn.t, metrics.Transports, transport), label(tn.t, metrics.CloseReasons, reason)))
}

func testutilRedirects(tn *testNode) float64 { return testutil.ToFloat64(tn.n.m.Redirects) }
