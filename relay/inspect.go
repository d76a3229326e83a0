package relay

import (
	"encoding/binary"
	"net"

	"github.com/pion/stun/v4"

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
			l.srv.m.PacketsDropped.For(metrics.DropPanic).Inc()
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
