// Package metrics defines every Prometheus metric supernode exports, once, on
// an explicit registry. Label values come only from fixed sets, one named
// type each (Transport, DropReason, Method, ...), and a labelled metric's
// series is picked by its For method, which takes those types
// (m.PacketsDropped.For(metrics.DropPanic)), so that no user name,
// address or call id ever becomes a label and no misspelt value makes a
// series of its own. (A string literal given to For still compiles, as an
// untyped constant converts; a test of this package reads the module's
// source and fails on one, and on any conversion to a label type.)
package metrics

import (
	"runtime"
	"sync"

	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every metric; construct it with New. Each field's comment
// is the metric's name; its help text, in New, says what it counts.
type Metrics struct {
	// Registry is the explicit registry every metric is registered on.
	Registry *prometheus.Registry

	AllocationsActive  GaugeBy[Transport]                     // supernode_allocations_active
	AllocationsCreated CounterBy[Transport]                   // supernode_allocations_created_total
	AllocationsDeleted CounterBy[Transport]                   // supernode_allocations_deleted_total
	AllocationLifetime prometheus.Histogram                   // supernode_allocation_lifetime_seconds
	RelayBytes         CounterBy3[Direction, Transport, Path] // supernode_relay_bytes_total
	RelayPackets       CounterBy3[Direction, Transport, Path] // supernode_relay_packets_total
	PacketsDropped     CounterBy[DropReason]                  // supernode_packets_dropped_total
	Requests           CounterBy2[Method, Result]             // supernode_requests_total
	AuthFailures       CounterBy[AuthReason]                  // supernode_auth_failures_total
	QuotaRejections    CounterBy[Quota]                       // supernode_quota_rejections_total
	PeerDenials        CounterBy[Method]                      // supernode_peer_denials_total
	PermissionsActive  prometheus.Gauge                       // supernode_permissions_active
	ChannelsActive     prometheus.Gauge                       // supernode_channels_active
	ConnectionsClosed  CounterBy2[Transport, CloseReason]     // supernode_connections_closed_total
	ConnectionsPending prometheus.Gauge                       // supernode_connections_pending
	LimitRejections    CounterBy[Limit]                       // supernode_limit_rejections_total
	AuthBackoffs       CounterBy[Scope]                       // supernode_auth_backoffs_total
	LogSuppressed      prometheus.Counter                     // supernode_log_lines_suppressed_total
	Draining           prometheus.Gauge                       // supernode_draining
	DrainRefusals      prometheus.Counter                     // supernode_drain_refusals_total
	HandlerPanics      prometheus.Counter                     // supernode_handler_panics_total
	ClientPacketsInput CounterBy[Transport]                   // supernode_client_messages_received_total
	buildInfo          *prometheus.GaugeVec                   // supernode_build_info

	// Kernel path (offload/); zero while it is off.
	OffloadEnabled        prometheus.Gauge       // supernode_offload_enabled
	OffloadBindings       prometheus.Gauge       // supernode_offload_bindings
	OffloadBindFailures   CounterBy[BindFailure] // supernode_offload_bind_failures_total
	OffloadPassed         CounterBy[PassReason]  // supernode_offload_passed_total
	OffloadOnePassPackets prometheus.Counter     // supernode_offload_one_pass_packets_total
	OffloadOnePassBytes   prometheus.Counter     // supernode_offload_one_pass_bytes_total

	gatherMu sync.Mutex
	gather   []func()

	// Fleet (zero and unchanging without --cluster-listen).
	FleetMembers GaugeBy[MemberState] // supernode_fleet_members
	// FleetMembersLost counts members that left or died without draining.
	FleetMembersLost prometheus.Counter         // supernode_fleet_members_lost_total
	Placements       CounterBy[PlacementResult] // supernode_fleet_placements_total
	Redirects        prometheus.Counter         // supernode_fleet_redirects_total
	FleetLoadShare   prometheus.Gauge           // supernode_fleet_load_share_ratio
	CrossHostBytes   CounterBy[Direction]       // supernode_fleet_cross_host_bytes_total
}

// New creates every metric on a fresh registry, with all label combinations
// created up front so dashboards show zeros rather than gaps.
func New(version string) *Metrics {
	const ns = "supernode"
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		AllocationsActive: GaugeBy[Transport]{prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "allocations_active",
			Help: "Allocations currently live on this node, by client transport.",
		}, []string{"transport"})},
		AllocationsCreated: CounterBy[Transport]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "allocations_created_total",
			Help: "Allocations created, by client transport.",
		}, []string{"transport"})},
		AllocationsDeleted: CounterBy[Transport]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "allocations_deleted_total",
			Help: "Allocations deleted (expired, refreshed to zero, or connection closed), by client transport.",
		}, []string{"transport"})},
		AllocationLifetime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "allocation_lifetime_seconds",
			Help: "How long allocations lived, observed when they are deleted.",
			// One- to three-minute steps up to a quarter hour, then five-minute steps up to
			// an hour: a call of one to sixty minutes lands within a few
			// minutes of its length.
			Buckets: []float64{1, 10, 30, 60, 120, 180, 240, 300, 420, 600, 900, 1200, 1500, 1800, 2100, 2400, 2700, 3000, 3300, 3600, 2 * 3600, 4 * 3600, 24 * 3600},
		}),
		RelayBytes: CounterBy3[Direction, Transport, Path]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "relay_bytes_total",
			Help: "Payload bytes relayed between clients and peers, counted as they flow, by the path they took (user space or the kernel program).",
		}, []string{"direction", "transport", "path"})},
		RelayPackets: CounterBy3[Direction, Transport, Path]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "relay_packets_total",
			Help: "Packets (or TCP reads/writes for TCP relays) relayed between clients and peers, by the path they took (user space or the kernel program).",
		}, []string{"direction", "transport", "path"})},
		PacketsDropped: CounterBy[DropReason]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "packets_dropped_total",
			Help: "Packets the node received and did not relay or answer, by reason.",
		}, []string{"reason"})},
		Requests: CounterBy2[Method, Result]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_total",
			Help: "STUN/TURN requests answered, by method and result (from the response sent).",
		}, []string{"method", "result"})},
		AuthFailures: CounterBy[AuthReason]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "auth_failures_total",
			Help: "Authentication failures, by reason.",
		}, []string{"reason"})},
		QuotaRejections: CounterBy[Quota]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "quota_rejections_total",
			Help: "Allocate requests refused with 486 because a quota was reached, by quota.",
		}, []string{"quota"})},
		PeerDenials: CounterBy[Method]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "peer_denials_total",
			Help: "Requests refused with 403 because the peer address is not allowed, by method.",
		}, []string{"method"})},
		PermissionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "permissions_active",
			Help: "Permissions currently installed across all allocations.",
		}),
		ChannelsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "channels_active",
			Help: "Channel bindings currently installed across all allocations.",
		}),
		ConnectionsClosed: CounterBy2[Transport, CloseReason]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "connections_closed_total",
			Help: "Client TCP/TLS/DTLS connections closed by the node, by transport and reason.",
		}, []string{"transport", "reason"})},
		ConnectionsPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "connections_pending",
			Help: "Client TCP/TLS/DTLS connections open without an allocation yet.",
		}),
		LimitRejections: CounterBy[Limit]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "limit_rejections_total",
			Help: "Requests refused because they would pass a per-allocation limit, by limit.",
		}, []string{"limit"})},
		AuthBackoffs: CounterBy[Scope]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "auth_backoffs_total",
			Help: "Backoffs started after repeated failed MESSAGE-INTEGRITY checks, by what they key on (ip, user).",
		}, []string{"scope"})},
		LogSuppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "log_lines_suppressed_total",
			Help: "Log lines not written because the same message was logged too often.",
		}),
		Draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "draining",
			Help: "1 while the node is draining (refusing new allocations), else 0.",
		}),
		DrainRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "drain_refusals_total",
			Help: "Allocate requests refused because the node is draining.",
		}),
		FleetMembers: GaugeBy[MemberState]{prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "fleet_members",
			Help: "Fleet members this node sees (itself included), alive and not draining, or draining.",
		}, []string{"state"})},
		FleetMembersLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "fleet_members_lost_total",
			Help: "Fleet members this node saw leave or be declared dead while not draining (a crash, a kill, a partition of the gossip network): the calls on them were cut. A member that drained first is not counted.",
		}),
		Placements: CounterBy[PlacementResult]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "fleet_placements_total",
			Help: "Calls placed by /v1/ice-servers on this node, by where they went.",
		}, []string{"result"})},
		Redirects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "fleet_redirects_total",
			Help: "Allocate requests answered with 300 Try Alternate naming the call's owner.",
		}),
		FleetLoadShare: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "fleet_load_share_ratio",
			Help: "This node's allocations over the fleet's, as last gossiped (1 for a fleet of one).",
		}),
		CrossHostBytes: CounterBy[Direction]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "fleet_cross_host_bytes_total",
			Help: "Bytes relayed between this node's allocations and another fleet member's relay addresses (the two legs of a call on two hosts), by direction.",
		}, []string{"direction"})},
		HandlerPanics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "handler_panics_total",
			Help: "Panics recovered while handling a request or a connection.",
		}),
		ClientPacketsInput: CounterBy[Transport]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "client_messages_received_total",
			Help: "STUN messages and ChannelData frames received from clients, by transport.",
		}, []string{"transport"})},
		OffloadEnabled: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "offload_enabled",
			Help: "1 when the kernel path relays ChannelData (--offload), else 0.",
		}),
		OffloadBindings: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "offload_bindings",
			Help: "Channels (bound, with a live permission) the kernel path relays now.",
		}),
		OffloadBindFailures: CounterBy[BindFailure]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "offload_bind_failures_total",
			Help: "Channels left to user space because the kernel path could not take them, by reason.",
		}, []string{"reason"})},
		OffloadPassed: CounterBy[PassReason]{prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "offload_passed_total",
			Help: "Packets of a kernel-path channel the kernel program left to user space, by reason.",
		}, []string{"reason"})},
		OffloadOnePassPackets: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "offload_one_pass_packets_total",
			Help: "ChannelData relayed from one client to another (both allocations on this node) in one kernel pass; each is also counted once in each direction of relay_packets_total.",
		}),
		OffloadOnePassBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "offload_one_pass_bytes_total",
			Help: "Payload bytes of offload_one_pass_packets_total.",
		}),
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "build_info",
			Help: "Always 1; labels carry the version and Go version.",
		}, []string{"version", "goversion"}),
	}

	// Every series of every label list, at zero, picked by the same methods
	// the call sites use.
	for _, t := range Transports {
		m.AllocationsActive.For(t)
		m.AllocationsCreated.For(t)
		m.AllocationsDeleted.For(t)
		m.ClientPacketsInput.For(t)
		for _, d := range Directions {
			for _, p := range Paths {
				if HasPath(t, p) {
					m.RelayBytes.For(d, t, p)
					m.RelayPackets.For(d, t, p)
				}
			}
		}
		for _, r := range CloseReasons {
			m.ConnectionsClosed.For(t, r)
		}
	}
	for _, r := range DropReasons {
		m.PacketsDropped.For(r)
	}
	for _, meth := range Methods {
		for _, r := range Results {
			m.Requests.For(meth, r)
		}
	}
	for _, r := range AuthReasons {
		m.AuthFailures.For(r)
	}
	for _, q := range Quotas {
		m.QuotaRejections.For(q)
	}
	for _, l := range Limits {
		m.LimitRejections.For(l)
	}
	for _, sc := range Scopes {
		m.AuthBackoffs.For(sc)
	}
	for _, meth := range PeerMethods {
		m.PeerDenials.For(meth)
	}
	m.buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	for _, s := range MemberStates {
		m.FleetMembers.For(s)
	}
	for _, r := range PlacementResults {
		m.Placements.For(r)
	}
	m.FleetLoadShare.Set(1)
	for _, d := range Directions {
		m.CrossHostBytes.For(d)
	}

	for _, r := range PassReasons {
		m.OffloadPassed.For(r)
	}
	for _, r := range BindFailures {
		m.OffloadBindFailures.For(r)
	}

	m.Registry.MustRegister(
		m.AllocationsActive.vec, m.AllocationsCreated.vec, m.AllocationsDeleted.vec, m.AllocationLifetime,
		m.gathered(m.RelayBytes.vec), m.gathered(m.RelayPackets.vec), m.gathered(m.PacketsDropped.vec), m.Requests.vec, m.AuthFailures.vec,
		m.QuotaRejections.vec, m.PeerDenials.vec, m.PermissionsActive, m.ChannelsActive,
		m.ConnectionsClosed.vec, m.ConnectionsPending, m.LimitRejections.vec, m.AuthBackoffs.vec, m.LogSuppressed, m.Draining, m.DrainRefusals, m.HandlerPanics, m.ClientPacketsInput.vec,
		m.buildInfo, m.FleetMembers.vec, m.FleetMembersLost, m.Placements.vec, m.Redirects, m.FleetLoadShare, m.gathered(m.CrossHostBytes.vec),
		m.OffloadEnabled, m.OffloadBindings, m.OffloadBindFailures.vec, m.gathered(m.OffloadPassed.vec),
		m.gathered(m.OffloadOnePassPackets), m.gathered(m.OffloadOnePassBytes),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// RelayedBytes is the total of supernode_relay_bytes_total over every
// direction, transport and path, read for gossip (not on the packet path).
func (m *Metrics) RelayedBytes() float64 {
	m.runGather()
	var total float64
	for _, t := range Transports {
		for _, d := range Directions {
			for _, p := range Paths {
				if !HasPath(t, p) {
					continue
				}
				var pb dto.Metric
				if err := m.RelayBytes.For(d, t, p).Write(&pb); err == nil {
					total += pb.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

// OnGather adds fn to what runs before the counters that follow counts
// kept outside this process — in the kernel — are collected: relayed bytes
// and packets, drops, cross-host bytes and the kernel path's own. fn adds
// what has been counted since it last ran, so every scrape shows the
// counts up to that moment. Calls are serialized.
func (m *Metrics) OnGather(fn func()) {
	m.gatherMu.Lock()
	m.gather = append(m.gather, fn)
	m.gatherMu.Unlock()
}

// Refresh runs the OnGather functions now, as a scrape would.
func (m *Metrics) Refresh() { m.runGather() }

func (m *Metrics) runGather() {
	m.gatherMu.Lock()
	defer m.gatherMu.Unlock()
	for _, fn := range m.gather {
		fn()
	}
}

// gathered wraps c so that the OnGather functions run before it is
// collected.
func (m *Metrics) gathered(c prometheus.Collector) prometheus.Collector {
	return &gatheredCollector{Collector: c, m: m}
}

type gatheredCollector struct {
	prometheus.Collector
	m *Metrics
}

// Collect implements prometheus.Collector.
func (g *gatheredCollector) Collect(ch chan<- prometheus.Metric) {
	g.m.runGather()
	g.Collector.Collect(ch)
}
