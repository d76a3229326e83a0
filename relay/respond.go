package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/metrics"
)

// Responses the node changes on their way to the client.
//
// Pion's error responses carry no reason phrase (clients print "error 403
// ()") and its NONCE attributes are pion's own. Every error response pion
// sends passes through finishResponse, which adds the standard reason phrase
// (RFC 8489 §14.8), puts one of the node's nonces in place of pion's, and
// signs the result again with the key of the request it answers. Success
// responses, indications and ChannelData pass untouched (a two-bit test).

// reqMemo remembers the last authenticated request a client connection
// handed pion, so that pion's signed answer to it can be signed again after
// its reason phrase is added. Pion answers a request on the goroutine that
// read it, before it reads the next one.
type reqMemo struct{ last atomic.Pointer[signedRequest] }

type signedRequest struct {
	tid [stun.TransactionIDSize]byte
	key []byte
}

func (r *reqMemo) remember(tid [stun.TransactionIDSize]byte, key []byte) {
	r.last.Store(&signedRequest{tid: tid, key: key})
}

// keyFor returns the key of the remembered request with transaction id tid.
func (r *reqMemo) keyFor(tid []byte) []byte {
	s := r.last.Load()
	if s == nil || string(s.tid[:]) != string(tid) {
		return nil
	}
	return s.key
}

// reasonPhrase returns the standard reason phrase of code (RFC 8489 §14.8,
// RFC 8656 §18, RFC 6062 §6.3, RFC 6156 §4.2.1).
func reasonPhrase(code int) string {
	switch code {
	case 300:
		return "Try Alternate"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 420:
		return "Unknown Attribute"
	case 437:
		return "Allocation Mismatch"
	case 438:
		return "Stale Nonce"
	case 440:
		return "Address Family not Supported"
	case 441:
		return "Wrong Credentials"
	case 442:
		return "Unsupported Transport Protocol"
	case 443:
		return "Peer Address Family Mismatch"
	case 446:
		return "Connection Already Exists"
	case 447:
		return "Connection Timeout or Failure"
	case 486:
		return "Allocation Quota Reached"
	case 500:
		return "Server Error"
	case 508:
		return "Insufficient Capacity"
	}
	return "Error"
}

// errorCodeAttr is an ERROR-CODE with its standard reason phrase.
func errorCodeAttr(code stun.ErrorCode) *stun.ErrorCodeAttribute {
	return &stun.ErrorCodeAttribute{Code: code, Reason: []byte(reasonPhrase(int(code)))}
}

// finishResponse returns b, or a copy of it changed as described above when
// b is an error response (h is b's header). to is the client it goes to.
func (l *listener) finishResponse(b []byte, h outHeader, to net.Addr, memo *reqMemo) []byte {
	if !h.stun || h.t.Class != stun.ClassErrorResponse {
		return b
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return b
	}
	nonce, hasNonce := m.Attributes.Get(stun.AttrNonce)
	var ec stun.ErrorCodeAttribute
	if ec.GetFrom(m) != nil || (len(ec.Reason) > 0 && !hasNonce) {
		return b
	}
	now := l.srv.cfg.Now()
	if hasNonce {
		l.pion.note(nonce.Value, now)
	}
	var key []byte
	if _, signed := m.Attributes.Get(stun.AttrMessageIntegrity); signed {
		if key = memo.keyFor(m.TransactionID[:]); key == nil {
			return b // cannot sign it again: leave it as pion made it
		}
	}
	out := &stun.Message{TransactionID: m.TransactionID, Type: m.Type}
	out.WriteHeader()
	for _, a := range m.Attributes {
		switch a.Type {
		case stun.AttrErrorCode:
			if len(ec.Reason) == 0 {
				ec.Reason = []byte(reasonPhrase(int(ec.Code)))
			}
			if ec.AddTo(out) != nil {
				return b
			}
		case stun.AttrNonce:
			out.Add(stun.AttrNonce, []byte(l.srv.nonces.issue(sourceIP(to))))
		case stun.AttrMessageIntegrity, stun.AttrMessageIntegritySHA256, stun.AttrFingerprint:
		default:
			out.Add(a.Type, a.Value)
		}
	}
	if key != nil && stun.MessageIntegrity(key).AddTo(out) != nil {
		return b
	}
	return out.Raw
}

// resignRequest returns the raw bytes of m with its NONCE replaced by nonce
// and MESSAGE-INTEGRITY (and FINGERPRINT, when m had one) computed again
// with key. Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are
// ignored by receivers (RFC 8489 §14.5) and dropped.
func resignRequest(m *stun.Message, nonce string, key []byte) ([]byte, error) {
	out := &stun.Message{TransactionID: m.TransactionID, Type: m.Type}
	out.WriteHeader()
	fingerprint := false
	integrity := false
	for _, a := range m.Attributes {
		switch a.Type {
		case stun.AttrNonce:
			if !integrity {
				out.Add(stun.AttrNonce, []byte(nonce))
			}
		case stun.AttrMessageIntegrity:
			integrity = true
		case stun.AttrMessageIntegritySHA256:
		case stun.AttrFingerprint:
			fingerprint = true
		default:
			if !integrity {
				out.Add(a.Type, a.Value)
			}
		}
	}
	if err := stun.MessageIntegrity(key).AddTo(out); err != nil {
		return nil, err
	}
	if fingerprint {
		if err := stun.Fingerprint.AddTo(out); err != nil {
			return nil, err
		}
	}
	return out.Raw, nil
}

// challenge answers a request (transaction tid, method) from src with code
// (401 or 438), a fresh nonce for its address ip and the realm, unsigned
// (RFC 8489 §9.2.4).
func (l *listener) challenge(tid [stun.TransactionIDSize]byte, method stun.Method, code stun.ErrorCode,
	ip netip.Addr, src net.Addr, r replier) {
	msg, err := stun.Build(
		&stun.Message{TransactionID: tid},
		stun.NewType(method, stun.ClassErrorResponse),
		errorCodeAttr(code),
		stun.NewNonce(l.srv.nonces.issue(ip)),
		stun.NewRealm(l.srv.cfg.Realm),
	)
	if err == nil {
		_ = r.reply(msg.Raw, src)
	}
}

// sourceIP is the IP address of a client or peer transport address.
func sourceIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// methodLabel is m's label value; false for a method the node does not
// count (Send and Data indications, anything unknown).
func methodLabel(m stun.Method) (metrics.Method, bool) {
	switch m {
	case stun.MethodBinding:
		return metrics.MethodBinding, true
	case stun.MethodAllocate:
		return metrics.MethodAllocate, true
	case stun.MethodRefresh:
		return metrics.MethodRefresh, true
	case stun.MethodCreatePermission:
		return metrics.MethodCreatePermission, true
	case stun.MethodChannelBind:
		return metrics.MethodChannelBind, true
	case stun.MethodConnect:
		return metrics.MethodConnect, true
	case stun.MethodConnectionBind:
		return metrics.MethodConnectionBind, true
	}
	return "", false
}

// resultLabel is the result label value of a response with error code
// code (0 for a success response).
func resultLabel(code int) metrics.Result {
	switch code {
	case 0:
		return metrics.ResultSuccess
	case 300:
		return metrics.ResultTryAlternate
	case 400:
		return metrics.ResultBadRequest
	case 401:
		return metrics.ResultUnauthorized
	case 403:
		return metrics.ResultForbidden
	case 437:
		return metrics.ResultMismatch
	case 438:
		return metrics.ResultStaleNonce
	case 486:
		return metrics.ResultQuota
	case 508:
		return metrics.ResultCapacity
	}
	return metrics.ResultOtherError
}

// outHeader is what the node needs to know of a message it sends to a
// client, read once from its header by readOutHeader and handed to each
// step that looks at it (finishResponse, observeResponse,
// udpGroup.noteReservation).
type outHeader struct {
	stun bool             // a STUN message: not ChannelData, not raw data
	t    stun.MessageType // when stun
	kind responseKind
}

// responseKind is the kind of success a client connection's state depends
// on.
type responseKind int

const (
	respOther           responseKind = iota
	respAllocated                    // an Allocate success
	respConnectionBound              // a ConnectionBind success: raw data follows
)

// readOutHeader reads the header of a message on its way to a client. For
// ChannelData, the bulk of what is sent, that is one test of its first
// byte.
func readOutHeader(b []byte) outHeader {
	if len(b) < stunHeaderSize || b[0]>>6 != 0 || binary.BigEndian.Uint32(b[4:8]) != magicCookie {
		return outHeader{}
	}
	h := outHeader{stun: true}
	h.t.ReadValue(binary.BigEndian.Uint16(b[0:2]))
	if h.t.Class == stun.ClassSuccessResponse {
		switch h.t.Method {
		case stun.MethodAllocate:
			h.kind = respAllocated
		case stun.MethodConnectionBind:
			h.kind = respConnectionBound
		}
	}
	return h
}

// observeResponse counts a response the node sends (b, whose header is
// h), by method and result.
func (l *listener) observeResponse(b []byte, h outHeader) {
	var code int
	switch {
	case !h.stun:
		return
	case h.t.Class == stun.ClassSuccessResponse:
	case h.t.Class == stun.ClassErrorResponse:
		code = errorCode(b)
	default:
		return
	}
	method, ok := methodLabel(h.t.Method)
	if !ok {
		return
	}
	l.srv.m.Requests.For(method, resultLabel(code)).Inc()
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
