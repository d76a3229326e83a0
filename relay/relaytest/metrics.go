package relaytest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

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
