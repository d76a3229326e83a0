package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/metrics"
)

// Server is a running relay: one pion/turn server per listener socket, all
// sharing one allocation table, credential store, policy and metrics.
type Server struct {
	cfg      Config
	m        *metrics.Metrics
	log      *slog.Logger
	logs     *logLimiter // rate-limits the lines a client can trigger; see logger.go
	addrs    addrs
	self     []selfAddr // the node's own addresses; see self.go
	ports    relayPorts
	pools    portPools     // free relay ports; see portpool.go
	reserved reservedPorts // next ports of EVEN-PORT allocations; see reserve.go
	rates    userRates     // Allocates per user id; see allocrate.go
	conns    connLimit
	permMu   sync.Mutex
	records  map[string]*record // by relayed address
	byClient map[allocation.Key]*record
	streams  sync.Map // allocation.Key → *clientStreamConn holding an allocation
	nonces   *nonces
	budget   *sourceBudget // nil: unlimited
	guard    *authThrottle // nil: no backoff
	draining atomic.Bool
	closing  atomic.Bool // Close has begun: what ends now ends by shutdown
	// lifetimes holds the LIFETIME of Allocates handed to pion until it
	// creates them (see noteAllocate).
	lifeMu    sync.Mutex
	lifetimes map[allocation.Key]lifetimeNote
	lifeSwept time.Time // the last sweep of old notes
	// fleet holds the relay addresses of the other fleet members (see
	// SetFleetPeers); nil outside a fleet.
	fleet     atomic.Pointer[map[netip.Addr][]FleetPeer]
	listeners []*listener
	pion      []*turn.Server
	kernelIDs atomic.Uint32 // ids of allocations in the kernel path
}

// listener is the per-socket state: which transport, and its metric
// children looked up once so the packet path does no map lookups.
type listener struct {
	idx       int
	transport metrics.Transport
	local     net.Addr // the socket's own address
	srv       *Server
	group     *udpGroup // nil unless udp

	input                prometheus.Counter
	c2pBytes, c2pPackets prometheus.Counter
	p2cBytes, p2cPackets prometheus.Counter
	dropRate, dropSelf   prometheus.Counter
	dropNoPerm, dropGone prometheus.Counter
	dropMalformed        prometheus.Counter
	dropOversized        prometheus.Counter
	dropBudget           prometheus.Counter
	dropBackoff          prometheus.Counter
	crossOut, crossIn    prometheus.Counter
	allocActive          prometheus.Gauge
	allocCreated         prometheus.Counter
	allocDeleted         prometheus.Counter

	pion        pionNonces // the nonce this listener's pion server hands out
	clients     *clientSet // clients holding an allocation; nil unless udp
	dropNoAlloc prometheus.Counter
}

// New validates cfg and starts serving every listener.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, m: cfg.Metrics, log: cfg.Logger, records: map[string]*record{}, byClient: map[allocation.Key]*record{},
		nonces: newNonces(cfg.NonceLifetime, cfg.Now),
		budget: newSourceBudget(cfg.UnauthRate, cfg.Now),
		guard:  newAuthThrottle(cfg.AuthFailures, cfg.AuthFailWindow, cfg.AuthBackoff, cfg.AuthBackoffMax, cfg.Now),
		conns:  newConnLimit(cfg.MaxConnsPerIP, cfg.MaxPendingConns, cfg.Metrics.ConnectionsPending)}
	s.logs = newLogLimiter(s.m.LogSuppressed)
	for _, ip := range cfg.RelayIPs {
		ip = ip.Unmap()
		if ip.Is4() {
			s.addrs.relay4, s.addrs.advertise4 = ip, ip
		} else {
			s.addrs.relay6, s.addrs.advertise6 = ip, ip
		}
		s.addSelf(ip, true)
	}
	for _, ip := range cfg.ExternalIPs {
		ip = ip.Unmap()
		if ip.Is4() {
			s.addrs.advertise4 = ip
		} else {
			s.addrs.advertise6 = ip
		}
		s.addSelf(ip, true)
	}
	for _, ip := range cfg.LocalIPs {
		s.addSelf(ip, false)
	}

	groups := map[string]*udpGroup{} // UDP sockets sharing an address
	for i, l := range cfg.Listeners {
		t, _ := metrics.TransportOf(l.Transport) // validate took only these
		st := s.newListener(i, t)
		if l.PacketConn != nil {
			st.local = l.PacketConn.LocalAddr()
		} else {
			st.local = l.Listener.Addr()
		}
		s.listeners = append(s.listeners, st)
		sc := turn.ServerConfig{
			LoggerFactory:      loggerFactory{log: s.log, lim: s.logs},
			Realm:              cfg.Realm,
			AuthHandler:        st.auth,
			QuotaHandler:       st.quota,
			EventHandler:       st.events(),
			AllocationLifetime: cfg.AllocationLifetime,
			PermissionTimeout:  cfg.PermissionLifetime,
			ChannelBindTimeout: cfg.ChannelLifetime,
			// RFC 6156 §4.2: without REQUESTED-ADDRESS-FAMILY the relayed
			// address is IPv4, whatever family the client reached us over.
			StrictAddressFamily: true,
		}
		gen := &generator{l: st}
		if l.Transport == "udp" {
			a := l.PacketConn.LocalAddr().String()
			if groups[a] == nil {
				groups[a] = newUDPGroup()
			}
			st.group = groups[a]
			sc.PacketConnConfigs = []turn.PacketConnConfig{{
				PacketConn:            &clientPacketConn{PacketConn: l.PacketConn, l: st, g: st.group},
				RelayAddressGenerator: gen,
				PermissionHandler:     st.permission,
			}}
		} else {
			sc.ListenerConfigs = []turn.ListenerConfig{{
				Listener:              &clientListener{Listener: l.Listener, l: st},
				RelayAddressGenerator: gen,
				PermissionHandler:     st.permission,
			}}
		}
		ps, err := turn.NewServer(sc)
		if err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("relay: start %s listener %d: %w", l.Transport, i, err)
		}
		s.pion = append(s.pion, ps)
	}
	return s, nil
}

func (s *Server) newListener(i int, transport metrics.Transport) *listener {
	m := s.m
	var clients *clientSet
	if transport == metrics.TransportUDP {
		clients = newClientSet()
	}
	return &listener{
		clients: clients,
		idx:     i, transport: transport, srv: s,
		input:         m.ClientPacketsInput.For(transport),
		c2pBytes:      m.RelayBytes.For(metrics.ClientToPeer, transport, metrics.PathUser),
		c2pPackets:    m.RelayPackets.For(metrics.ClientToPeer, transport, metrics.PathUser),
		p2cBytes:      m.RelayBytes.For(metrics.PeerToClient, transport, metrics.PathUser),
		p2cPackets:    m.RelayPackets.For(metrics.PeerToClient, transport, metrics.PathUser),
		dropRate:      m.PacketsDropped.For(metrics.DropRateLimit),
		dropSelf:      m.PacketsDropped.For(metrics.DropPeerDenied),
		dropNoPerm:    m.PacketsDropped.For(metrics.DropNoPermission),
		dropGone:      m.PacketsDropped.For(metrics.DropPeerGone),
		dropMalformed: m.PacketsDropped.For(metrics.DropMalformed),
		crossOut:      m.CrossHostBytes.For(metrics.ClientToPeer),
		crossIn:       m.CrossHostBytes.For(metrics.PeerToClient),
		dropOversized: m.PacketsDropped.For(metrics.DropOversized),
		dropBudget:    m.PacketsDropped.For(metrics.DropUnauthBudget),
		dropBackoff:   m.PacketsDropped.For(metrics.DropAuthBackoff),
		dropNoAlloc:   m.PacketsDropped.For(metrics.DropNoAllocation),
		allocActive:   m.AllocationsActive.For(transport),
		allocCreated:  m.AllocationsCreated.For(transport),
		allocDeleted:  m.AllocationsDeleted.For(transport),
	}
}

// Drain makes the node refuse new allocations while existing ones keep
// relaying and refreshing.
func (s *Server) Drain() {
	if !s.draining.Swap(true) {
		s.m.Draining.Set(1)
		s.log.Info("draining: refusing new allocations", "allocations", s.cfg.Table.Count())
	}
}

// Draining reports whether Drain has been called.
func (s *Server) Draining() bool { return s.draining.Load() }

// AllocationCount returns the number of live allocations.
func (s *Server) AllocationCount() int { return s.cfg.Table.Count() }

// Undrain cancels Drain: new allocations are taken again.
func (s *Server) Undrain() {
	if s.draining.Swap(false) {
		s.m.Draining.Set(0)
		s.log.Info("drain cancelled: taking new allocations", "allocations", s.cfg.Table.Count())
	}
}

// Close stops every listener and closes every allocation.
func (s *Server) Close() error {
	s.closing.Store(true)
	var errs []error
	for _, p := range s.pion {
		if err := p.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.reserved.close()
	// pion closes its allocations' sockets later, on its read loops'
	// goroutines, after Close has returned: close them here, so that
	// each one's kernel state is read and removed now, before the caller
	// closes the kernel path (a socket closes once; pion's own Close of it
	// is then a no-op). A call that still comes later finds the Offload
	// closed and does nothing (offload.ErrClosed).
	s.closeRelaySockets()
	s.endRemaining()
	s.logs.flush()
	return errors.Join(errs...)
}

func (l *listener) key(src net.Addr) allocation.Key {
	return allocation.Key{Listener: l.idx, Client: src.String()}
}

// recovered counts a panic in one of our callbacks instead of letting it
// take the node down.
func (l *listener) recovered(where string) {
	if r := recover(); r != nil {
		l.notePanic(where, r)
	}
}

// notePanic counts and logs a recovered panic. The log line is rate-limited:
// a bug that one crafted packet can reach is one a flood can reach.
func (l *listener) notePanic(where string, r any) {
	l.srv.m.HandlerPanics.Inc()
	if l.srv.logs.allow(l.srv.log, "", slog.LevelError, "recovered panic") {
		l.srv.log.Error("recovered panic", "where", where, "panic", fmt.Sprint(r))
	}
}

func (l *listener) auth(ra *turn.RequestAttributes) (userID string, key []byte, ok bool) {
	defer l.recovered("auth")
	userID, key, err := l.srv.cfg.Credentials.Key(ra.Username, ra.Realm)
	if err != nil {
		l.srv.m.AuthFailures.For(authReason(err)).Inc()
		return "", nil, false
	}
	return userID, key, true
}

func authReason(err error) metrics.AuthReason {
	switch {
	case errors.Is(err, allocation.ErrExpired):
		return metrics.AuthExpired
	case errors.Is(err, allocation.ErrBadUsername), errors.Is(err, allocation.ErrBadRealm),
		errors.Is(err, allocation.ErrTooFarAhead):
		return metrics.AuthBadUsername
	case errors.Is(err, allocation.ErrBadPassword):
		return metrics.AuthBadPassword
	default:
		return metrics.AuthUnknownUser
	}
}

func (l *listener) quota(userID, _ string, src net.Addr) (ok bool) {
	defer l.recovered("quota")
	if l.srv.draining.Load() {
		l.srv.m.DrainRefusals.Inc()
		return false
	}
	// Every attempt spends a token, those the quota below refuses too.
	if r := l.srv.cfg.UserAllocRate; r > 0 && !l.srv.rates.allow(userID, r, l.srv.now()) {
		l.srv.m.QuotaRejections.For(metrics.QuotaRate).Inc()
		return false
	}
	switch err := l.srv.cfg.Table.Reserve(l.key(src), userID); {
	case err == nil:
		return true
	case errors.Is(err, allocation.ErrUserQuota):
		l.srv.m.QuotaRejections.For(metrics.QuotaUser).Inc()
	default:
		l.srv.m.QuotaRejections.For(metrics.QuotaTotal).Inc()
	}
	return false
}

// permission is pion's PermissionHandler. The inspector answers denied peers
// with 403 before pion sees them; this is the second line of defence (the
// policy or the fleet changed in between), counted like the first.
func (l *listener) permission(src net.Addr, peer net.IP) bool {
	a, ok := netip.AddrFromSlice(peer)
	if ok && l.srv.peerAllowed(a) {
		return true
	}
	method := metrics.MethodCreatePermission
	if p := l.srv.clientRecord(l.key(src)); p != nil {
		if m, _ := methodLabel(stun.Method(p.method.Load())); m == metrics.MethodChannelBind || m == metrics.MethodConnect {
			method = m
		}
	}
	l.srv.m.PeerDenials.For(method).Inc()
	return false
}

func (l *listener) events() turn.EventHandler {
	s := l.srv
	return turn.EventHandler{
		OnAuth: func(_, _ net.Addr, _, _, _ string, _ string, verdict bool) {
			if !verdict {
				s.m.AuthFailures.For(metrics.AuthBadPassword).Inc()
			}
		},
		OnAllocationCreated: func(src, _ net.Addr, _, userID, _ string, relayAddr net.Addr, _ int) {
			defer l.recovered("allocation created")
			s.cfg.Table.Commit(l.key(src), userID, string(l.transport), relayAddr)
			s.cfg.Table.SetExpiry(l.key(src), s.now().Add(s.grantedLifetime(l.key(src))))
			s.linkClient(l.key(src), relayAddr, src, l.local)
			if l.clients != nil {
				l.clients.add(src)
			}
			l.allocCreated.Inc()
			l.allocActive.Inc()
		},
		OnAllocationDeleted: func(src, _ net.Addr, _, _, _ string) {
			defer l.recovered("allocation deleted")
			if l.group != nil {
				l.group.forget(src)
			}
			s.endSession(l, l.key(src), s.clientRecord(l.key(src)))
			s.unlinkClient(l.key(src))
			if l.clients != nil {
				l.clients.remove(src)
			}
			if c, ok := s.streams.Load(l.key(src)); ok {
				c.(*clientStreamConn).allocationEnded()
			}
		},
		OnAllocationError: func(src, _ net.Addr, _, _ string) {
			// An Allocate that passed the quota check but failed later gives
			// its slot back; for any other error this is a no-op.
			if s.cfg.Table.HasPending() {
				s.cfg.Table.Release(l.key(src))
			}
		},
		OnPermissionCreated: func(_, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
			s.permissionChanged(relay, peer, true)
		},
		OnPermissionDeleted: func(_, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
			s.permissionChanged(relay, peer, false)
		},
		OnChannelCreated: func(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, n uint16) {
			s.channelChanged(relay, peer, n, true)
		},
		OnChannelDeleted: func(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, n uint16) {
			s.channelChanged(relay, peer, n, false)
		},
	}
}
