package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestGolden checks names, help, types and that every label combination
// exists at zero from the start.
func TestGolden(t *testing.T) {
	m := New("test")
	m.PacketsDropped.For(DropRateLimit).Add(3)
	const want = `
# HELP supernode_packets_dropped_total Packets the node received and did not relay or answer, by reason.
# TYPE supernode_packets_dropped_total counter
supernode_packets_dropped_total{reason="auth_backoff"} 0
supernode_packets_dropped_total{reason="malformed"} 0
supernode_packets_dropped_total{reason="no_allocation"} 0
supernode_packets_dropped_total{reason="no_permission"} 0
supernode_packets_dropped_total{reason="offload_error"} 0
supernode_packets_dropped_total{reason="overflow"} 0
supernode_packets_dropped_total{reason="oversized"} 0
supernode_packets_dropped_total{reason="panic"} 0
supernode_packets_dropped_total{reason="peer_denied"} 0
supernode_packets_dropped_total{reason="peer_gone"} 0
supernode_packets_dropped_total{reason="rate_limit"} 3
supernode_packets_dropped_total{reason="rcvbuf"} 0
supernode_packets_dropped_total{reason="unauth_budget"} 0
# HELP supernode_quota_rejections_total Allocate requests refused with 486 because a quota was reached, by quota.
# TYPE supernode_quota_rejections_total counter
supernode_quota_rejections_total{quota="rate"} 0
supernode_quota_rejections_total{quota="total"} 0
supernode_quota_rejections_total{quota="user"} 0
# HELP supernode_allocations_active Allocations currently live on this node, by client transport.
# TYPE supernode_allocations_active gauge
supernode_allocations_active{transport="dtls"} 0
supernode_allocations_active{transport="tcp"} 0
supernode_allocations_active{transport="tls"} 0
supernode_allocations_active{transport="udp"} 0
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want),
		"supernode_packets_dropped_total", "supernode_quota_rejections_total", "supernode_allocations_active"); err != nil {
		t.Fatal(err)
	}
}

// TestNamingRules enforces the house rules on every supernode metric.
func TestNamingRules(t *testing.T) {
	m := New("test")
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "supernode_") {
			continue
		}
		n++
		if mf.GetType().String() == "COUNTER" && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
		for _, metric := range mf.GetMetric() {
			for _, l := range metric.GetLabel() {
				switch l.GetName() {
				case "transport", "direction", "reason", "method", "result", "quota", "version", "goversion", "state", "limit", "scope", "path":
				default:
					t.Errorf("%s has label %q outside the fixed sets", name, l.GetName())
				}
			}
		}
	}
	if n < 15 {
		t.Fatalf("only %d supernode metrics registered", n)
	}
}

func TestRelayedBytes(t *testing.T) {
	m := New("test")
	m.RelayBytes.For(ClientToPeer, TransportUDP, PathUser).Add(100)
	m.RelayBytes.For(PeerToClient, TransportTLS, PathUser).Add(23)
	m.OnGather(func() { m.RelayBytes.For(ClientToPeer, TransportUDP, PathKernel).Add(1000) })
	if got := m.RelayedBytes(); got != 1123 {
		t.Fatalf("RelayedBytes = %v, want 1123 (user 123 and kernel 1000, read on the call)", got)
	}
}
