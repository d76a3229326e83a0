// Package relay is supernode's data plane: it serves STUN/TURN on the
// listeners it is handed, with pion/turn doing the protocol work and this
// package adding what a production relay needs around it — peer-address
// policy, quotas, drain, per-packet counting, rate limits and hardening
// against hostile input.
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
	"github.com/supernode/supernode/offload"
)

// Configuration errors.
var (
	ErrNoListeners  = errors.New("relay: no listeners")
	ErrBadPortRange = errors.New("relay: --min-port must be between 1 and --max-port")
	ErrNoRelayAddr  = errors.New("relay: at least one --relay-ip is required")
	ErrMissingField = errors.New("relay: required config field missing")
	ErrBadTransport = errors.New("relay: listener transport must be udp, tcp, tls or dtls")
	ErrBadLimit     = errors.New("relay: bad limit")
)

// Default per-allocation limits. A browser holds a permission per remote
// candidate IP and a channel per remote candidate it checks: a handful each.
const (
	DefaultMaxPermissions  = 128
	DefaultMaxChannels     = 64
	DefaultMaxRequestPeers = 16
)

// Listener is one socket handed to the server.
type Listener struct {
	// Transport is udp, tcp, tls or dtls.
	Transport string
	// PacketConn serves a udp listener.
	PacketConn net.PacketConn
	// Listener serves tcp, tls and dtls (already wrapped in TLS/DTLS).
	Listener net.Listener
}

// Config configures a Server. Zero values are documented per field.
type Config struct {
	Listeners []Listener

	// Realm is the long-term credential realm. Required.
	Realm string
	// Credentials verifies users and REST credentials. Required.
	Credentials *allocation.Store
	// Table holds live allocations and enforces quotas. Required.
	Table *allocation.Table
	// Policy decides which peers are reachable. Required.
	Policy *Policy
	// Metrics receives every count. Required.
	Metrics *metrics.Metrics
	// Logger; nil discards.
	Logger *slog.Logger

	// RelayIPs are bound by relay sockets, at most one per address family.
	RelayIPs []netip.Addr
	// ExternalIPs are advertised in XOR-RELAYED-ADDRESS instead of the relay
	// IP of the same family (1:1 NAT). Optional.
	ExternalIPs []netip.Addr
	// LocalIPs are the host's other addresses. A peer there is refused
	// unless an --allow-peer rule names that exact address. Optional.
	LocalIPs []netip.Addr
	// MinPort and MaxPort bound relay ports, inclusive. Zero means 49152..65535.
	MinPort, MaxPort int

	// MaxBPS limits each allocation, per direction, in bits per second;
	// excess packets are dropped and counted. Zero is unlimited.
	MaxBPS int64
	// AllocationLifetime is the default allocation lifetime; zero is 10m.
	AllocationLifetime time.Duration
	// PermissionLifetime is how long a permission lives unless refreshed;
	// zero is RFC 8656's 300 s. ChannelLifetime is the same for a channel
	// binding; zero is 600 s.
	PermissionLifetime, ChannelLifetime time.Duration
	// IdleTimeout closes a TCP/TLS/DTLS client connection that sends nothing
	// for this long; zero is 10m.
	IdleTimeout time.Duration
	// FirstMessageTimeout closes a client connection that has not sent one
	// complete STUN message (including any TLS handshake) in this time;
	// zero is 10s.
	FirstMessageTimeout time.Duration
	// WriteTimeout bounds one write to a stalled client connection; zero is 10s.
	WriteTimeout time.Duration
	// MaxConnsPerIP bounds concurrent TCP/TLS/DTLS client connections from
	// one IP address that hold no allocation yet; more are closed on accept
	// and counted. A connection stops counting once an Allocate (or an RFC
	// 6062 ConnectionBind) on it succeeds. Zero is unlimited.
	MaxConnsPerIP int
	// ConnectTimeout bounds an RFC 6062 Connect to a peer; zero is 30s (the
	// RFC's minimum).
	ConnectTimeout time.Duration

	// AuthTimeout is the absolute deadline, from accept, by which a
	// TCP/TLS/DTLS client connection must hold an allocation (or be bound
	// as an RFC 6062 data connection by ConnectionBind); neither bytes of
	// an unfinished frame nor complete requests that allocate nothing
	// (Binding, failed Allocates) extend it. From then on IdleTimeout
	// applies; when the allocation is deleted while the connection stays
	// open, the connection is pending again with a new deadline this far
	// ahead. Zero is 30s.
	AuthTimeout time.Duration
	// MaxPendingConns bounds TCP/TLS/DTLS client connections that hold no
	// allocation yet, node-wide; more are closed on accept and counted.
	// Zero is unlimited.
	MaxPendingConns int

	// MaxPermissions bounds the peer IPs one allocation holds permissions
	// for (RFC 8656 §9); a request past it gets 508. Zero is 128.
	MaxPermissions int
	// MaxChannels bounds the channels bound on one allocation (RFC 8656
	// §12); a ChannelBind past it gets 508. Zero is 64.
	MaxChannels int
	// MaxRequestPeers bounds the XOR-PEER-ADDRESS attributes in one
	// CreatePermission; more get 400. Zero is 16.
	MaxRequestPeers int

	// UserAllocRate bounds new-allocation attempts per user id, in
	// Allocates per second, with a burst of five seconds' worth; more get
	// 486. Zero is unlimited.
	UserAllocRate float64
	// UnauthRate is each source's budget (an IPv4 address, an IPv6 /64) of
	// unauthenticated requests — Binding, requests without
	// MESSAGE-INTEGRITY, and requests whose nonce the node did not give that
	// address — per second, with a burst of twice that; the node as a whole
	// takes 50 times that. More are dropped and counted. Zero is unlimited.
	UnauthRate float64

	// AuthFailures is how many failed MESSAGE-INTEGRITY checks from one IP,
	// or for one username, within AuthFailWindow start a backoff during
	// which their requests are dropped. Zero is 10; negative disables.
	AuthFailures int
	// AuthFailWindow is the window AuthFailures are counted in; zero is 1m.
	AuthFailWindow time.Duration
	// AuthBackoff is the first backoff; each further one while failures
	// continue doubles it, up to AuthBackoffMax. Zero is 5s.
	AuthBackoff time.Duration
	// AuthBackoffMax caps the backoff; zero is 5m.
	AuthBackoffMax time.Duration

	// NonceLifetime is how long a NONCE the node hands out stays valid
	// (it is also bound to the client's IP); zero is 10m.
	NonceLifetime time.Duration
	// Offload is the kernel data path, kept in step with pion's events:
	// UDP allocations' channels with a live permission are relayed by it.
	// Nil: user space only.
	Offload *offload.Offload

	// Now is the clock of nonces, budgets and backoffs; nil is time.Now.
	Now func() time.Time

	// LogSessions writes one info line per ended allocation (its session
	// record: user, call, transport, duration, traffic, why it ended).
	// False writes none.
	LogSessions bool

	// Redirect, when set, is asked about every authenticated Allocate that
	// would create a new allocation, draining or not: user is the verified
	// username, src the client and transport its listener's. A true answer
	// sends the client a signed 300 Try Alternate naming alt (RFC 8656 §7.2,
	// RFC 8489 §10) instead of allocating here (or refusing it with 508
	// while draining). It runs on the socket's read loop: it must not block.
	// Nil serves every Allocate here.
	Redirect func(user string, src net.Addr, transport string) (alt Alternate, ok bool)
}

// Alternate is where Config.Redirect sends a client.
type Alternate struct {
	// Server is sent as ALTERNATE-SERVER: the alternate's listener for the
	// client's transport, in the client's address family.
	Server netip.AddrPort
	// Domain, when set, is sent as ALTERNATE-DOMAIN on TLS and DTLS
	// listeners (RFC 8489 §14.16): the name the client checks the
	// alternate's certificate against. Without it the client checks it
	// against the name it used for this server.
	Domain string
}

func (c *Config) validate() error {
	if len(c.Listeners) == 0 {
		return ErrNoListeners
	}
	for _, l := range c.Listeners {
		switch l.Transport {
		case "udp":
			if l.PacketConn == nil {
				return fmt.Errorf("%w: udp listener without a socket", ErrMissingField)
			}
		case "tcp", "tls", "dtls":
			if l.Listener == nil {
				return fmt.Errorf("%w: %s listener without a socket", ErrMissingField, l.Transport)
			}
		default:
			return fmt.Errorf("%w: %q", ErrBadTransport, l.Transport)
		}
	}
	switch {
	case c.Realm == "":
		return fmt.Errorf("%w: Realm", ErrMissingField)
	case c.Credentials == nil:
		return fmt.Errorf("%w: Credentials", ErrMissingField)
	case c.Table == nil:
		return fmt.Errorf("%w: Table", ErrMissingField)
	case c.Policy == nil:
		return fmt.Errorf("%w: Policy", ErrMissingField)
	case c.Metrics == nil:
		return fmt.Errorf("%w: Metrics", ErrMissingField)
	case len(c.RelayIPs) == 0:
		return ErrNoRelayAddr
	}
	if c.MinPort == 0 && c.MaxPort == 0 {
		c.MinPort, c.MaxPort = 49152, 65535
	}
	if c.MinPort < 1 || c.MaxPort > 65535 || c.MinPort > c.MaxPort {
		return fmt.Errorf("%w (got %d..%d)", ErrBadPortRange, c.MinPort, c.MaxPort)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.AllocationLifetime == 0 {
		c.AllocationLifetime = 10 * time.Minute
	}
	if c.PermissionLifetime == 0 {
		c.PermissionLifetime = 300 * time.Second
	}
	if c.ChannelLifetime == 0 {
		c.ChannelLifetime = 600 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.FirstMessageTimeout == 0 {
		c.FirstMessageTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 30 * time.Second
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = 30 * time.Second
	}
	if c.MaxPermissions == 0 {
		c.MaxPermissions = DefaultMaxPermissions
	}
	if c.MaxChannels == 0 {
		c.MaxChannels = DefaultMaxChannels
	}
	if c.MaxRequestPeers == 0 {
		c.MaxRequestPeers = DefaultMaxRequestPeers
	}
	if c.MaxPermissions < 0 || c.MaxChannels < 0 || c.MaxRequestPeers < 0 || c.MaxPendingConns < 0 ||
		c.UserAllocRate < 0 || c.UnauthRate < 0 {
		return fmt.Errorf("%w: limits must not be negative", ErrBadLimit)
	}
	if c.AuthFailures == 0 {
		c.AuthFailures = 10
	}
	if c.AuthFailWindow == 0 {
		c.AuthFailWindow = time.Minute
	}
	if c.AuthBackoff == 0 {
		c.AuthBackoff = 5 * time.Second
	}
	if c.AuthBackoffMax == 0 {
		c.AuthBackoffMax = 5 * time.Minute
	}
	if c.NonceLifetime == 0 {
		c.NonceLifetime = 10 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

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
	pools    portPools // free relay ports; see portpool.go
	rates    userRates // Allocates per user id; see allocrate.go
	conns    connLimit
	permMu   sync.Mutex
	perms    map[string]*permits // by relayed address
	byClient map[allocation.Key]*permits
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
	transport string
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
	s := &Server{cfg: cfg, m: cfg.Metrics, log: cfg.Logger, perms: map[string]*permits{}, byClient: map[allocation.Key]*permits{},
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
		st := s.newListener(i, l.Transport)
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

func (s *Server) newListener(i int, transport string) *listener {
	m := s.m
	var clients *clientSet
	if transport == "udp" {
		clients = newClientSet()
	}
	return &listener{
		clients: clients,
		idx:     i, transport: transport, srv: s,
		input:         m.ClientPacketsInput.WithLabelValues(transport),
		c2pBytes:      m.RelayBytes.WithLabelValues(metrics.ClientToPeer, transport, metrics.PathUser),
		c2pPackets:    m.RelayPackets.WithLabelValues(metrics.ClientToPeer, transport, metrics.PathUser),
		p2cBytes:      m.RelayBytes.WithLabelValues(metrics.PeerToClient, transport, metrics.PathUser),
		p2cPackets:    m.RelayPackets.WithLabelValues(metrics.PeerToClient, transport, metrics.PathUser),
		dropRate:      m.PacketsDropped.WithLabelValues(metrics.DropRateLimit),
		dropSelf:      m.PacketsDropped.WithLabelValues(metrics.DropPeerDenied),
		dropNoPerm:    m.PacketsDropped.WithLabelValues(metrics.DropNoPermission),
		dropGone:      m.PacketsDropped.WithLabelValues(metrics.DropPeerGone),
		dropMalformed: m.PacketsDropped.WithLabelValues(metrics.DropMalformed),
		crossOut:      m.CrossHostBytes.WithLabelValues(metrics.ClientToPeer),
		crossIn:       m.CrossHostBytes.WithLabelValues(metrics.PeerToClient),
		dropOversized: m.PacketsDropped.WithLabelValues(metrics.DropOversized),
		dropBudget:    m.PacketsDropped.WithLabelValues(metrics.DropUnauthBudget),
		dropBackoff:   m.PacketsDropped.WithLabelValues(metrics.DropAuthBackoff),
		dropNoAlloc:   m.PacketsDropped.WithLabelValues(metrics.DropNoAllocation),
		allocActive:   m.AllocationsActive.WithLabelValues(transport),
		allocCreated:  m.AllocationsCreated.WithLabelValues(transport),
		allocDeleted:  m.AllocationsDeleted.WithLabelValues(transport),
	}
}

// SetFleetPeers replaces the relay addresses of the other fleet members.
// Peers there are allowed whatever the peer policy says of their range
// (fleet members may relay to each other on private addresses without
// opening whole private ranges), and the bytes relayed to and from them
// are counted as cross-host traffic.
//
// When members share a host, a member's relay address can also be one of
// this node's own addresses; there only the member's relay port range is
// opened, never the address's other ports.
func (s *Server) SetFleetPeers(peers []FleetPeer) {
	if len(peers) == 0 {
		s.fleet.Store(nil)
		return
	}
	m := make(map[netip.Addr][]FleetPeer, len(peers))
	for _, p := range peers {
		p.Addr = p.Addr.Unmap()
		m[p.Addr] = append(m[p.Addr], p)
	}
	s.fleet.Store(&m)
}

// FleetPeer is another fleet member's relay address and relay port range.
type FleetPeer struct {
	Addr             netip.Addr
	MinPort, MaxPort int
}

// fleetMember returns the fleet members on address a, found as itself or
// by the IPv4 address it carries (embeddedIPv4), like the node's own
// addresses in selfLookup.
func (s *Server) fleetMember(a netip.Addr) ([]FleetPeer, bool) {
	m := s.fleet.Load()
	if m == nil {
		return nil, false
	}
	a = a.Unmap()
	if ps, ok := (*m)[a]; ok {
		return ps, true
	}
	if v4, ok := embeddedIPv4(a); ok {
		ps, ok := (*m)[v4]
		return ps, ok
	}
	return nil, false
}

// fleetPeer reports whether a is another fleet member's relay address.
func (s *Server) fleetPeer(a netip.Addr) bool {
	_, ok := s.fleetMember(a)
	return ok
}

// fleetPeerPort reports whether a:port is in a fleet member's relay range.
func (s *Server) fleetPeerPort(a netip.Addr, port int) bool {
	ps, _ := s.fleetMember(a)
	for _, p := range ps {
		if port >= p.MinPort && port <= p.MaxPort {
			return true
		}
	}
	return false
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
	// pion closes its allocations' sockets later, on its read loops'
	// goroutines, after Close has returned: close them here, so that
	// their kernel state is gone before the caller closes the kernel path
	// (a socket closes once; pion's own Close of it is then a no-op).
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
		l.srv.m.AuthFailures.WithLabelValues(authReason(err)).Inc()
		return "", nil, false
	}
	return userID, key, true
}

func authReason(err error) string {
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
		l.srv.m.QuotaRejections.WithLabelValues(metrics.QuotaRate).Inc()
		return false
	}
	switch err := l.srv.cfg.Table.Reserve(l.key(src), userID); {
	case err == nil:
		return true
	case errors.Is(err, allocation.ErrUserQuota):
		l.srv.m.QuotaRejections.WithLabelValues(metrics.QuotaUser).Inc()
	default:
		l.srv.m.QuotaRejections.WithLabelValues(metrics.QuotaTotal).Inc()
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
	method := "create_permission"
	if p := l.srv.clientPermits(l.key(src)); p != nil {
		if m := methodLabel(stun.Method(p.method.Load())); m == "channel_bind" || m == "connect" {
			method = m
		}
	}
	l.srv.m.PeerDenials.WithLabelValues(method).Inc()
	return false
}

func (l *listener) events() turn.EventHandler {
	s := l.srv
	return turn.EventHandler{
		OnAuth: func(_, _ net.Addr, _, _, _ string, _ string, verdict bool) {
			if !verdict {
				s.m.AuthFailures.WithLabelValues(metrics.AuthBadPassword).Inc()
			}
		},
		OnAllocationCreated: func(src, _ net.Addr, _, userID, _ string, relayAddr net.Addr, _ int) {
			defer l.recovered("allocation created")
			s.cfg.Table.Commit(l.key(src), userID, l.transport, relayAddr)
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
			s.endSession(l, l.key(src), s.clientPermits(l.key(src)))
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
