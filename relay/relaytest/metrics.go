package relaytest

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/supernode/supernode/metrics"
)

// Counter is the current value of one child of m, named briefly:
// relay_bytes and relay_packets (direction, transport and optionally path;
// without a path, both paths summed), allocations_active,
// allocations_created, allocations_deleted (transport), dropped (reason),
// requests (method, result), auth_failures (reason), quota (which),
// peer_denials (method), connections_closed (transport, reason),
// connections_pending, handler_panics and cross_host_bytes (direction). The kernel path's counts are read first, as a
// scrape would. An unknown name fails t.
func Counter(t testing.TB, m *metrics.Metrics, name string, labels ...any) float64 {
	t.Helper()
	m.Refresh() // the kernel path's counts, as a scrape would read them
	switch name {
	case "relay_bytes", "relay_packets":
		// Both paths unless a path is named.
		series := m.RelayBytes
		if name == "relay_packets" {
			series = m.RelayPackets
		}
		d, tr := Label(t, metrics.Directions, labels[0]), Label(t, metrics.Transports, labels[1])
		if len(labels) == 3 {
			return testutil.ToFloat64(series.For(d, tr, Label(t, metrics.Paths, labels[2])))
		}
		var sum float64
		for _, p := range metrics.Paths {
			if metrics.HasPath(tr, p) {
				sum += testutil.ToFloat64(series.For(d, tr, p))
			}
		}
		return sum
	case "allocations_active":
		return testutil.ToFloat64(m.AllocationsActive.For(Label(t, metrics.Transports, labels[0])))
	case "allocations_created":
		return testutil.ToFloat64(m.AllocationsCreated.For(Label(t, metrics.Transports, labels[0])))
	case "allocations_deleted":
		return testutil.ToFloat64(m.AllocationsDeleted.For(Label(t, metrics.Transports, labels[0])))
	case "dropped":
		return testutil.ToFloat64(m.PacketsDropped.For(Label(t, metrics.DropReasons, labels[0])))
	case "requests":
		return testutil.ToFloat64(m.Requests.For(Label(t, metrics.Methods, labels[0]), Label(t, metrics.Results, labels[1])))
	case "auth_failures":
		return testutil.ToFloat64(m.AuthFailures.For(Label(t, metrics.AuthReasons, labels[0])))
	case "quota":
		return testutil.ToFloat64(m.QuotaRejections.For(Label(t, metrics.Quotas, labels[0])))
	case "peer_denials":
		return testutil.ToFloat64(m.PeerDenials.For(Label(t, metrics.PeerMethods, labels[0])))
	case "connections_closed":
		return testutil.ToFloat64(m.ConnectionsClosed.For(Label(t, metrics.Transports, labels[0]), Label(t, metrics.CloseReasons, labels[1])))
	case "connections_pending":
		return testutil.ToFloat64(m.ConnectionsPending)
	case "handler_panics":
		return testutil.ToFloat64(m.HandlerPanics)
	case "cross_host_bytes":
		return testutil.ToFloat64(m.CrossHostBytes.For(Label(t, metrics.Directions, labels[0])))
	}
	t.Fatalf("unknown metric %q", name)
	return 0
}

// Label is the value of all that v is or spells: a metrics constant, or the
// string it stands for; a value none of the list holds fails t (a typo
// would otherwise read a series nothing counts in, always zero).
func Label[T ~string](t testing.TB, all []T, v any) T {
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

// Scrape returns one sample's value as /metrics would show it: series is a
// line's name and labels as the text format writes them (such as
// supernode_quota_rejections_total{quota="rate"}). The registry is gathered
// as a scrape gathers it, so what is read at scrape time (the kernel
// path's counts, sockets' drops) is read now. A series not there fails t.
func (n *Node) Scrape(series string) float64 {
	n.t.Helper()
	mfs, err := n.Metrics.Registry.Gather()
	if err != nil {
		n.t.Fatal(err)
	}
	var text bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&text, mf); err != nil {
			n.t.Fatal(err)
		}
	}
	for line := range strings.SplitSeq(text.String(), "\n") {
		if strings.HasPrefix(line, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, series)), 64)
			if err != nil {
				n.t.Fatal(err)
			}
			return v
		}
	}
	n.t.Fatalf("series %s not in the registry", series)
	return 0
}
