package relay

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/metrics"
)

// Wire constants (RFC 8489 §5, RFC 8656 §12).
const (
	stunHeaderSize   = 20
	magicCookie      = 0x2112A442
	chanHeaderSize   = 4
	minChannelNumber = 0x4000
	// maxChannelNumber is RFC 5766's upper bound. RFC 8656 narrowed the range
	// to 0x4FFF, but clients still use the old one (turnutils_uclient picks
	// channels up to 0x7FFF) and pion accepts them, so the node does too.
	maxChannelNumber = 0x7FFF
	attrErrorCode    = 0x0009
	attrXORPeerAddr  = 0x0012
	protoTCP         = 6 // REQUESTED-TRANSPORT value for TCP (RFC 6062)
	// maxMessageSize is the largest STUN message or ChannelData frame the
	// node accepts from a client: pion's inbound MTU.
	maxMessageSize = 1600
)

// replier sends a response to the client a message came from. The client
// connection wrappers implement it, so the packet path builds no closure.
type replier interface {
	reply(b []byte, to net.Addr) error
}

// classify checks the header of one client message (a whole datagram, or
// one frame cut from a stream) and says whether it is well formed.
func classify(b []byte) (isSTUN, ok bool) {
	if len(b) < chanHeaderSize {
		return false, false
	}
	switch b[0] >> 6 {
	case 0: // STUN: RFC 8489 §5 header
		if len(b) < stunHeaderSize || len(b)%4 != 0 ||
			binary.BigEndian.Uint32(b[4:8]) != magicCookie ||
			int(binary.BigEndian.Uint16(b[2:4])) != len(b)-stunHeaderSize {
			return true, false
		}
		return true, true
	case 1: // ChannelData: RFC 8656 §12.4
		ch := binary.BigEndian.Uint16(b[0:2])
		if ch < minChannelNumber || ch > maxChannelNumber ||
			int(binary.BigEndian.Uint16(b[2:4])) > len(b)-chanHeaderSize {
			return false, false
		}
		return false, true
	}
	return false, false
}

// inspect runs on every message from a client before pion sees it. It
// returns false when the message was consumed here: dropped as malformed,
// or answered (403 for a denied peer, 508 while draining).
func (l *listener) inspect(b []byte, src net.Addr, r replier) (pass bool) {
	defer func() {
		if r := recover(); r != nil {
			l.srv.m.PacketsDropped.WithLabelValues(metrics.DropPanic).Inc()
			l.notePanic("inspect", r)
			pass = false
		}
	}()
	isSTUN, ok := classify(b)
	if !ok {
		l.dropMalformed.Inc()
		return false
	}
	l.input.Inc()
	if !isSTUN {
		return true
	}
	var t stun.MessageType
	t.ReadValue(binary.BigEndian.Uint16(b[0:2]))
	if t.Class != stun.ClassRequest || t.Method == stun.MethodBinding {
		return true
	}
	q := &request{l: l, method: t.Method, src: src, r: r, m: &stun.Message{Raw: append([]byte(nil), b...)}}
	if err := q.m.Decode(); err != nil {
		return true // pion answers 400
	}
	if l.srv.cfg.Credentials.Rotating() && q.m.Contains(stun.AttrMessageIntegrity) {
		q.verify() // tells the auth callback which secret this username uses
	}
	datagram := l.transport == "udp" || l.transport == "dtls"
	switch t.Method {
	case stun.MethodConnect, stun.MethodConnectionBind:
		// RFC 6062 §5: TCP relaying needs a TCP or TLS control connection.
		// Pion would dial the peer inside this socket's read loop, stalling
		// every client on it for up to the connect timeout.
		if datagram {
			return q.refuseAuthenticated(stun.CodeBadRequest)
		}
		if t.Method == stun.MethodConnect {
			return q.checkAllocation() && q.checkPeers()
		}
	case stun.MethodCreatePermission, stun.MethodChannelBind:
		return q.checkAllocation() && q.checkPeers()
	case stun.MethodRefresh:
		return q.checkAllocation()
	case stun.MethodAllocate:
		if l.srv.cfg.Redirect != nil && !q.checkRedirect() {
			return false // another node takes it (also while draining)
		}
		if l.srv.draining.Load() {
			return q.refuseWhileDraining()
		}
		// RFC 6062 §5.1: a TCP allocation requested over UDP or DTLS gets 400.
		if v, err := q.m.Get(stun.AttrRequestedTransport); datagram && err == nil && len(v) > 0 && v[0] == protoTCP {
			return q.refuseAuthenticated(stun.CodeBadRequest)
		}
		if !l.srv.addrs.dualStack() {
			return q.checkFamily()
		}
	}
	return true
}

// request is one decoded client request being inspected; its credentials
// are verified at most once, and only when a check needs them.
type request struct {
	l        *listener
	method   stun.Method
	src      net.Addr
	r        replier
	m        *stun.Message
	verified bool
	user     string
	key      []byte
	err      error
}

func (q *request) verify() (user string, key []byte, err error) {
	if !q.verified {
		q.verified = true
		if !q.m.Contains(stun.AttrMessageIntegrity) {
			q.err = allocation.ErrBadPassword
		} else {
			q.user, q.key, q.err = q.l.srv.cfg.Credentials.Verify(q.m)
		}
	}
	return q.user, q.key, q.err
}

// refuseAuthenticated answers an authenticated request with code; an
// unauthenticated one goes to pion, which challenges it with 401 first.
func (q *request) refuseAuthenticated(code stun.ErrorCode) bool {
	if _, _, err := q.verify(); err != nil {
		return true
	}
	q.refuse(code)
	return false
}

// refuse answers with an error code, signed when the request verified.
func (q *request) refuse(code stun.ErrorCode) {
	_, key, _ := q.verify()
	_ = q.r.reply(buildError(q.m.TransactionID, q.method, code, key), q.src)
}

// checkFamily answers 440 Address Family not Supported (RFC 6156 §4.2) to an
// authenticated Allocate whose REQUESTED-ADDRESS-FAMILY has no relay IP here.
func (q *request) checkFamily() bool {
	v, err := q.m.Get(stun.AttrRequestedAddressFamily)
	if err != nil || len(v) < 1 {
		return true
	}
	network := "udp4"
	if v[0] == 0x02 {
		network = "udp6"
	} else if v[0] != 0x01 {
		return true // pion answers unknown families with 440 itself
	}
	if _, _, err := q.l.srv.addrs.forNetwork(network); err == nil {
		return true
	}
	if _, _, err := q.verify(); err != nil {
		return true // unauthenticated: pion challenges with 401
	}
	q.refuse(stun.CodeAddrFamilyNotSupported)
	return false
}

// checkAllocation answers 437 Allocation Mismatch (RFC 8656 §7.3, §9.2,
// §11.2) to an authenticated request on a 5-tuple that has no allocation, or
// whose allocation belongs to another user: an allocation can only be used
// by the user that created it. Pion silently drops such requests, which
// leaves the client retransmitting until it times out.
func (q *request) checkAllocation() bool {
	owner, ok := q.l.srv.cfg.Table.Owner(q.l.key(q.src))
	user, _, err := q.verify()
	if err != nil {
		return true // pion challenges with 401
	}
	if ok && owner == user {
		return true
	}
	if ok {
		q.l.srv.m.AuthFailures.WithLabelValues(metrics.AuthWrongOwner).Inc()
	}
	q.refuse(stun.CodeAllocMismatch)
	return false
}

// checkPeers answers 403 Forbidden when any XOR-PEER-ADDRESS of an
// authenticated request is refused by the peer policy (RFC 8656 §9.1: the
// server MAY refuse a permission, and SHOULD then answer 403).
func (q *request) checkPeers() bool {
	denied := false
	for _, a := range q.m.Attributes {
		if a.Type != attrXORPeerAddr {
			continue
		}
		ip, port, ok := decodeXORAddr(a.Value, q.m.TransactionID)
		if !ok {
			return true // pion answers 400
		}
		if !q.l.srv.peerAllowed(ip) ||
			(q.method == stun.MethodConnect && !q.l.srv.peerPortAllowed(ip.AsSlice(), port, true)) {
			denied = true
		}
	}
	if !denied {
		return true
	}
	if _, _, err := q.verify(); err != nil {
		return true // unauthenticated: pion challenges with 401
	}
	q.l.srv.m.PeerDenials.WithLabelValues(methodLabel(q.method)).Inc()
	q.refuse(stun.CodeForbidden)
	return false
}

// refuseWhileDraining answers a new authenticated Allocate with a signed 508
// Insufficient Capacity so the client moves to another relay. A retransmitted Allocate for an
// allocation that already exists goes through (pion answers from its cache).
func (q *request) refuseWhileDraining() bool {
	if q.l.srv.cfg.Table.Has(q.l.key(q.src)) {
		return true
	}
	if _, _, err := q.verify(); err != nil {
		// Let pion challenge first: clients (pion's among them) expect the
		// first, unauthenticated Allocate to be answered with a nonce.
		return true
	}
	q.l.srv.m.DrainRefusals.Inc()
	q.refuse(stun.CodeInsufficientCapacity)
	return false
}

// checkRedirect answers a new authenticated Allocate that Config.Redirect
// places elsewhere with a signed 300 Try Alternate and ALTERNATE-SERVER.
// A retransmitted Allocate for an allocation that exists here goes through.
func (q *request) checkRedirect() bool {
	if q.l.srv.cfg.Table.Has(q.l.key(q.src)) {
		return true
	}
	user, key, err := q.verify()
	if err != nil {
		return true // pion challenges with 401 first
	}
	alt, ok := q.l.srv.cfg.Redirect(user, q.src, q.l.transport)
	if !ok {
		return true
	}
	attrs := []stun.Setter{&stun.AlternateServer{IP: alt.Server.Addr().AsSlice(), Port: int(alt.Server.Port())}}
	if alt.Domain != "" && (q.l.transport == "tls" || q.l.transport == "dtls") {
		// RFC 8489 §14.16: only where the client verifies a certificate.
		attrs = append(attrs, alternateDomain(alt.Domain))
	}
	_ = q.r.reply(buildError(q.m.TransactionID, q.method, stun.CodeTryAlternate, key, attrs...), q.src)
	return false
}

// alternateDomain is an ALTERNATE-DOMAIN attribute.
type alternateDomain string

func (d alternateDomain) AddTo(m *stun.Message) error {
	m.Add(stun.AttrAlternateDomain, []byte(d))
	return nil
}

func buildError(tid [stun.TransactionIDSize]byte, method stun.Method, code stun.ErrorCode, key []byte, extra ...stun.Setter) []byte {
	setters := []stun.Setter{
		&stun.Message{TransactionID: tid},
		stun.NewType(method, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: code},
	}
	setters = append(setters, extra...)
	if key != nil {
		setters = append(setters, stun.MessageIntegrity(key))
	}
	msg, err := stun.Build(setters...)
	if err != nil {
		return nil
	}
	return msg.Raw
}

// decodeXORAddr decodes an XOR-PEER-ADDRESS value (RFC 8489 §14.2).
func decodeXORAddr(v []byte, tid [stun.TransactionIDSize]byte) (netip.Addr, int, bool) {
	if len(v) < 8 {
		return netip.Addr{}, 0, false
	}
	port := int(binary.BigEndian.Uint16(v[2:4]) ^ (magicCookie >> 16))
	var key [16]byte
	binary.BigEndian.PutUint32(key[0:4], magicCookie)
	copy(key[4:], tid[:])
	switch v[1] {
	case 0x01:
		if len(v) != 8 {
			return netip.Addr{}, 0, false
		}
		var ip [4]byte
		for i := range ip {
			ip[i] = v[4+i] ^ key[i]
		}
		return netip.AddrFrom4(ip), port, true
	case 0x02:
		if len(v) != 20 {
			return netip.Addr{}, 0, false
		}
		var ip [16]byte
		for i := range ip {
			ip[i] = v[4+i] ^ key[i]
		}
		return netip.AddrFrom16(ip), port, true
	}
	return netip.Addr{}, 0, false
}

func methodLabel(m stun.Method) string {
	switch m {
	case stun.MethodBinding:
		return "binding"
	case stun.MethodAllocate:
		return "allocate"
	case stun.MethodRefresh:
		return "refresh"
	case stun.MethodCreatePermission:
		return "create_permission"
	case stun.MethodChannelBind:
		return "channel_bind"
	case stun.MethodConnect:
		return "connect"
	case stun.MethodConnectionBind:
		return "connection_bind"
	case stun.MethodSend:
		return "send"
	}
	return ""
}

func resultLabel(code int) string {
	switch code {
	case 0:
		return "success"
	case 300:
		return "try_alternate"
	case 400:
		return "bad_request"
	case 401:
		return "unauthorized"
	case 403:
		return "forbidden"
	case 437:
		return "mismatch"
	case 438:
		return "stale_nonce"
	case 486:
		return "quota"
	case 508:
		return "capacity"
	}
	return "other_error"
}

// responseKind is what observeResponse saw.
type responseKind int

const (
	respOther           responseKind = iota
	respAllocated                    // an Allocate success
	respConnectionBound              // a ConnectionBind success: raw data follows
)

// observeResponse counts a response the node sends, by method and result,
// and reports the successes a client connection's state depends on.
func (l *listener) observeResponse(b []byte) responseKind {
	if len(b) < stunHeaderSize || b[0]>>6 != 0 || binary.BigEndian.Uint32(b[4:8]) != magicCookie {
		return respOther
	}
	var t stun.MessageType
	t.ReadValue(binary.BigEndian.Uint16(b[0:2]))
	var code int
	switch t.Class {
	case stun.ClassSuccessResponse:
	case stun.ClassErrorResponse:
		code = errorCode(b)
	default:
		return respOther
	}
	method := methodLabel(t.Method)
	if method == "" || method == "send" {
		return respOther
	}
	l.srv.m.Requests.WithLabelValues(method, resultLabel(code)).Inc()
	switch {
	case code != 0:
		return respOther
	case t.Method == stun.MethodConnectionBind:
		return respConnectionBound
	case t.Method == stun.MethodAllocate:
		return respAllocated
	}
	return respOther
}

// errorCode finds the ERROR-CODE attribute in a raw message; -1 if absent.
func errorCode(b []byte) int {
	if len(b) < stunHeaderSize {
		return -1
	}
	v, ok := findAttr(b, attrErrorCode)
	if !ok || len(v) < 4 {
		return -1
	}
	return int(v[2]&0x07)*100 + int(v[3])
}
