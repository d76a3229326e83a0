package relaytest

import (
	"bytes"
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
// requests (method, result), auth_failures (reason), quota (which) and
// peer_denials (method). The kernel path's counts are read first, as a
// scrape would. An unknown name fails t.
func Counter(t testing.TB, m *metrics.Metrics, name string, labels ...string) float64 {
	t.Helper()
	m.Refresh()
	switch name {
	case "relay_bytes", "relay_packets":
		vec := m.RelayBytes
		if name == "relay_packets" {
			vec = m.RelayPackets
		}
		if len(labels) == 3 {
			return testutil.ToFloat64(vec.WithLabelValues(labels...))
		}
		sum := testutil.ToFloat64(vec.WithLabelValues(append(labels, metrics.PathUser)...))
		if labels[1] == "udp" {
			sum += testutil.ToFloat64(vec.WithLabelValues(append(labels, metrics.PathKernel)...))
		}
		return sum
	case "allocations_active":
		return testutil.ToFloat64(m.AllocationsActive.WithLabelValues(labels...))
	case "allocations_created":
		return testutil.ToFloat64(m.AllocationsCreated.WithLabelValues(labels...))
	case "allocations_deleted":
		return testutil.ToFloat64(m.AllocationsDeleted.WithLabelValues(labels...))
	case "dropped":
		return testutil.ToFloat64(m.PacketsDropped.WithLabelValues(labels...))
	case "requests":
		return testutil.ToFloat64(m.Requests.WithLabelValues(labels...))
	case "auth_failures":
		return testutil.ToFloat64(m.AuthFailures.WithLabelValues(labels...))
	case "quota":
		return testutil.ToFloat64(m.QuotaRejections.WithLabelValues(labels...))
	case "peer_denials":
		return testutil.ToFloat64(m.PeerDenials.WithLabelValues(labels...))
	}
	t.Fatalf("unknown metric %q", name)
	return 0
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
