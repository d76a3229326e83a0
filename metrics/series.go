package metrics

import "github.com/prometheus/client_golang/prometheus"

// The methods below pick one series of a labelled metric. They take the
// label types of labels.go, never a plain string, and New creates every
// series they can name from the lists there. Each is a map lookup: on a
// per-packet path, pick the series once and keep it.

// HasPath reports whether traffic of transport t can take path p: the
// kernel path relays UDP only, so only UDP has kernel series.
func HasPath(t Transport, p Path) bool { return p != PathKernel || t == TransportUDP }

// AllocationsActive is supernode_allocations_active{transport=t}.
func (m *Metrics) AllocationsActive(t Transport) prometheus.Gauge {
	return m.allocationsActive.WithLabelValues(string(t))
}

// AllocationsCreated is supernode_allocations_created_total{transport=t}.
func (m *Metrics) AllocationsCreated(t Transport) prometheus.Counter {
	return m.allocationsCreated.WithLabelValues(string(t))
}

// AllocationsDeleted is supernode_allocations_deleted_total{transport=t}.
func (m *Metrics) AllocationsDeleted(t Transport) prometheus.Counter {
	return m.allocationsDeleted.WithLabelValues(string(t))
}

// ClientPacketsInput is
// supernode_client_messages_received_total{transport=t}.
func (m *Metrics) ClientPacketsInput(t Transport) prometheus.Counter {
	return m.clientPacketsInput.WithLabelValues(string(t))
}

// RelayBytes is supernode_relay_bytes_total{direction=d,transport=t,path=p}.
func (m *Metrics) RelayBytes(d Direction, t Transport, p Path) prometheus.Counter {
	return m.relayBytes.WithLabelValues(string(d), string(t), string(p))
}

// RelayPackets is
// supernode_relay_packets_total{direction=d,transport=t,path=p}.
func (m *Metrics) RelayPackets(d Direction, t Transport, p Path) prometheus.Counter {
	return m.relayPackets.WithLabelValues(string(d), string(t), string(p))
}

// PacketsDropped is supernode_packets_dropped_total{reason=r}.
func (m *Metrics) PacketsDropped(r DropReason) prometheus.Counter {
	return m.packetsDropped.WithLabelValues(string(r))
}

// Requests is supernode_requests_total{method=meth,result=r}.
func (m *Metrics) Requests(meth Method, r Result) prometheus.Counter {
	return m.requests.WithLabelValues(string(meth), string(r))
}

// AuthFailures is supernode_auth_failures_total{reason=r}.
func (m *Metrics) AuthFailures(r AuthReason) prometheus.Counter {
	return m.authFailures.WithLabelValues(string(r))
}

// QuotaRejections is supernode_quota_rejections_total{quota=q}.
func (m *Metrics) QuotaRejections(q Quota) prometheus.Counter {
	return m.quotaRejections.WithLabelValues(string(q))
}

// PeerDenials is supernode_peer_denials_total{method=meth}; meth is one of
// PeerMethods.
func (m *Metrics) PeerDenials(meth Method) prometheus.Counter {
	return m.peerDenials.WithLabelValues(string(meth))
}

// ConnectionsClosed is
// supernode_connections_closed_total{transport=t,reason=r}.
func (m *Metrics) ConnectionsClosed(t Transport, r CloseReason) prometheus.Counter {
	return m.connectionsClosed.WithLabelValues(string(t), string(r))
}

// LimitRejections is supernode_limit_rejections_total{limit=l}.
func (m *Metrics) LimitRejections(l Limit) prometheus.Counter {
	return m.limitRejections.WithLabelValues(string(l))
}

// AuthBackoffs is supernode_auth_backoffs_total{scope=s}.
func (m *Metrics) AuthBackoffs(s Scope) prometheus.Counter {
	return m.authBackoffs.WithLabelValues(string(s))
}

// OffloadBindFailures is supernode_offload_bind_failures_total{reason=r}.
func (m *Metrics) OffloadBindFailures(r BindFailure) prometheus.Counter {
	return m.offloadBindFailures.WithLabelValues(string(r))
}

// OffloadPassed is supernode_offload_passed_total{reason=r}.
func (m *Metrics) OffloadPassed(r PassReason) prometheus.Counter {
	return m.offloadPassed.WithLabelValues(string(r))
}

// FleetMembers is supernode_fleet_members{state=s}.
func (m *Metrics) FleetMembers(s MemberState) prometheus.Gauge {
	return m.fleetMembers.WithLabelValues(string(s))
}

// Placements is supernode_fleet_placements_total{result=r}.
func (m *Metrics) Placements(r PlacementResult) prometheus.Counter {
	return m.placements.WithLabelValues(string(r))
}

// CrossHostBytes is supernode_fleet_cross_host_bytes_total{direction=d}.
func (m *Metrics) CrossHostBytes(d Direction) prometheus.Counter {
	return m.crossHostBytes.WithLabelValues(string(d))
}
