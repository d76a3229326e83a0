package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

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

// Default per-allocation limits, what a zero Config field means. A browser
// holds a permission per remote candidate IP and a channel per remote
// candidate it checks: a handful each.
const (
	DefaultMaxPermissions  = 128
	DefaultMaxChannels     = 64
	DefaultMaxRequestPeers = 16
)

// Recommended limits for the Config fields whose zero means unlimited: the
// daemon's flags default to them, so that no one credential holder can
// take the node (see the README's "Abuse and limits").
const (
	// DefaultMaxBPS: 20 Mbit/s per allocation and direction is several
	// times an HD video call with simulcast, yet bounds what one allocation
	// can push through the node as an open UDP proxy.
	DefaultMaxBPS = 20_000_000
	// DefaultUserAllocRate: new allocations per second per user id; a
	// browser makes a few per call.
	DefaultUserAllocRate = 10
	// DefaultUnauthRate: unauthenticated requests per second per source IP;
	// a client sends two or three per call (Binding, the first Allocate).
	DefaultUnauthRate = 200
	// DefaultMaxConnsPerIP and DefaultMaxPendingConns bound the TCP, TLS
	// and DTLS client connections that hold no allocation yet, per source
	// (an IPv4 address, an IPv6 /64) and on the node.
	DefaultMaxConnsPerIP   = 256
	DefaultMaxPendingConns = 4096
	// DefaultUDPRcvbuf: 4 MiB holds about 20 ms of a 1 Gbit/s burst of
	// media (the kernel's default 208 KiB holds about 1 ms); for
	// ListenUDPAndTCP.
	DefaultUDPRcvbuf = 4 << 20
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
	// Listeners are the sockets to serve; at least one (ErrNoListeners).
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

	// Now is the clock of nonces, budgets, backoffs, relay-port and
	// lifetime bookkeeping and the MaxBPS token buckets; nil is time.Now.
	// (Stream connections' timeouts are socket deadlines, on the runtime's
	// clock; tests run them in a testing/synctest bubble.)
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
