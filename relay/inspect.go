package relay

import (
	"encoding/binary"
	"errors"
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
	maxChannelNumber     = 0x7FFF
	attrErrorCode        = 0x0009
	attrXORPeerAddr      = 0x0012
	attrMessageIntegrity = 0x0008
	attrNonce            = 0x0015
	protoTCP             = 6 // REQUESTED-TRANSPORT value for TCP (RFC 6062)
	// maxMessageSize is the largest STUN message or ChannelData frame the
	// node accepts from a client: pion's inbound MTU.
	maxMessageSize = 1600
)

// replier sends a response to the client a message came from, and
// remembers the request it hands pion (see reqMemo). The client connection
// wrappers implement it, so the packet path builds no closure.
type replier interface {
	reply(b []byte, to net.Addr) error
	memo() *reqMemo
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

// maxBaseAttributes is how many attributes a request may carry besides its
// XOR-PEER-ADDRESS ones: a real Allocate carries about ten. A message with
// more is dropped before it is decoded (RFC 8489 sets no limit, but no
// client needs hundreds, and each costs the decoder).
const maxBaseAttributes = 24

// scanned is what a walk over a STUN message's attributes found, without
// decoding it.
type scanned struct {
	integrity bool // MESSAGE-INTEGRITY present
	peers     int  // XOR-PEER-ADDRESS attributes
}

// scanAttributes walks the attribute list of a well-formed STUN header and
// reports whether its TLVs fit the message and are few enough.
func scanAttributes(b []byte, maxAttrs int) (s scanned, ok bool) {
	n := 0
	for off := stunHeaderSize; off < len(b); {
		if off+4 > len(b) {
			return s, false
		}
		t := binary.BigEndian.Uint16(b[off:])
		off += 4 + (int(binary.BigEndian.Uint16(b[off+2:]))+3)&^3
		if off > len(b) {
			return s, false
		}
		if n++; n > maxAttrs {
			return s, false
		}
		switch t {
		case attrMessageIntegrity:
			s.integrity = true
		case attrXORPeerAddr:
			s.peers++
		}
	}
	return s, true
}

// inspect runs on every message from a client before pion sees it. It
// returns pass false when the message was consumed here: dropped (malformed,
// over a budget, in an auth backoff) or answered (a challenge, 403 for a
// denied peer, 508 while draining or over a limit, ...). When it passes a
// request on with changed bytes (the node's nonce swapped for pion's), msg
// holds them; otherwise msg is nil and b goes to pion as it is.
func (l *listener) inspect(b []byte, src net.Addr, r replier) (msg []byte, pass bool) {
	defer func() {
		if r := recover(); r != nil {
			l.srv.m.PacketsDropped.WithLabelValues(metrics.DropPanic).Inc()
			l.notePanic("inspect", r)
			msg, pass = nil, false
		}
	}()
	isSTUN, ok := classify(b)
	if !ok {
		l.dropMalformed.Inc()
		return nil, false
	}
	l.input.Inc()
	var t stun.MessageType
	if isSTUN {
		t.ReadValue(binary.BigEndian.Uint16(b[0:2]))
	}
	if !isSTUN || t.Class != stun.ClassRequest {
		// ChannelData, Send indications: only from a client with an
		// allocation here (pion would look, fail, and format an error).
		if l.clients != nil && !l.clients.has(src) {
			l.dropNoAlloc.Inc()
			return nil, false
		}
		return nil, true
	}
	sc, ok := scanAttributes(b, maxBaseAttributes+l.srv.cfg.MaxRequestPeers)
	if !ok {
		l.dropMalformed.Inc()
		return nil, false
	}
	ip := sourceIP(src)
	if !sc.integrity || t.Method == stun.MethodBinding {
		// Binding (pion authenticates none, whatever it carries), and the
		// first Allocate of every client: pion answers (a 401 challenge for
		// TURN methods) without any state.
		if !l.srv.budget.allow(ip) {
			l.dropBudget.Inc()
			return nil, false
		}
		return nil, true
	}
	// The nonce first, from the raw bytes, before anything is decoded. A
	// nonce this node gave this address that has expired is answered with a
	// fresh one at once (a spoofer cannot make one). Any other — a spoofed
	// source's, another address's, a made-up one — is answered like a
	// request without credentials, within the same budget.
	nonce, hasNonce := findAttr(b, attrNonce)
	if v := l.srv.nonces.check(nonce, ip); !hasNonce || v != nonceFresh {
		if (!hasNonce || v == nonceForeign) && !l.srv.budget.allow(ip) {
			l.dropBudget.Inc()
			return nil, false
		}
		var tid [stun.TransactionIDSize]byte
		copy(tid[:], b[8:stunHeaderSize])
		if !hasNonce {
			// RFC 8489 §9.2.4: MESSAGE-INTEGRITY without NONCE is a 400.
			_ = r.reply(buildError(tid, t.Method, stun.CodeBadRequest, nil), src)
			return nil, false
		}
		l.challenge(tid, t.Method, stun.CodeStaleNonce, ip, src, r)
		return nil, false
	}
	q := &request{l: l, method: t.Method, src: src, ip: ip, r: r, m: &stun.Message{Raw: append([]byte(nil), b...)}}
	if err := q.m.Decode(); err != nil {
		return nil, true // pion answers 400
	}
	if !q.authenticate() {
		return nil, false
	}
	if !q.check() {
		return nil, false
	}
	return q.handOver()
}

// authenticate checks the auth backoff and the MESSAGE-INTEGRITY of a
// request whose nonce is valid, and answers or drops it when either fails
// (reporting false).
func (q *request) authenticate() bool {
	s := q.l.srv
	var u stun.Username
	username := ""
	if u.GetFrom(q.m) == nil {
		username = u.String()
	}
	rest := s.cfg.Credentials.IsREST(username)
	if ipBlocked, userBlocked := s.guard.blocked(q.ip, username); (ipBlocked || userBlocked) && !q.ownsAllocation(username) {
		switch {
		case userBlocked:
			q.l.dropBackoff.Inc()
			return false
		case !rest:
			q.l.dropBackoff.Inc()
			return false
		case !s.budget.allow(q.ip):
			// A REST username is not guessable (its password is an HMAC),
			// so other users' REST credentials keep working from a blocked
			// IP, within the budget of unauthenticated requests.
			q.l.dropBudget.Inc()
			return false
		}
	}
	if _, _, err := q.verify(); err != nil {
		s.m.AuthFailures.WithLabelValues(authReason(err)).Inc()
		if errors.Is(err, allocation.ErrBadPassword) || errors.Is(err, allocation.ErrUnknownUser) {
			scoped := username
			if rest {
				scoped = "" // an HMAC cannot be guessed: no user backoff, no table entry
			}
			for _, scope := range s.guard.failed(q.ip, scoped) {
				s.m.AuthBackoffs.WithLabelValues(scope).Inc()
			}
		}
		q.l.challenge(q.m.TransactionID, q.method, stun.CodeUnauthorized, q.ip, q.src, q.r)
		return false
	}
	return true
}

// ownsAllocation reports whether the request's 5-tuple holds an allocation
// of the user username names. Its requests (Refresh, CreatePermission,
// ChannelBind of a live call) are never dropped by a backoff: whoever
// guesses that user's password elsewhere must not end the user's calls.
func (q *request) ownsAllocation(username string) bool {
	owner, ok := q.l.srv.cfg.Table.Owner(q.l.key(q.src))
	if !ok {
		return false
	}
	id, ok := q.l.srv.cfg.Credentials.UserID(username)
	return ok && id == owner
}

// check applies the node's rules to an authenticated request, answering it
// (and reporting false) when one refuses it.
func (q *request) check() bool {
	l := q.l
	datagram := l.transport == "udp" || l.transport == "dtls"
	switch q.method {
	case stun.MethodConnect, stun.MethodConnectionBind:
		// RFC 6062 §5: TCP relaying needs a TCP or TLS control connection.
		// Pion would dial the peer inside this socket's read loop, stalling
		// every client on it for up to the connect timeout.
		if datagram {
			q.refuse(stun.CodeBadRequest)
			return false
		}
		if q.method == stun.MethodConnect {
			return q.checkAllocation() && q.checkPeers()
		}
	case stun.MethodChannelBind:
		// RFC 8656 §11.2: a channel number outside the range is a 400
		// (pion binds any); the node takes RFC 5766's wider range.
		if v, err := q.m.Get(stun.AttrChannelNumber); err == nil && len(v) >= 2 {
			if n := binary.BigEndian.Uint16(v); n < minChannelNumber || n > maxChannelNumber {
				q.refuse(stun.CodeBadRequest)
				return false
			}
		}
		return q.checkAllocation() && q.checkPeers() && q.checkLimits()
	case stun.MethodCreatePermission:
		return q.checkAllocation() && q.checkPeers() && q.checkLimits()
	case stun.MethodRefresh:
		if !q.checkAllocation() {
			return false
		}
		// The session record and the admin API need to know: LIFETIME 0
		// deletes the allocation (the client hung up), anything else
		// moves its expiry.
		lifetime, has := lifetimeAttr(q.m)
		l.srv.noteRefresh(l.key(q.src), lifetime, has)
		return true
	case stun.MethodAllocate:
		if l.srv.cfg.Redirect != nil && !q.checkRedirect() {
			return false // another node takes it (also while draining)
		}
		if l.srv.draining.Load() {
			return q.refuseWhileDraining()
		}
		// RFC 6062 §5.1: a TCP allocation requested over UDP or DTLS gets 400.
		if v, err := q.m.Get(stun.AttrRequestedTransport); datagram && err == nil && len(v) > 0 && v[0] == protoTCP {
			q.refuse(stun.CodeBadRequest)
			return false
		}
		if !l.srv.addrs.dualStack() && !q.checkFamily() {
			return false
		}
		// Every Allocate handed to pion replaces the 5-tuple's note, with
		// or without a LIFETIME: a note left by an earlier Allocate that
		// pion refused (486, 508) must not give this one its lifetime.
		lifetime, has := lifetimeAttr(q.m)
		l.srv.noteAllocate(l.key(q.src), lifetime, has)
	}
	return true
}

// handOver passes an authenticated request to pion with pion's own nonce in
// place of the node's, signed again with the key it was verified with.
func (q *request) handOver() ([]byte, bool) {
	q.r.memo().remember(q.m.TransactionID, q.key)
	nonce, ok := q.l.pion.get(q.l.srv.cfg.Now())
	if !ok {
		// Pion has not handed out a nonce on this listener lately: it
		// answers 438 with one, and the client retries.
		return nil, true
	}
	raw, err := resignRequest(q.m, nonce, q.key)
	if err != nil || len(raw) >= maxMessageSize {
		q.refuse(stun.CodeBadRequest)
		return nil, false
	}
	return raw, true
}

// request is one decoded client request being inspected; its credentials
// are verified at most once.
type request struct {
	l        *listener
	method   stun.Method
	src      net.Addr
	ip       netip.Addr
	r        replier
	m        *stun.Message
	peers    []netip.Addr // XOR-PEER-ADDRESS values, unmapped, once checkPeers ran
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
	user, _, _ := q.verify()
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
		q.peers = append(q.peers, ip.Unmap())
		if !q.l.srv.peerAllowed(ip) ||
			(q.method == stun.MethodConnect && !q.l.srv.peerPortAllowed(ip.AsSlice(), port, true)) {
			denied = true
		}
	}
	if !denied {
		if p := q.l.srv.clientPermits(q.l.key(q.src)); p != nil {
			p.method.Store(uint32(q.method)) // for pion's second-line check
		}
		return true
	}
	q.l.srv.m.PeerDenials.WithLabelValues(methodLabel(q.method)).Inc()
	q.refuse(stun.CodeForbidden)
	return false
}

// checkLimits holds the per-allocation limits: at most MaxRequestPeers peer
// addresses in one CreatePermission (400, RFC 8656 §9.2 leaves the number to
// the server), and at most MaxPermissions peer IPs and MaxChannels channels
// on one allocation (508 Insufficient Capacity, RFC 8656 §9.2, §12.2).
// Refreshing what exists is always allowed.
func (q *request) checkLimits() bool {
	cfg := &q.l.srv.cfg
	if len(q.peers) > cfg.MaxRequestPeers {
		q.l.srv.m.LimitRejections.WithLabelValues(metrics.LimitRequestPeers).Inc()
		q.refuse(stun.CodeBadRequest)
		return false
	}
	p := q.l.srv.clientPermits(q.l.key(q.src))
	if p == nil {
		return true // checkAllocation found it in the table a moment ago: pion decides
	}
	var channel uint16
	if q.method == stun.MethodChannelBind {
		if v, err := q.m.Get(stun.AttrChannelNumber); err == nil && len(v) >= 2 {
			channel = binary.BigEndian.Uint16(v)
		}
	}
	if limit := p.wouldExceed(q.peers, channel, cfg.MaxPermissions, cfg.MaxChannels); limit != "" {
		q.l.srv.m.LimitRejections.WithLabelValues(limit).Inc()
		q.refuse(stun.CodeInsufficientCapacity)
		return false
	}
	return true
}

// refuseWhileDraining answers a new authenticated Allocate with a signed 508
// Insufficient Capacity so the client moves to another relay. A retransmitted Allocate for an
// allocation that already exists goes through (pion answers from its cache).
func (q *request) refuseWhileDraining() bool {
	if q.l.srv.cfg.Table.Has(q.l.key(q.src)) {
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
	user, key, _ := q.verify()
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
		errorCodeAttr(code),
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
