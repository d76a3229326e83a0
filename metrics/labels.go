package metrics

// Label values. Each label's values are one named string type with its
// constants and a list of all of them: the For methods that pick a series
// of a labelled metric take these types, so a series is named only by a
// constant, and New creates every series of each list at zero. The strings
// are what /metrics, the dashboards, the alert rules and the README show;
// they never change.

// Transport is a client transport a listener speaks (label transport).
type Transport string

// Client transports.
const (
	TransportUDP  Transport = "udp"
	TransportTCP  Transport = "tcp"
	TransportTLS  Transport = "tls"
	TransportDTLS Transport = "dtls"
)

// Transports is the fixed set of client transports a listener can speak.
var Transports = []Transport{TransportUDP, TransportTCP, TransportTLS, TransportDTLS}

// TransportOf returns the Transport spelled s, and false when s is none of
// Transports.
func TransportOf(s string) (Transport, bool) {
	for _, t := range Transports {
		if string(t) == s {
			return t, true
		}
	}
	return "", false
}

// Direction is the direction of relayed traffic (label direction).
type Direction string

// Directions of relayed traffic.
const (
	ClientToPeer Direction = "client_to_peer"
	PeerToClient Direction = "peer_to_client"
)

// Directions is the fixed set of directions.
var Directions = []Direction{ClientToPeer, PeerToClient}

// Path is the path a relayed packet takes (label path): through user
// space, or through the kernel program (offload/).
type Path string

// Paths of relayed packets.
const (
	PathUser   Path = "user"
	PathKernel Path = "kernel"
)

// Paths is the fixed set of paths. Only UDP has the kernel path.
var Paths = []Path{PathUser, PathKernel}

// DropReason is why a packet the node received was not relayed or handled
// (label reason of supernode_packets_dropped_total).
type DropReason string

// Drop reasons.
const (
	DropMalformed  DropReason = "malformed"   // not STUN or ChannelData, or a bad header
	DropOversized  DropReason = "oversized"   // larger than the inbound MTU
	DropRateLimit  DropReason = "rate_limit"  // over --max-bps for its allocation
	DropPeerDenied DropReason = "peer_denied" // to one of the node's own services, not a relay port
	DropPanic      DropReason = "panic"       // handling it panicked; the node recovered
	DropOverflow   DropReason = "overflow"    // a hand-over queue between sockets was full
	// DropNoPermission: from a peer the allocation has no permission for.
	DropNoPermission DropReason = "no_permission"
	// DropPeerGone: to a relay port of this node whose allocation has ended
	// (normal at hang-up: the other leg's last packets).
	DropPeerGone DropReason = "peer_gone"
	// DropRcvbuf: the kernel dropped it because a listener socket's receive
	// buffer was full (read from the socket at scrape time).
	DropRcvbuf DropReason = "rcvbuf"
	// DropUnauthBudget: a request without MESSAGE-INTEGRITY over its source
	// IP's budget (--unauth-rate).
	DropUnauthBudget DropReason = "unauth_budget"
	// DropAuthBackoff: a request from an IP or for a username in backoff
	// after repeated failed MESSAGE-INTEGRITY checks.
	DropAuthBackoff DropReason = "auth_backoff"
	// DropNoAllocation: ChannelData or an indication from a UDP client
	// without an allocation on that socket.
	DropNoAllocation DropReason = "no_allocation"
	// DropOffloadError: the kernel path dropped it after a helper failed
	// halfway through rewriting it (should stay zero).
	DropOffloadError DropReason = "offload_error"
)

// DropReasons is the fixed set of drop reasons.
var DropReasons = []DropReason{DropMalformed, DropOversized, DropRateLimit, DropPeerDenied, DropPanic, DropOverflow,
	DropNoPermission, DropPeerGone, DropRcvbuf, DropUnauthBudget, DropAuthBackoff, DropNoAllocation, DropOffloadError}

// PassReason is why the kernel path left a packet of one of its channels to
// user space (label reason of supernode_offload_passed_total).
type PassReason string

// Pass reasons.
const (
	PassMTU      PassReason = "mtu"       // too big for the route's MTU once rewritten
	PassRoute    PassReason = "route"     // a local destination, reached other than over loopback
	PassNoServer PassReason = "no_server" // a wildcard listener's address not learned yet from the client
	PassShape    PassReason = "shape"     // IP options, fragments, GSO, a client datagram of 1600 bytes or more, a bad IP header, lengths that disagree, a frame for another host
)

// PassReasons is the fixed set of pass reasons.
var PassReasons = []PassReason{PassMTU, PassRoute, PassNoServer, PassShape}

// BindFailure is why a channel stayed in user space instead of the kernel
// path (label reason of supernode_offload_bind_failures_total).
type BindFailure string

// Bind failures.
const (
	BindFull   BindFailure = "full"   // the kernel's maps were full
	BindFamily BindFailure = "family" // client and relayed address of different families
	BindRoute  BindFailure = "route"  // no route to the peer or the client (unreachable, blackhole, broadcast)
	BindError  BindFailure = "error"  // any other failure to install it
)

// BindFailures is the fixed set of bind failures.
var BindFailures = []BindFailure{BindFull, BindFamily, BindRoute, BindError}

// Method is a STUN/TURN request method (label method).
type Method string

// Request methods.
const (
	MethodBinding          Method = "binding"
	MethodAllocate         Method = "allocate"
	MethodRefresh          Method = "refresh"
	MethodCreatePermission Method = "create_permission"
	MethodChannelBind      Method = "channel_bind"
	MethodConnect          Method = "connect"
	MethodConnectionBind   Method = "connection_bind"
)

// Methods are the request methods counted in supernode_requests_total.
var Methods = []Method{MethodBinding, MethodAllocate, MethodRefresh, MethodCreatePermission, MethodChannelBind,
	MethodConnect, MethodConnectionBind}

// PeerMethods are the methods that name a peer, counted in
// supernode_peer_denials_total.
var PeerMethods = []Method{MethodCreatePermission, MethodChannelBind, MethodConnect}

// Result is the result of a request, from the response the node sent
// (label result of supernode_requests_total).
type Result string

// Request results.
const (
	ResultSuccess      Result = "success"
	ResultUnauthorized Result = "unauthorized"  // 401
	ResultForbidden    Result = "forbidden"     // 403
	ResultStaleNonce   Result = "stale_nonce"   // 438
	ResultBadRequest   Result = "bad_request"   // 400
	ResultMismatch     Result = "mismatch"      // 437 Allocation Mismatch
	ResultQuota        Result = "quota"         // 486 Allocation Quota Reached
	ResultCapacity     Result = "capacity"      // 508 Insufficient Capacity
	ResultTryAlternate Result = "try_alternate" // 300
	ResultOtherError   Result = "other_error"   // any other error code
)

// Results is the fixed set of request results.
var Results = []Result{ResultSuccess, ResultUnauthorized, ResultForbidden, ResultStaleNonce, ResultBadRequest,
	ResultMismatch, ResultQuota, ResultCapacity, ResultTryAlternate, ResultOtherError}

// AuthReason is why authentication failed (label reason of
// supernode_auth_failures_total).
type AuthReason string

// Auth failure reasons.
const (
	AuthUnknownUser AuthReason = "unknown_user"
	AuthExpired     AuthReason = "expired"
	AuthBadUsername AuthReason = "bad_username"
	AuthBadPassword AuthReason = "bad_password"
	AuthWrongOwner  AuthReason = "wrong_owner" // a request on another user's allocation
)

// AuthReasons is the fixed set of authentication failure reasons.
var AuthReasons = []AuthReason{AuthUnknownUser, AuthExpired, AuthBadUsername, AuthBadPassword, AuthWrongOwner}

// Quota is a quota an Allocate was refused by (label quota).
type Quota string

// Quota kinds.
const (
	QuotaUser  Quota = "user"
	QuotaTotal Quota = "total"
	QuotaRate  Quota = "rate" // Allocate attempts per user id per second (--user-alloc-rate)
)

// Quotas is the fixed set of quotas.
var Quotas = []Quota{QuotaUser, QuotaTotal, QuotaRate}

// Limit is a per-allocation limit (label limit of
// supernode_limit_rejections_total).
type Limit string

// Per-allocation limits.
const (
	LimitPermissions  Limit = "permissions"   // --max-permissions
	LimitChannels     Limit = "channels"      // --max-channels
	LimitRequestPeers Limit = "request_peers" // peer addresses in one CreatePermission
)

// Limits is the fixed set of per-allocation limits.
var Limits = []Limit{LimitPermissions, LimitChannels, LimitRequestPeers}

// Scope is what an auth backoff after failed checks is keyed by (label
// scope of supernode_auth_backoffs_total).
type Scope string

// Auth backoff scopes.
const (
	ScopeIP   Scope = "ip"
	ScopeUser Scope = "user"
)

// Scopes is the fixed set of auth backoff scopes.
var Scopes = []Scope{ScopeIP, ScopeUser}

// CloseReason is why the node closed a TCP, TLS or DTLS client connection
// (label reason of supernode_connections_closed_total).
type CloseReason string

// Connection close reasons.
const (
	CloseIdleTimeout         CloseReason = "idle_timeout"          // nothing received for --idle-timeout (at most 30s without an allocation)
	CloseFirstMessageTimeout CloseReason = "first_message_timeout" // no first message by --first-message-timeout
	CloseMalformed           CloseReason = "malformed"             // bytes that are neither STUN nor ChannelData
	CloseOversized           CloseReason = "oversized"             // a frame longer than the node takes
	ClosePeerClosed          CloseReason = "peer_closed"           // the client closed it
	ClosePeerReset           CloseReason = "peer_reset"            // the client reset it
	CloseLimit               CloseReason = "limit"                 // the per-IP cap (--max-conns-per-ip)
	ClosePendingLimit        CloseReason = "pending_limit"         // the node-wide cap on connections without an allocation (--max-pending-conns)
	CloseAuthTimeout         CloseReason = "auth_timeout"          // no allocation by --auth-timeout
)

// CloseReasons is the fixed set of connection close reasons.
var CloseReasons = []CloseReason{CloseIdleTimeout, CloseFirstMessageTimeout, CloseMalformed, CloseOversized,
	ClosePeerClosed, ClosePeerReset, CloseLimit, ClosePendingLimit, CloseAuthTimeout}

// MemberState is the state of a fleet member (label state of
// supernode_fleet_members).
type MemberState string

// Member states.
const (
	MemberAlive    MemberState = "alive" // alive and not draining
	MemberDraining MemberState = "draining"
)

// MemberStates is the fixed set of member states.
var MemberStates = []MemberState{MemberAlive, MemberDraining}

// PlacementResult is where a call placed by /v1/ice-servers went (label
// result of supernode_fleet_placements_total): this node (local), another
// member (remote), or nobody eligible so this node serves it (fallback).
type PlacementResult string

// Placement results.
const (
	PlacementLocal    PlacementResult = "local"
	PlacementRemote   PlacementResult = "remote"
	PlacementFallback PlacementResult = "fallback"
)

// PlacementResults is the fixed set of placement results.
var PlacementResults = []PlacementResult{PlacementLocal, PlacementRemote, PlacementFallback}
