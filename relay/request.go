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
		s.m.AuthFailures.For(authReason(err)).Inc()
		if errors.Is(err, allocation.ErrBadPassword) || errors.Is(err, allocation.ErrUnknownUser) {
			scoped := username
			if rest {
				scoped = "" // an HMAC cannot be guessed: no user backoff, no table entry
			}
			for _, scope := range s.guard.failed(q.ip, scoped) {
				s.m.AuthBackoffs.For(scope).Inc()
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
	datagram := l.transport == metrics.TransportUDP || l.transport == metrics.TransportDTLS
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
		q.l.srv.m.AuthFailures.For(metrics.AuthWrongOwner).Inc()
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
		peer, ok := decodeXORAddr(a.Value, q.m.TransactionID)
		if !ok {
			return true // pion answers 400
		}
		q.peers = append(q.peers, peer.Addr().Unmap())
		if !q.l.srv.peerAllowed(peer.Addr()) ||
			(q.method == stun.MethodConnect && !q.l.srv.tcpPeerAllowed(peer)) {
			denied = true
		}
	}
	if !denied {
		if p := q.l.srv.clientRecord(q.l.key(q.src)); p != nil {
			p.method.Store(uint32(q.method)) // for pion's second-line check
		}
		return true
	}
	method, _ := methodLabel(q.method) // check calls it for CreatePermission, ChannelBind and Connect only
	q.l.srv.m.PeerDenials.For(method).Inc()
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
		q.l.srv.m.LimitRejections.For(metrics.LimitRequestPeers).Inc()
		q.refuse(stun.CodeBadRequest)
		return false
	}
	p := q.l.srv.clientRecord(q.l.key(q.src))
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
		q.l.srv.m.LimitRejections.For(limit).Inc()
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
	alt, ok := q.l.srv.cfg.Redirect(user, q.src, string(q.l.transport))
	if !ok {
		return true
	}
	attrs := []stun.Setter{&stun.AlternateServer{IP: alt.Server.Addr().AsSlice(), Port: int(alt.Server.Port())}}
	if alt.Domain != "" && (q.l.transport == metrics.TransportTLS || q.l.transport == metrics.TransportDTLS) {
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
func decodeXORAddr(v []byte, tid [stun.TransactionIDSize]byte) (netip.AddrPort, bool) {
	if len(v) < 8 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:4]) ^ (magicCookie >> 16)
	var key [16]byte
	binary.BigEndian.PutUint32(key[0:4], magicCookie)
	copy(key[4:], tid[:])
	switch v[1] {
	case 0x01:
		if len(v) != 8 {
			return netip.AddrPort{}, false
		}
		var ip [4]byte
		for i := range ip {
			ip[i] = v[4+i] ^ key[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom4(ip), port), true
	case 0x02:
		if len(v) != 20 {
			return netip.AddrPort{}, false
		}
		var ip [16]byte
		for i := range ip {
			ip[i] = v[4+i] ^ key[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom16(ip), port), true
	}
	return netip.AddrPort{}, false
}
