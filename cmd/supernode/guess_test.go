package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/looptest"
)

// once sends one message and waits up to d for its answer (nil if none).
func (c *rawClient) once(d time.Duration, setters ...stun.Setter) *stun.Message {
	c.t.Helper()
	m, err := stun.Build(setters...)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.WriteTo(m.Raw, c.server); err != nil {
		c.t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	for {
		n, _, err := c.conn.ReadFrom(buf)
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
func (c *rawClient) allocateOnce(d time.Duration, user, pass string) *stun.Message {
	return c.once(d, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedTransport(17),
		stun.NewUsername(user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
		stun.NewLongTermIntegrity(user, c.realm, pass), stun.Fingerprint)
}

// challenge gets a nonce and the realm with an unauthenticated Allocate.
func (c *rawClient) challenge() {
	c.t.Helper()
	resp := c.roundTrip(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedTransport(17))
	var n stun.Nonce
	var r stun.Realm
	if errCode(resp) != 401 || n.GetFrom(resp) != nil || r.GetFrom(resp) != nil {
		c.t.Fatalf("no 401 challenge: %v", resp)
	}
	c.nonce, c.realm = string(n), string(r)
}

// TestPasswordGuessingBackoff guesses alice's password from one IP as fast
// as the node answers: after --auth-failures wrong ones, requests for alice
// (from any IP) and non-REST requests from that IP are dropped, even with
// the right password; another user's REST credential keeps working from
// that IP; after the backoff the right password works again.
func TestPasswordGuessingBackoff(t *testing.T) {
	tn := startNode(t, "--user", "alice:right", "--auth-secret", "s3cret", "--auth-failures", "5", "--auth-backoff", "1s")
	guesser := newRawClient(t, tn.udp)
	guesser.challenge()
	for i := range 5 {
		if code := errCode(guesser.allocateOnce(2*time.Second, "alice", fmt.Sprintf("guess%d", i))); code != 401 {
			t.Fatalf("guess %d: error %d, want 401", i, code)
		}
	}
	started := time.Now()
	if resp := guesser.allocateOnce(300*time.Millisecond, "alice", "right"); resp != nil && time.Since(started) < time.Second {
		t.Fatalf("the right password during the backoff was answered: %d", errCode(resp))
	}
	if got := scrape(t, tn.http, `supernode_auth_backoffs_total{scope="ip"}`); got != 1 {
		t.Errorf("auth_backoffs_total{ip} = %v, want 1", got)
	}
	if got := scrape(t, tn.http, `supernode_auth_backoffs_total{scope="user"}`); got != 1 {
		t.Errorf("auth_backoffs_total{user} = %v, want 1", got)
	}
	if got := scrape(t, tn.http, `supernode_packets_dropped_total{reason="auth_backoff"}`); got < 1 {
		t.Errorf("packets_dropped_total{auth_backoff} = %v, want at least 1", got)
	}
	// Another user's REST credential from the same IP still works.
	u := fmt.Sprintf("%d:bob", time.Now().Add(time.Hour).Unix())
	bob := newRawClient(t, tn.udp)
	bob.allocate(u, allocation.RESTPassword("s3cret", u))
	// Alice from another IP is in the backoff too (it keys on her name).
	other := &rawClient{t: t, conn: mustListenUDP(t, "udp4", "127.0.0.2:0"), server: mustUDPAddr(t, tn.udp)}
	other.challenge()
	if resp := other.allocateOnce(300*time.Millisecond, "alice", "right"); resp != nil && time.Since(started) < time.Second {
		t.Fatalf("alice from another IP during her backoff was answered: %d", errCode(resp))
	}
	// When the backoff ends the right password works.
	looptest.Eventually(t, "alice to be let in after the backoff", func() bool {
		return errCode(other.allocateOnce(500*time.Millisecond, "alice", "right")) == 0
	})
}

// TestUnauthenticatedBudget floods Bindings from one IP: past its budget
// they are dropped and counted, each one either answered or counted, while
// a client on another IP is answered.
func TestUnauthenticatedBudget(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--unauth-rate", "20")
	flood := &rawClient{t: t, conn: mustListenUDP(t, "udp4", "127.0.0.3:0"), server: mustUDPAddr(t, tn.udp)}
	const n = 1000
	for range n {
		m := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		if _, err := flood.conn.WriteTo(m.Raw, flood.server); err != nil {
			t.Fatal(err)
		}
	}
	answered := 0
	buf := make([]byte, 2048)
	for {
		_ = flood.conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := flood.conn.ReadFrom(buf); err != nil {
			break
		}
		answered++
	}
	dropped := scrape(t, tn.http, `supernode_packets_dropped_total{reason="unauth_budget"}`)
	if dropped == 0 || answered+int(dropped) != n {
		t.Errorf("%d Bindings answered and %v dropped over budget, want some dropped and %d in all", answered, dropped, n)
	}
	other := &rawClient{t: t, conn: mustListenUDP(t, "udp4", "127.0.0.4:0"), server: mustUDPAddr(t, tn.udp)}
	if resp := other.roundTrip(stun.TransactionID, stun.BindingRequest); errCode(resp) != 0 {
		t.Errorf("a Binding from another IP: %v", resp)
	}
	c := &rawClient{t: t, conn: mustListenUDP(t, "udp4", "127.0.0.4:0"), server: mustUDPAddr(t, tn.udp)}
	c.allocate("alice", "pw")
}

// TestGuessingDoesNotEndTheUsersCalls: someone guessing alice's password
// from elsewhere puts her name in backoff, but the requests of her live
// allocation (Refresh, CreatePermission) still get through.
func TestGuessingDoesNotEndTheUsersCalls(t *testing.T) {
	tn := startNode(t, "--user", "alice:right", "--auth-failures", "3", "--auth-backoff", "1m")
	alice := newRawClient(t, tn.udp)
	alice.allocate("alice", "right")
	guesser := &rawClient{t: t, conn: mustListenUDP(t, "udp4", "127.0.0.2:0"), server: mustUDPAddr(t, tn.udp)}
	guesser.challenge()
	for i := range 3 {
		if code := errCode(guesser.allocateOnce(2*time.Second, "alice", fmt.Sprintf("guess%d", i))); code != 401 {
			t.Fatalf("guess %d: error %d, want 401", i, code)
		}
	}
	if got := scrape(t, tn.http, `supernode_auth_backoffs_total{scope="user"}`); got != 1 {
		t.Fatalf("auth_backoffs_total{user} = %v, want 1", got)
	}
	if code := errCode(alice.do(stun.MethodRefresh, "alice", "right", lifetime(600))); code != 0 {
		t.Errorf("alice's Refresh during the backoff: error %d", code)
	}
	if code := errCode(alice.do(stun.MethodCreatePermission, "alice", "right", peerAddr{IP: publicPeer(7), Port: 9})); code != 0 {
		t.Errorf("alice's CreatePermission during the backoff: error %d", code)
	}
	// A new allocation for alice, from a 5-tuple without one, waits.
	other := newRawClient(t, tn.udp)
	other.challenge()
	if resp := other.allocateOnce(300*time.Millisecond, "alice", "right"); resp != nil {
		t.Errorf("a new allocation for alice during her backoff was answered: %d", errCode(resp))
	}
}
