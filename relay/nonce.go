package relay

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"
)

// Nonces.
//
// Pion's nonce is one string per minute for every client, valid for an hour
// and bound to nothing: a captured request could be replayed from anywhere
// for an hour. So the node hands clients nonces of its own, bound to the
// client's IP address and valid for Config.NonceLifetime, and checks them
// before pion sees a request. Pion still checks a nonce of its own: a request
// whose nonce and MESSAGE-INTEGRITY the node has verified is handed to pion
// with pion's current nonce and signed again with the same key, and every
// NONCE pion sends is replaced with one of the node's on the way out.

// nonceMACSize is how many bytes of HMAC-SHA256 a nonce carries.
const nonceMACSize = 12

// nonceStep is how often the nonce handed to one IP changes.
const nonceStep = time.Minute

// pionNonceMaxAge is how long a nonce pion handed out is used in requests
// passed to it: pion accepts its nonces for an hour from the minute they
// were made, and one is first seen here in the minute it is made. An older
// one is not used; pion then answers the request with 438 and a fresh one,
// which the client retries with.
const pionNonceMaxAge = 50 * time.Minute

// nonces issues and checks the node's nonces.
type nonces struct {
	key      [32]byte
	lifetime time.Duration
	now      func() time.Time
}

func newNonces(lifetime time.Duration, now func() time.Time) *nonces {
	n := &nonces{lifetime: lifetime, now: now}
	_, _ = rand.Read(n.key[:]) // crypto/rand.Read does not fail (Go 1.24+)
	return n
}

// mac is HMAC-SHA256(key, issued || ip) truncated to nonceMACSize.
func (n *nonces) mac(issued uint64, ip netip.Addr) [nonceMACSize]byte {
	var msg [8 + 16]byte
	binary.BigEndian.PutUint64(msg[:8], issued)
	a := ip.Unmap().As16()
	copy(msg[8:], a[:])
	h := hmac.New(sha256.New, n.key[:])
	h.Write(msg[:])
	var out [nonceMACSize]byte
	copy(out[:], h.Sum(nil))
	return out
}

// issue returns a fresh nonce for a client at ip. Within one step of
// nonceStep a client is handed the same nonce again, as pion does: clients
// take a 401 carrying the nonce they just used as "wrong credentials",
// and one carrying a new nonce as "try again".
func (n *nonces) issue(ip netip.Addr) string {
	step := min(nonceStep, n.lifetime/4)
	issued := uint64(n.now().Truncate(step).UnixMilli()) //nolint:gosec // after 1970
	var raw [8 + nonceMACSize]byte
	binary.BigEndian.PutUint64(raw[:8], issued)
	m := n.mac(issued, ip)
	copy(raw[8:], m[:])
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// nonceVerdict is what check says of a nonce.
type nonceVerdict int

const (
	nonceFresh   nonceVerdict = iota // this node gave it to this address, in its lifetime
	nonceExpired                     // this node gave it to this address; its lifetime is over
	nonceForeign                     // not one this node gave this address
)

// check says whether nonce was issued by this node to ip, and whether it
// has expired.
func (n *nonces) check(nonce []byte, ip netip.Addr) nonceVerdict {
	var raw [8 + nonceMACSize]byte
	if base64.RawURLEncoding.EncodedLen(len(raw)) != len(nonce) {
		return nonceForeign
	}
	// Strict: one nonce has one spelling (unused trailing bits must be 0).
	if k, err := base64.RawURLEncoding.Strict().Decode(raw[:], nonce); err != nil || k != len(raw) {
		return nonceForeign
	}
	issued := binary.BigEndian.Uint64(raw[:8])
	if issued > 1<<62 {
		return nonceForeign
	}
	m := n.mac(issued, ip)
	if !hmac.Equal(m[:], raw[8:]) {
		return nonceForeign
	}
	age := n.now().Sub(time.UnixMilli(int64(issued))) //nolint:gosec // checked above
	if age < 0 || age > n.lifetime {
		return nonceExpired
	}
	return nonceFresh
}

// valid reports whether nonce was issued by this node to ip and has not
// expired.
func (n *nonces) valid(nonce []byte, ip netip.Addr) bool { return n.check(nonce, ip) == nonceFresh }

// pionNonce is the last nonce one listener's pion server handed out.
type pionNonce struct {
	value string
	seen  time.Time
}

// pionNonces remembers a listener's current pion nonce.
type pionNonces struct{ cur atomic.Pointer[pionNonce] }

// note records a nonce pion sent.
func (p *pionNonces) note(v []byte, now time.Time) {
	if c := p.cur.Load(); c != nil && c.value == string(v) {
		return
	}
	p.cur.Store(&pionNonce{value: string(v), seen: now})
}

// get returns pion's nonce when it is fresh enough to hand pion.
func (p *pionNonces) get(now time.Time) (string, bool) {
	c := p.cur.Load()
	if c == nil || now.Sub(c.seen) > pionNonceMaxAge {
		return "", false
	}
	return c.value, true
}
