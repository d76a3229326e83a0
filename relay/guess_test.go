package relay_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// once sends one message and waits up to d for its answer (nil if none).
func once(c *relaytest.RawClient, d time.Duration, setters ...stun.Setter) *stun.Message {
	c.T.Helper()
	m, err := stun.Build(setters...)
	if err != nil {
		c.T.Fatal(err)
	}
	if _, err := c.Conn.WriteTo(m.Raw, c.Server); err != nil {
		c.T.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	for {
		n, _, err := c.Conn.ReadFrom(buf)
		if err != nil {
			return nil
		}
		resp := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if resp.Decode() == nil && resp.TransactionID == m.TransactionID {
			return resp
		}
	}
}

// allocateOnce is an authenticated Allocate with the client's nonce.
func allocateOnce(c *relaytest.RawClient, d time.Duration, user, pass string) *stun.Message {
	return once(c, d, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), relaytest.RequestedTransport(17),
		stun.NewUsername(user), stun.NewRealm(c.Realm), stun.NewNonce(c.Nonce),
		stun.NewLongTermIntegrity(user, c.Realm, pass), stun.Fingerprint)
}

// challenge gets a nonce and the realm with an unauthenticated Allocate.
func challenge(c *relaytest.RawClient) {
	c.T.Helper()
	resp := c.RoundTrip(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), relaytest.RequestedTransport(17))
	var n stun.Nonce
	var r stun.Realm
	if relaytest.ErrCode(resp) != 401 || n.GetFrom(resp) != nil || r.GetFrom(resp) != nil {
		c.T.Fatalf("no 401 challenge: %v", resp)
	}
	c.Nonce, c.Realm = string(n), string(r)
}

// TestPasswordGuessingBackoff guesses alice's password from one IP as fast
// as the node answers: after --auth-failures wrong ones, requests for alice
// (from any IP) and non-REST requests from that IP are dropped, even with
// the right password; another user's REST credential keeps working from
// that IP; after the backoff the right password works again.
func TestPasswordGuessingBackoff(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "right"}, Secrets: []string{"s3cret"},
		Configure: func(c *relay.Config) { c.AuthFailures, c.AuthBackoff = 5, time.Second }})
	guesser := relaytest.NewRawClient(t, tn.Addr())
	challenge(guesser)
	for i := range 5 {
		if code := relaytest.ErrCode(allocateOnce(guesser, 2*time.Second, "alice", fmt.Sprintf("guess%d", i))); code != 401 {
			t.Fatalf("guess %d: error %d, want 401", i, code)
		}
	}
	started := time.Now()
	if resp := allocateOnce(guesser, 300*time.Millisecond, "alice", "right"); resp != nil && time.Since(started) < time.Second {
		t.Fatalf("the right password during the backoff was answered: %d", relaytest.ErrCode(resp))
	}
	if got := tn.Scrape(`supernode_auth_backoffs_total{scope="ip"}`); got != 1 {
		t.Errorf("auth_backoffs_total{ip} = %v, want 1", got)
	}
	if got := tn.Scrape(`supernode_auth_backoffs_total{scope="user"}`); got != 1 {
		t.Errorf("auth_backoffs_total{user} = %v, want 1", got)
	}
	if got := tn.Scrape(`supernode_packets_dropped_total{reason="auth_backoff"}`); got < 1 {
		t.Errorf("packets_dropped_total{auth_backoff} = %v, want at least 1", got)
	}
	// Another user's REST credential from the same IP still works.
	u := fmt.Sprintf("%d:bob", time.Now().Add(time.Hour).Unix())
	bob := relaytest.NewRawClient(t, tn.Addr())
	bob.Allocate(u, allocation.RESTPassword("s3cret", u))
	// Alice from another IP is in the backoff too (it keys on her name).
	other := &relaytest.RawClient{T: t, Conn: relaytest.ListenUDP(t, "udp4", "127.0.0.2:0"), Server: relaytest.UDPAddr(t, tn.Addr())}
	challenge(other)
	if resp := allocateOnce(other, 300*time.Millisecond, "alice", "right"); resp != nil && time.Since(started) < time.Second {
		t.Fatalf("alice from another IP during her backoff was answered: %d", relaytest.ErrCode(resp))
	}
	// When the backoff ends the right password works.
	looptest.Eventually(t, "alice to be let in after the backoff", func() bool {
		return relaytest.ErrCode(allocateOnce(other, 500*time.Millisecond, "alice", "right")) == 0
	})
}

// TestUnauthenticatedBudget floods Bindings from one IP: past its budget
// they are dropped and counted, each one either answered or counted, while
// a client on another IP is answered.
func TestUnauthenticatedBudget(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, Configure: func(c *relay.Config) { c.UnauthRate = 20 }})
	flood := &relaytest.RawClient{T: t, Conn: relaytest.ListenUDP(t, "udp4", "127.0.0.3:0"), Server: relaytest.UDPAddr(t, tn.Addr())}
	const n = 1000
	for range n {
		m := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		if _, err := flood.Conn.WriteTo(m.Raw, flood.Server); err != nil {
			t.Fatal(err)
		}
	}
	answered := 0
	buf := make([]byte, 2048)
	for {
		_ = flood.Conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := flood.Conn.ReadFrom(buf); err != nil {
			break
		}
		answered++
	}
	dropped := tn.Scrape(`supernode_packets_dropped_total{reason="unauth_budget"}`)
	if dropped == 0 || answered+int(dropped) != n {
		t.Errorf("%d Bindings answered and %v dropped over budget, want some dropped and %d in all", answered, dropped, n)
	}
	other := &relaytest.RawClient{T: t, Conn: relaytest.ListenUDP(t, "udp4", "127.0.0.4:0"), Server: relaytest.UDPAddr(t, tn.Addr())}
	if resp := other.RoundTrip(stun.TransactionID, stun.BindingRequest); relaytest.ErrCode(resp) != 0 {
		t.Errorf("a Binding from another IP: %v", resp)
	}
	c := &relaytest.RawClient{T: t, Conn: relaytest.ListenUDP(t, "udp4", "127.0.0.4:0"), Server: relaytest.UDPAddr(t, tn.Addr())}
	c.Allocate("alice", "pw")
}

// TestGuessingDoesNotEndTheUsersCalls: someone guessing alice's password
// from elsewhere puts her name in backoff, but the requests of her live
// allocation (Refresh, CreatePermission) still get through.
func TestGuessingDoesNotEndTheUsersCalls(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "right"},
		Configure: func(c *relay.Config) { c.AuthFailures, c.AuthBackoff = 3, time.Minute }})
	alice := relaytest.NewRawClient(t, tn.Addr())
	alice.Allocate("alice", "right")
	guesser := &relaytest.RawClient{T: t, Conn: relaytest.ListenUDP(t, "udp4", "127.0.0.2:0"), Server: relaytest.UDPAddr(t, tn.Addr())}
	challenge(guesser)
	for i := range 3 {
		if code := relaytest.ErrCode(allocateOnce(guesser, 2*time.Second, "alice", fmt.Sprintf("guess%d", i))); code != 401 {
			t.Fatalf("guess %d: error %d, want 401", i, code)
		}
	}
	if got := tn.Scrape(`supernode_auth_backoffs_total{scope="user"}`); got != 1 {
		t.Fatalf("auth_backoffs_total{user} = %v, want 1", got)
	}
	if code := relaytest.ErrCode(alice.Do(stun.MethodRefresh, "alice", "right", relaytest.Lifetime(600))); code != 0 {
		t.Errorf("alice's Refresh during the backoff: error %d", code)
	}
	if code := relaytest.ErrCode(alice.Do(stun.MethodCreatePermission, "alice", "right", relaytest.PeerAddr{IP: publicPeer(7), Port: 9})); code != 0 {
		t.Errorf("alice's CreatePermission during the backoff: error %d", code)
	}
	// A new allocation for alice, from a 5-tuple without one, waits.
	other := relaytest.NewRawClient(t, tn.Addr())
	challenge(other)
	if resp := allocateOnce(other, 300*time.Millisecond, "alice", "right"); resp != nil {
		t.Errorf("a new allocation for alice during her backoff was answered: %d", relaytest.ErrCode(resp))
	}
}
