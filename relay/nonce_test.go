package relay

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

func TestNonceBoundToIPAndLifetime(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	n := newNonces(10*time.Minute, func() time.Time { return now })
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	v := n.issue(a)
	cases := []struct {
		name  string
		nonce string
		ip    netip.Addr
		after time.Duration
		want  bool
	}{
		{"fresh, same IP", v, a, 0, true},
		{"same IP, mapped form", v, netip.MustParseAddr("::ffff:192.0.2.1"), 0, true},
		{"another IP", v, b, 0, false},
		{"just inside the lifetime", v, a, 10 * time.Minute, true},
		{"expired", v, a, 10*time.Minute + time.Millisecond, false},
		{"from the future", v, a, -time.Second, false},
		{"pion's kind of nonce", "3S7YQ5ZKJ0MLG2X4W9T1", a, 0, false},
		{"a MAC character changed", v[:20] + flip(v[20]) + v[21:], a, 0, false},
		{"unused trailing bits set", v[:len(v)-1] + flip(v[len(v)-1]), a, 0, false},
		{"empty", "", a, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			saved := now
			now = now.Add(tc.after)
			defer func() { now = saved }()
			if got := n.valid([]byte(tc.nonce), tc.ip); got != tc.want {
				t.Fatalf("valid = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPionNonceAge(t *testing.T) {
	var p pionNonces
	t0 := time.Unix(1_800_000_000, 0)
	if _, ok := p.get(t0); ok {
		t.Fatal("a nonce before pion sent one")
	}
	p.note([]byte("abc"), t0)
	p.note([]byte("abc"), t0.Add(20*time.Minute)) // the same one again: still first seen at t0
	if v, ok := p.get(t0.Add(pionNonceMaxAge)); !ok || v != "abc" {
		t.Fatalf("get = %q %v", v, ok)
	}
	if _, ok := p.get(t0.Add(pionNonceMaxAge + time.Second)); ok {
		t.Fatal("a nonce pion may soon refuse was handed out")
	}
}

// authRequest builds an authenticated request from alice with nonce.
func authRequest(t *testing.T, method stun.Method, nonce, password string, extra ...stun.Setter) []byte {
	t.Helper()
	setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, extra...)
	setters = append(setters, stun.NewUsername("alice"), stun.NewRealm("fuzz"), stun.NewNonce(nonce),
		stun.MessageIntegrity(longTermKeyForTest("alice", "fuzz", password)), stun.Fingerprint)
	return mustBuild(t, setters...)
}

func decodeResponse(t *testing.T, b []byte) *stun.Message {
	t.Helper()
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		t.Fatalf("response does not decode: %v", err)
	}
	return m
}

// TestInspectNonceAndPassword: a nonce from another IP or a stale one gets
// 438 with a fresh nonce for this client, a wrong password 401 with one;
// both unsigned, with REALM and a reason phrase, and pion never sees them.
func TestInspectNonceAndPassword(t *testing.T) {
	l := newInspectListener(t, false)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	here := netip.MustParseAddr("127.0.0.1")
	cases := []struct {
		name   string
		nonce  string
		pw     string
		code   int
		reason string
	}{
		{"nonce of another IP", testNonces.issue(netip.MustParseAddr("127.0.0.2")), "pw", 438, "Stale Nonce"},
		{"nonce pion made", "3S7YQ5ZKJ0MLG2X4W9T1", "pw", 438, "Stale Nonce"},
		{"wrong password", testNonces.issue(here), "guess", 401, "Unauthorized"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &discardReplier{}
			b := authRequest(t, stun.MethodAllocate, tc.nonce, tc.pw, requestedUDP{})
			if _, pass := l.inspect(b, src, r); pass || r.n != 1 || r.codes[0] != tc.code {
				t.Fatalf("pass=%v codes=%v, want consumed with one %d", pass, r.codes, tc.code)
			}
			m := decodeResponse(t, r.last)
			var ec stun.ErrorCodeAttribute
			if err := ec.GetFrom(m); err != nil || string(ec.Reason) != tc.reason {
				t.Fatalf("error code %v %q, want reason %q", ec.Code, ec.Reason, tc.reason)
			}
			var nonce stun.Nonce
			if err := nonce.GetFrom(m); err != nil || !l.srv.nonces.valid(nonce, here) {
				t.Fatalf("response nonce %q is not a fresh one for %v", nonce, here)
			}
			if m.Contains(stun.AttrMessageIntegrity) || !m.Contains(stun.AttrRealm) {
				t.Fatal("a challenge is unsigned and names the realm")
			}
		})
	}
}

type requestedUDP struct{}

func (requestedUDP) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})
	return nil
}

// TestInspectHandsPionItsNonce: a verified request reaches pion with pion's
// nonce in place of the node's, still verifying with the user's key.
func TestInspectHandsPionItsNonce(t *testing.T) {
	l := newInspectListener(t, false)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	ours := testNonces.issue(netip.MustParseAddr("127.0.0.1"))
	b := authRequest(t, stun.MethodAllocate, ours, "pw", requestedUDP{})
	// Before pion has handed out a nonce the request goes through as it is.
	if msg, pass := l.inspect(b, src, &discardReplier{}); !pass || msg != nil {
		t.Fatalf("pass=%v rewritten=%v, want passed unchanged", pass, msg != nil)
	}
	// Pion challenges someone: its nonce is noted and the client sees ours.
	challenge := mustBuild(t, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized}, stun.NewNonce("PIONNONCE1"), stun.NewRealm("fuzz"))
	out := decodeResponse(t, l.finishResponse(challenge, readOutHeader(challenge), src, &reqMemo{}))
	var n stun.Nonce
	if err := n.GetFrom(out); err != nil || string(n) == "PIONNONCE1" || !l.srv.nonces.valid(n, netip.MustParseAddr("127.0.0.1")) {
		t.Fatalf("client got nonce %q, want one of the node's", n)
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(out); err != nil || string(ec.Reason) != "Unauthorized" {
		t.Fatalf("reason %q, want Unauthorized", ec.Reason)
	}
	r := &discardReplier{}
	msg, pass := l.inspect(b, src, r)
	if !pass || msg == nil {
		t.Fatalf("pass=%v rewritten=%v, want passed with pion's nonce", pass, msg != nil)
	}
	m := decodeResponse(t, msg)
	if err := n.GetFrom(m); err != nil || string(n) != "PIONNONCE1" {
		t.Fatalf("pion got nonce %q", n)
	}
	if err := stun.MessageIntegrity(longTermKeyForTest("alice", "fuzz", "pw")).Check(m); err != nil {
		t.Fatalf("re-signed request does not verify: %v", err)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		t.Fatalf("fingerprint: %v", err)
	}
	// Pion's signed error answer to it gets its reason phrase and is signed
	// again with the same key.
	answer := mustBuild(t, &stun.Message{TransactionID: m.TransactionID},
		stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeAllocQuotaReached},
		stun.MessageIntegrity(longTermKeyForTest("alice", "fuzz", "pw")))
	fixed := decodeResponse(t, l.finishResponse(answer, readOutHeader(answer), src, &r.rm))
	if err := ec.GetFrom(fixed); err != nil || string(ec.Reason) != "Allocation Quota Reached" {
		t.Fatalf("reason %q", ec.Reason)
	}
	if err := stun.MessageIntegrity(longTermKeyForTest("alice", "fuzz", "pw")).Check(fixed); err != nil {
		t.Fatalf("answer re-signed wrongly: %v", err)
	}
	// A signed answer to some other request cannot be signed again: as is.
	other := mustBuild(t, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeAllocQuotaReached}, stun.MessageIntegrity([]byte("k")))
	if got := l.finishResponse(other, readOutHeader(other), src, &r.rm); string(got) != string(other) {
		t.Fatal("an answer whose key is unknown was changed")
	}
}

func TestEveryErrorHasAReasonPhrase(t *testing.T) {
	for _, code := range []int{300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 446, 447, 486, 500, 508} {
		if reasonPhrase(code) == "Error" {
			t.Errorf("%d has no reason phrase", code)
		}
	}
}

// flip replaces a base64url character with the one after it in the alphabet.
func flip(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[(i+1)%len(alphabet)])
}

// TestBadNonceIsBudgeted: requests carrying MESSAGE-INTEGRITY but a nonce
// the node did not give their address (spoofed ones, say) are answered with
// 438 only within the source's budget for unauthenticated requests, and are
// not decoded past it; one without NONCE gets 400 (RFC 8489 §9.2.4).
func TestBadNonceIsBudgeted(t *testing.T) {
	l := newInspectListener(t, false)
	now := time.Unix(1_800_000_000, 0)
	l.srv.budget = newSourceBudget(1, func() time.Time { return now }) // burst 2
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 5000}
	stale := testNonces.issue(netip.MustParseAddr("127.0.0.1")) // another address's
	r := &discardReplier{}
	for range 10 {
		if _, pass := l.inspect(authRequest(t, stun.MethodAllocate, stale, "pw", requestedUDP{}), src, r); pass {
			t.Fatal("a request with another address's nonce went to pion")
		}
	}
	if r.n != 2 || r.codes[0] != 438 || r.codes[1] != 438 {
		t.Fatalf("answers %v, want two 438 (the burst) and the rest dropped", r.codes)
	}
	if got := promToFloat(l.dropBudget); got != 8 {
		t.Fatalf("unauth_budget drops %v, want 8", got)
	}
	now = now.Add(time.Hour)
	r = &discardReplier{}
	noNonce := mustBuild(t, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP{},
		stun.NewUsername("alice"), stun.NewRealm("fuzz"), stun.MessageIntegrity(longTermKeyForTest("alice", "fuzz", "pw")))
	if _, pass := l.inspect(noNonce, src, r); pass || r.n != 1 || r.codes[0] != 400 {
		t.Fatalf("MESSAGE-INTEGRITY without NONCE: pass=%v codes=%v, want one 400", pass, r.codes)
	}
}

// TestBindingWithIntegrityIsBudgeted: pion authenticates no Binding, so one
// carrying a MESSAGE-INTEGRITY (of anything) draws on the budget like any.
func TestBindingWithIntegrityIsBudgeted(t *testing.T) {
	l := newInspectListener(t, false)
	now := time.Unix(1_800_000_000, 0)
	l.srv.budget = newSourceBudget(1, func() time.Time { return now }) // burst 2
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 5000}
	passed := 0
	for range 10 {
		b := mustBuild(t, stun.TransactionID, stun.BindingRequest, stun.MessageIntegrity(make([]byte, 16)))
		if _, pass := l.inspect(b, src, &discardReplier{}); pass {
			passed++
		}
	}
	if passed != 2 {
		t.Fatalf("%d Bindings with MESSAGE-INTEGRITY passed, want the burst of 2", passed)
	}
}

// TestExpiredNonceAnsweredOutsideBudget: a client whose own nonce expired
// gets 438 with a fresh one even while a flood has used up the budget; a
// spoofer cannot make such a nonce.
func TestExpiredNonceAnsweredOutsideBudget(t *testing.T) {
	l := newInspectListener(t, false)
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	l.srv.nonces = newNonces(10*time.Minute, clock)
	l.srv.budget = newSourceBudget(1, clock)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 5000}
	old := l.srv.nonces.issue(netip.MustParseAddr("127.0.0.9"))
	now = now.Add(11 * time.Minute)
	for range 100 { // the flood takes every token
		l.srv.budget.allow(netip.MustParseAddr("127.0.0.9"))
	}
	r := &discardReplier{}
	if _, pass := l.inspect(authRequest(t, stun.MethodRefresh, old, "pw"), src, r); pass || r.n != 1 || r.codes[0] != 438 {
		t.Fatalf("own expired nonce: pass=%v codes=%v, want one 438", pass, r.codes)
	}
	var n stun.Nonce
	if err := n.GetFrom(decodeResponse(t, r.last)); err != nil || !l.srv.nonces.valid(n, netip.MustParseAddr("127.0.0.9")) {
		t.Fatalf("438 carries %q, not a fresh nonce", n)
	}
}
