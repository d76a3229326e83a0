// Package metrics defines every Prometheus metric supernode exports, once, on
// an explicit registry. Label values come only from the fixed sets below so
// that no user name, address or call id ever becomes a label.
package metrics

import (
	"runtime"
	"sync"

	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Transports is the fixed set of client transports a listener can speak.
var Transports = []string{"udp", "tcp", "tls", "dtls"}

// Directions of relayed traffic.
const (
	ClientToPeer = "client_to_peer"
	PeerToClient = "peer_to_client"
)

// Paths a relayed packet takes: through user space, or through the kernel
// program (offload/).
const (
	PathUser   = "user"
	PathKernel = "kernel"
)

// Drop reasons: why a packet the node received was not relayed or handled.
const (
	DropMalformed  = "malformed"   // not STUN or ChannelData, or a bad header
	DropOversized  = "oversized"   // larger than the inbound MTU
	DropRateLimit  = "rate_limit"  // over --max-bps for its allocation
	DropPeerDenied = "peer_denied" // to one of the node's own services, not a relay port
	DropPanic      = "panic"       // handling it panicked; the node recovered
	DropOverflow   = "overflow"    // a hand-over queue between sockets was full
	// DropNoPermission: from a peer the allocation has no permission for.
	DropNoPermission = "no_permission"
	// DropPeerGone: to a relay port of this node whose allocation has ended
	// (normal at hang-up: the other leg's last packets).
	DropPeerGone = "peer_gone"
	// DropRcvbuf: the kernel dropped it because a listener socket's receive
	// buffer was full (read from the socket at scrape time).
	DropRcvbuf = "rcvbuf"
	// DropUnauthBudget: a request without MESSAGE-INTEGRITY over its source
	// IP's budget (--unauth-rate).
	DropUnauthBudget = "unauth_budget"
	// DropAuthBackoff: a request from an IP or for a username in backoff
	// after repeated failed MESSAGE-INTEGRITY checks.
	DropAuthBackoff = "auth_backoff"
	// DropNoAllocation: ChannelData or an indication from a UDP client
	// without an allocation on that socket.
	DropNoAllocation = "no_allocation"
	// DropOffloadError: the kernel path dropped it after a helper failed
	// halfway through rewriting it (should stay zero).
	DropOffloadError = "offload_error"
)

// DropReasons is the fixed set of drop reasons.
var DropReasons = []string{DropMalformed, DropOversized, DropRateLimit, DropPeerDenied, DropPanic, DropOverflow,
	DropNoPermission, DropPeerGone, DropRcvbuf, DropUnauthBudget, DropAuthBackoff, DropNoAllocation, DropOffloadError}

// Reasons the kernel path left a packet of one of its channels to user
// space (OffloadPassed).
const (
	PassMTU      = "mtu"       // too big for the route's MTU once rewritten
	PassRoute    = "route"     // a local destination, reached other than over loopback
	PassNoServer = "no_server" // a wildcard listener's address not learned yet from the client
	PassShape    = "shape"     // IP options, fragments, GSO, a client datagram of 1600 bytes or more, a bad IP header, lengths that disagree, a frame for another host
)

// PassReasons is the fixed set of OffloadPassed reasons.
var PassReasons = []string{PassMTU, PassRoute, PassNoServer, PassShape}

// Reasons a channel stayed in user space instead of the kernel path
// (OffloadBindFailures).
const (
	BindFull   = "full"   // the kernel's maps were full
	BindFamily = "family" // client and relayed address of different families
	BindRoute  = "route"  // no route to the peer or the client (unreachable, blackhole, broadcast)
	BindError  = "error"  // any other failure to install it
)

// Methods are the STUN/TURN request methods counted in RequestsTotal.
var Methods = []string{"binding", "allocate", "refresh", "create_permission", "channel_bind", "connect", "connection_bind"}

// Results of a request, from the response the node sent.
var Results = []string{"success", "unauthorized", "forbidden", "stale_nonce", "bad_request",
	"mismatch", "quota", "capacity", "try_alternate", "other_error"}

// Auth failure reasons.
const (
	AuthUnknownUser = "unknown_user"
	AuthExpired     = "expired"
	AuthBadUsername = "bad_username"
	AuthBadPassword = "bad_password"
	AuthWrongOwner  = "wrong_owner" // a request on another user's allocation
)

// AuthReasons is the fixed set of authentication failure reasons.
var AuthReasons = []string{AuthUnknownUser, AuthExpired, AuthBadUsername, AuthBadPassword, AuthWrongOwner}

// Quota kinds.
const (
	QuotaUser  = "user"
	QuotaTotal = "total"
	QuotaRate  = "rate" // Allocate attempts per user id per second (--user-alloc-rate)
)

// Per-allocation limits counted in LimitRejections.
const (
	LimitPermissions  = "permissions"   // --max-permissions
	LimitChannels     = "channels"      // --max-channels
	LimitRequestPeers = "request_peers" // peer addresses in one CreatePermission
)

// Limits is the fixed set of per-allocation limits.
var Limits = []string{LimitPermissions, LimitChannels, LimitRequestPeers}

// Auth backoff scopes: what a backoff after failed checks is keyed by.
const (
	ScopeIP   = "ip"
	ScopeUser = "user"
)

// Connection close reasons for TCP, TLS and DTLS client connections.
// "limit" is the per-IP cap (--max-conns-per-ip), "pending_limit" the
// node-wide cap on connections without an allocation (--max-pending-conns),
// "auth_timeout" a connection with no allocation by --auth-timeout.
var CloseReasons = []string{"idle_timeout", "first_message_timeout", "malformed", "oversized", "peer_closed",
	"peer_reset", "limit", "pending_limit", "auth_timeout"}

// Metrics holds every metric; construct it with New.
type Metrics struct {
	Registry *prometheus.Registry

	AllocationsActive  *prometheus.GaugeVec
	AllocationsCreated *prometheus.CounterVec
	AllocationsDeleted *prometheus.CounterVec
	AllocationLifetime prometheus.Histogram
	RelayBytes         *prometheus.CounterVec
	RelayPackets       *prometheus.CounterVec
	PacketsDropped     *prometheus.CounterVec
	Requests           *prometheus.CounterVec
	AuthFailures       *prometheus.CounterVec
	QuotaRejections    *prometheus.CounterVec
	PeerDenials        *prometheus.CounterVec
	PermissionsActive  prometheus.Gauge
	ChannelsActive     prometheus.Gauge
	ConnectionsClosed  *prometheus.CounterVec
	ConnectionsPending prometheus.Gauge
	LimitRejections    *prometheus.CounterVec
	AuthBackoffs       *prometheus.CounterVec
	LogSuppressed      prometheus.Counter
	Draining           prometheus.Gauge
	DrainRefusals      prometheus.Counter
	HandlerPanics      prometheus.Counter
	ClientPacketsInput *prometheus.CounterVec
	BuildInfo          *prometheus.GaugeVec

	// Kernel path (offload/); zero while it is off.
	OffloadEnabled        prometheus.Gauge
	OffloadBindings       prometheus.Gauge
	OffloadBindFailures   *prometheus.CounterVec
	OffloadPassed         *prometheus.CounterVec
	OffloadOnePassPackets prometheus.Counter
	OffloadOnePassBytes   prometheus.Counter

	gatherMu sync.Mutex
	gather   []func()

	// Fleet (zero and unchanging without --cluster-listen).
	FleetMembers *prometheus.GaugeVec
	// FleetMembersLost counts members that left or died without draining.
	FleetMembersLost prometheus.Counter
	Placements       *prometheus.CounterVec
	Redirects        prometheus.Counter
	FleetLoadShare   prometheus.Gauge
	CrossHostBytes   *prometheus.CounterVec
}

// MemberStates label supernode_fleet_members.
var MemberStates = []string{"alive", "draining"}

// PlacementResults label supernode_fleet_placements_total: the call's owner
// is this node (local), another member (remote), or nobody eligible so this
// node serves it (fallback).
var PlacementResults = []string{"local", "remote", "fallback"}

// New creates every metric on a fresh registry, with all label combinations
// created up front so dashboards show zeros rather than gaps.
func New(version string) *Metrics {
	const ns = "supernode"
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		AllocationsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "allocations_active",
			Help: "Allocations currently live on this node, by client transport.",
		}, []string{"transport"}),
		AllocationsCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "allocations_created_total",
			Help: "Allocations created, by client transport.",
		}, []string{"transport"}),
		AllocationsDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
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
		RelayBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "relay_bytes_total",
			Help: "Payload bytes relayed between clients and peers, counted as they flow, by the path they took (user space or the kernel program).",
		}, []string{"direction", "transport", "path"}),
		RelayPackets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "relay_packets_total",
			Help: "Packets (or TCP reads/writes for TCP relays) relayed between clients and peers, by the path they took (user space or the kernel program).",
		}, []string{"direction", "transport", "path"}),
		PacketsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "packets_dropped_total",
			Help: "Packets the node received and did not relay or answer, by reason.",
		}, []string{"reason"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_total",
			Help: "STUN/TURN requests answered, by method and result (from the response sent).",
		}, []string{"method", "result"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "auth_failures_total",
			Help: "Authentication failures, by reason.",
		}, []string{"reason"}),
		QuotaRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "quota_rejections_total",
			Help: "Allocate requests refused with 486 because a quota was reached, by quota.",
		}, []string{"quota"}),
		PeerDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
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
		ConnectionsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "connections_closed_total",
			Help: "Client TCP/TLS/DTLS connections closed by the node, by transport and reason.",
		}, []string{"transport", "reason"}),
		ConnectionsPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "connections_pending",
			Help: "Client TCP/TLS/DTLS connections open without an allocation yet.",
		}),
		LimitRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "limit_rejections_total",
			Help: "Requests refused because they would pass a per-allocation limit, by limit.",
		}, []string{"limit"}),
		AuthBackoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
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
		FleetMembers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "fleet_members",
			Help: "Fleet members this node sees (itself included), alive and not draining, or draining.",
		}, []string{"state"}),
		FleetMembersLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "fleet_members_lost_total",
			Help: "Fleet members this node saw leave or be declared dead while not draining (a crash, a kill, a partition of the gossip network): the calls on them were cut. A member that drained first is not counted.",
		}),
		Placements: prometheus.NewCounterVec(prometheus.CounterOpts{
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
		CrossHostBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "fleet_cross_host_bytes_total",
			Help: "Bytes relayed between this node's allocations and another fleet member's relay addresses (the two legs of a call on two hosts), by direction.",
		}, []string{"direction"}),
		HandlerPanics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "handler_panics_total",
			Help: "Panics recovered while handling a request or a connection.",
		}),
		ClientPacketsInput: prometheus.NewCounterVec(prometheus.CounterOpts{
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
		OffloadBindFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "offload_bind_failures_total",
			Help: "Channels left to user space because the kernel path could not take them, by reason.",
		}, []string{"reason"}),
		OffloadPassed: prometheus.NewCounterVec(prometheus.CounterOpts{
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
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "build_info",
			Help: "Always 1; labels carry the version and Go version.",
		}, []string{"version", "goversion"}),
	}

	for _, t := range Transports {
		m.AllocationsActive.WithLabelValues(t)
		m.AllocationsCreated.WithLabelValues(t)
		m.AllocationsDeleted.WithLabelValues(t)
		m.ClientPacketsInput.WithLabelValues(t)
		for _, d := range []string{ClientToPeer, PeerToClient} {
			m.RelayBytes.WithLabelValues(d, t, PathUser)
			m.RelayPackets.WithLabelValues(d, t, PathUser)
			if t == "udp" {
				m.RelayBytes.WithLabelValues(d, t, PathKernel)
				m.RelayPackets.WithLabelValues(d, t, PathKernel)
			}
		}
		for _, r := range CloseReasons {
			m.ConnectionsClosed.WithLabelValues(t, r)
		}
	}
	for _, r := range DropReasons {
		m.PacketsDropped.WithLabelValues(r)
	}
	for _, meth := range Methods {
		for _, r := range Results {
			m.Requests.WithLabelValues(meth, r)
		}
	}
	for _, r := range AuthReasons {
		m.AuthFailures.WithLabelValues(r)
	}
	for _, q := range []string{QuotaUser, QuotaTotal, QuotaRate} {
		m.QuotaRejections.WithLabelValues(q)
	}
	for _, l := range Limits {
		m.LimitRejections.WithLabelValues(l)
	}
	for _, sc := range []string{ScopeIP, ScopeUser} {
		m.AuthBackoffs.WithLabelValues(sc)
	}
	for _, meth := range []string{"create_permission", "channel_bind", "connect"} {
		m.PeerDenials.WithLabelValues(meth)
	}
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	for _, s := range MemberStates {
		m.FleetMembers.WithLabelValues(s)
	}
	for _, r := range PlacementResults {
		m.Placements.WithLabelValues(r)
	}
	m.FleetLoadShare.Set(1)
	for _, d := range []string{ClientToPeer, PeerToClient} {
		m.CrossHostBytes.WithLabelValues(d)
	}

	for _, r := range PassReasons {
		m.OffloadPassed.WithLabelValues(r)
	}
	for _, r := range []string{BindFull, BindFamily, BindRoute, BindError} {
		m.OffloadBindFailures.WithLabelValues(r)
	}

	m.Registry.MustRegister(
		m.AllocationsActive, m.AllocationsCreated, m.AllocationsDeleted, m.AllocationLifetime,
		m.gathered(m.RelayBytes), m.gathered(m.RelayPackets), m.gathered(m.PacketsDropped), m.Requests, m.AuthFailures,
		m.QuotaRejections, m.PeerDenials, m.PermissionsActive, m.ChannelsActive,
		m.ConnectionsClosed, m.ConnectionsPending, m.LimitRejections, m.AuthBackoffs, m.LogSuppressed, m.Draining, m.DrainRefusals, m.HandlerPanics, m.ClientPacketsInput,
		m.BuildInfo, m.FleetMembers, m.FleetMembersLost, m.Placements, m.Redirects, m.FleetLoadShare, m.gathered(m.CrossHostBytes),
		m.OffloadEnabled, m.OffloadBindings, m.OffloadBindFailures, m.gathered(m.OffloadPassed),
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
		for _, d := range []string{ClientToPeer, PeerToClient} {
			for _, p := range []string{PathUser, PathKernel} {
				if p == PathKernel && t != "udp" {
					continue
				}
				var pb dto.Metric
				if err := m.RelayBytes.WithLabelValues(d, t, p).Write(&pb); err == nil {
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
