// Package metrics defines every Prometheus metric supernode exports, once, on
// an explicit registry. Label values come only from fixed sets, one named
// type each (Transport, DropReason, Method, ...), and a labelled metric's
// series is picked by a method taking those types, so that no user name,
// address or call id ever becomes a label and no misspelt value makes a
// series of its own.
package metrics

import (
	"runtime"
	"sync"

	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every metric; construct it with New.
type Metrics struct {
	Registry *prometheus.Registry

	allocationsActive  *prometheus.GaugeVec
	allocationsCreated *prometheus.CounterVec
	allocationsDeleted *prometheus.CounterVec
	AllocationLifetime prometheus.Histogram
	relayBytes         *prometheus.CounterVec
	relayPackets       *prometheus.CounterVec
	packetsDropped     *prometheus.CounterVec
	requests           *prometheus.CounterVec
	authFailures       *prometheus.CounterVec
	quotaRejections    *prometheus.CounterVec
	peerDenials        *prometheus.CounterVec
	PermissionsActive  prometheus.Gauge
	ChannelsActive     prometheus.Gauge
	connectionsClosed  *prometheus.CounterVec
	ConnectionsPending prometheus.Gauge
	limitRejections    *prometheus.CounterVec
	authBackoffs       *prometheus.CounterVec
	LogSuppressed      prometheus.Counter
	Draining           prometheus.Gauge
	DrainRefusals      prometheus.Counter
	HandlerPanics      prometheus.Counter
	clientPacketsInput *prometheus.CounterVec
	buildInfo          *prometheus.GaugeVec

	// Kernel path (offload/); zero while it is off.
	OffloadEnabled        prometheus.Gauge
	OffloadBindings       prometheus.Gauge
	offloadBindFailures   *prometheus.CounterVec
	offloadPassed         *prometheus.CounterVec
	OffloadOnePassPackets prometheus.Counter
	OffloadOnePassBytes   prometheus.Counter

	gatherMu sync.Mutex
	gather   []func()

	// Fleet (zero and unchanging without --cluster-listen).
	fleetMembers *prometheus.GaugeVec
	// FleetMembersLost counts members that left or died without draining.
	FleetMembersLost prometheus.Counter
	placements       *prometheus.CounterVec
	Redirects        prometheus.Counter
	FleetLoadShare   prometheus.Gauge
	crossHostBytes   *prometheus.CounterVec
}

// New creates every metric on a fresh registry, with all label combinations
// created up front so dashboards show zeros rather than gaps.
func New(version string) *Metrics {
	const ns = "supernode"
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		allocationsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "allocations_active",
			Help: "Allocations currently live on this node, by client transport.",
		}, []string{"transport"}),
		allocationsCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "allocations_created_total",
			Help: "Allocations created, by client transport.",
		}, []string{"transport"}),
		allocationsDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "allocations_deleted_total",
			Help: "Allocations deleted (expired, refreshed to zero, or connection closed), by client transport.",
		}, []string{"transport"}),
		AllocationLifetime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "allocation_lifetime_seconds",
			Help: "How long allocations lived, observed when they are deleted.",
			// One- to three-minute steps up to a quarter hour, then five-minute steps up to
			// an hour: a call of one to sixty minutes lands within a few
			// minutes of its length.
			Buckets: []float64{1, 10, 30, 60, 120, 180, 240, 300, 420, 600, 900, 1200, 1500, 1800, 2100, 2400, 2700, 3000, 3300, 3600, 2 * 3600, 4 * 3600, 24 * 3600},
		}),
		relayBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "relay_bytes_total",
			Help: "Payload bytes relayed between clients and peers, counted as they flow, by the path they took (user space or the kernel program).",
		}, []string{"direction", "transport", "path"}),
		relayPackets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "relay_packets_total",
			Help: "Packets (or TCP reads/writes for TCP relays) relayed between clients and peers, by the path they took (user space or the kernel program).",
		}, []string{"direction", "transport", "path"}),
		packetsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "packets_dropped_total",
			Help: "Packets the node received and did not relay or answer, by reason.",
		}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_total",
			Help: "STUN/TURN requests answered, by method and result (from the response sent).",
		}, []string{"method", "result"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "auth_failures_total",
			Help: "Authentication failures, by reason.",
		}, []string{"reason"}),
		quotaRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "quota_rejections_total",
			Help: "Allocate requests refused with 486 because a quota was reached, by quota.",
		}, []string{"quota"}),
		peerDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "peer_denials_total",
			Help: "Requests refused with 403 because the peer address is not allowed, by method.",
		}, []string{"method"}),
		PermissionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "permissions_active",
			Help: "Permissions currently installed across all allocations.",
		}),
		ChannelsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "channels_active",
			Help: "Channel bindings currently installed across all allocations.",
		}),
		connectionsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "connections_closed_total",
			Help: "Client TCP/TLS/DTLS connections closed by the node, by transport and reason.",
		}, []string{"transport", "reason"}),
		ConnectionsPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "connections_pending",
			Help: "Client TCP/TLS/DTLS connections open without an allocation yet.",
		}),
		limitRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "limit_rejections_total",
			Help: "Requests refused because they would pass a per-allocation limit, by limit.",
		}, []string{"limit"}),
		authBackoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "auth_backoffs_total",
			Help: "Backoffs started after repeated failed MESSAGE-INTEGRITY checks, by what they key on (ip, user).",
		}, []string{"scope"}),
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
		fleetMembers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "fleet_members",
			Help: "Fleet members this node sees (itself included), alive and not draining, or draining.",
		}, []string{"state"}),
		FleetMembersLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "fleet_members_lost_total",
			Help: "Fleet members this node saw leave or be declared dead while not draining (a crash, a kill, a partition of the gossip network): the calls on them were cut. A member that drained first is not counted.",
		}),
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "fleet_placements_total",
			Help: "Calls placed by /v1/ice-servers on this node, by where they went.",
		}, []string{"result"}),
		Redirects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "fleet_redirects_total",
			Help: "Allocate requests answered with 300 Try Alternate naming the call's owner.",
		}),
		FleetLoadShare: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "fleet_load_share_ratio",
			Help: "This node's allocations over the fleet's, as last gossiped (1 for a fleet of one).",
		}),
		crossHostBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "fleet_cross_host_bytes_total",
			Help: "Bytes relayed between this node's allocations and another fleet member's relay addresses (the two legs of a call on two hosts), by direction.",
		}, []string{"direction"}),
		HandlerPanics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "handler_panics_total",
			Help: "Panics recovered while handling a request or a connection.",
		}),
		clientPacketsInput: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "client_messages_received_total",
			Help: "STUN messages and ChannelData frames received from clients, by transport.",
		}, []string{"transport"}),
		OffloadEnabled: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "offload_enabled",
			Help: "1 when the kernel path relays ChannelData (--offload), else 0.",
		}),
		OffloadBindings: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "offload_bindings",
			Help: "Channels (bound, with a live permission) the kernel path relays now.",
		}),
		offloadBindFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "offload_bind_failures_total",
			Help: "Channels left to user space because the kernel path could not take them, by reason.",
		}, []string{"reason"}),
		offloadPassed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "offload_passed_total",
			Help: "Packets of a kernel-path channel the kernel program left to user space, by reason.",
		}, []string{"reason"}),
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
		m.AllocationsActive(t)
		m.AllocationsCreated(t)
		m.AllocationsDeleted(t)
		m.ClientPacketsInput(t)
		for _, d := range Directions {
			for _, p := range Paths {
				if HasPath(t, p) {
					m.RelayBytes(d, t, p)
					m.RelayPackets(d, t, p)
				}
			}
		}
		for _, r := range CloseReasons {
			m.ConnectionsClosed(t, r)
		}
	}
	for _, r := range DropReasons {
		m.PacketsDropped(r)
	}
	for _, meth := range Methods {
		for _, r := range Results {
			m.Requests(meth, r)
		}
	}
	for _, r := range AuthReasons {
		m.AuthFailures(r)
	}
	for _, q := range Quotas {
		m.QuotaRejections(q)
	}
	for _, l := range Limits {
		m.LimitRejections(l)
	}
	for _, sc := range Scopes {
		m.AuthBackoffs(sc)
	}
	for _, meth := range PeerMethods {
		m.PeerDenials(meth)
	}
	m.buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	for _, s := range MemberStates {
		m.FleetMembers(s)
	}
	for _, r := range PlacementResults {
		m.Placements(r)
	}
	m.FleetLoadShare.Set(1)
	for _, d := range Directions {
		m.CrossHostBytes(d)
	}

	for _, r := range PassReasons {
		m.OffloadPassed(r)
	}
	for _, r := range BindFailures {
		m.OffloadBindFailures(r)
	}

	m.Registry.MustRegister(
		m.allocationsActive, m.allocationsCreated, m.allocationsDeleted, m.AllocationLifetime,
		m.gathered(m.relayBytes), m.gathered(m.relayPackets), m.gathered(m.packetsDropped), m.requests, m.authFailures,
		m.quotaRejections, m.peerDenials, m.PermissionsActive, m.ChannelsActive,
		m.connectionsClosed, m.ConnectionsPending, m.limitRejections, m.authBackoffs, m.LogSuppressed, m.Draining, m.DrainRefusals, m.HandlerPanics, m.clientPacketsInput,
		m.buildInfo, m.fleetMembers, m.FleetMembersLost, m.placements, m.Redirects, m.FleetLoadShare, m.gathered(m.crossHostBytes),
		m.OffloadEnabled, m.OffloadBindings, m.offloadBindFailures, m.gathered(m.offloadPassed),
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
				if err := m.RelayBytes(d, t, p).Write(&pb); err == nil {
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
