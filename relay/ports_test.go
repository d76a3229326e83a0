package relay_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// signedAllocate builds an Allocate for UDP relaying signed with c's nonce.
func signedAllocate(c *relaytest.RawClient, user, pass string) *stun.Message {
	c.T.Helper()
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), relaytest.RequestedTransport(17),
		stun.NewUsername(user), stun.NewRealm(c.Realm), stun.NewNonce(c.Nonce), stun.NewLongTermIntegrity(user, c.Realm, pass),
		stun.Fingerprint)
	if err != nil {
		c.T.Fatal(err)
	}
	return m
}

// TestPortRangeExhausted: one user holds every relay port of a 64-port range.
// Another user's Allocate then gets 508 at once, and a stream of such
// refusals does not stall the listener: a third client's Bindings on the
// same socket, queued behind them, are all answered.
func TestPortRangeExhausted(t *testing.T) {
	const ports = 64
	lo, hi := looptest.FreeUDPRange(t, 21000, ports)
	tn := relaytest.Start(t, relaytest.Options{UDPSockets: 1, UserQuota: -1, Users: map[string]string{"hog": "pw", "bob": "pw"},
		Configure: func(c *relay.Config) { c.MinPort, c.MaxPort, c.UserAllocRate, c.UnauthRate = lo, hi, 0, 0 }})
	got := map[int]bool{}
	for i := range ports {
		c := relaytest.NewRawClient(t, tn.Addr())
		resp := c.Do(stun.MethodAllocate, "hog", "pw", relaytest.RequestedTransport(17))
		if code := relaytest.ErrCode(resp); code != 0 {
			t.Fatalf("allocation %d of %d in %d..%d: code %d (is something else on the host binding these ports?)",
				i+1, ports, lo, hi, code)
		}
		port := relaytest.RelayedPort(t, resp)
		if port < lo || port > hi || got[port] {
			t.Fatalf("allocation %d: port %d out of %d..%d or handed out twice", i+1, port, lo, hi)
		}
		got[port] = true
	}

	// (a) The 65th Allocate, by another user, gets 508 Insufficient Capacity.
	bob := relaytest.NewRawClient(t, tn.Addr())
	if code := relaytest.ErrCode(bob.Do(stun.MethodAllocate, "bob", "pw", relaytest.RequestedTransport(17))); code != 508 {
		t.Fatalf("Allocate past the range: code %d, want 508", code)
	}

	// (b) Rounds of ten refused Allocates sent back to back, then a Binding
	// from a third client: the Binding waits in the socket behind them.
	carol := relaytest.NewRawClient(t, tn.Addr())
	const rounds, burst = 20, 10
	buf := make([]byte, 2048)
	for r := range rounds {
		want := map[[stun.TransactionIDSize]byte]bool{}
		for range burst {
			m := signedAllocate(bob, "bob", "pw")
			want[m.TransactionID] = true
			if _, err := bob.Conn.WriteTo(m.Raw, bob.Server); err != nil {
				t.Fatal(err)
			}
		}
		if resp := carol.RoundTrip(stun.TransactionID, stun.BindingRequest, stun.Fingerprint); resp == nil ||
			resp.Type != stun.BindingSuccess {
			t.Fatalf("round %d: Binding behind %d refused Allocates not answered: %v", r, burst, resp)
		}
		// Collect bob's answers: every one a 508 (a bound on the wait, not
		// a timing assertion).
		_ = bob.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(want) > 0 {
			n, _, err := bob.Conn.ReadFrom(buf)
			if err != nil {
				t.Fatalf("round %d: %d refused Allocates unanswered: %v", r, len(want), err)
			}
			resp := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if resp.Decode() != nil || !want[resp.TransactionID] {
				continue
			}
			if code := relaytest.ErrCode(resp); code != 508 {
				t.Fatalf("round %d: Allocate past the range: code %d, want 508", r, code)
			}
			delete(want, resp.TransactionID)
		}
	}
	if got := tn.Counter("allocations_active", "udp"); got != ports {
		t.Fatalf("allocations_active = %v, want %d", got, ports)
	}
}

// TestPortFreedOnDeallocate: a port the range ran out of comes back when its
// allocation is deleted, and the next Allocate gets it.
func TestPortFreedOnDeallocate(t *testing.T) {
	lo, hi := looptest.FreeUDPRange(t, 21000, 4)
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"},
		Configure: func(c *relay.Config) { c.MinPort, c.MaxPort = lo, hi }})
	var clients []*relaytest.RawClient
	var ports []int
	for range 4 {
		c := relaytest.NewRawClient(t, tn.Addr())
		ports = append(ports, relaytest.RelayedPort(t, c.Allocate("alice", "pw")))
		clients = append(clients, c)
	}
	late := relaytest.NewRawClient(t, tn.Addr())
	if code := relaytest.ErrCode(late.Do(stun.MethodAllocate, "alice", "pw", relaytest.RequestedTransport(17))); code != 508 {
		t.Fatalf("Allocate past the range: code %d, want 508", code)
	}
	if code := relaytest.ErrCode(clients[2].Do(stun.MethodRefresh, "alice", "pw", relaytest.Lifetime(0))); code != 0 {
		t.Fatalf("deallocate: code %d", code)
	}
	if got := relaytest.RelayedPort(t, late.Allocate("alice", "pw")); got != ports[2] {
		t.Fatalf("port %d after a deallocation, want the freed %d", got, ports[2])
	}
}

// TestQuotaAllocRateOverUDP: Config.UserAllocRate (--user-alloc-rate) lets
// a burst of five seconds' worth through, refuses the next Allocate with 486
// and counts it as quota="rate"; other users keep their own budget.
func TestQuotaAllocRateOverUDP(t *testing.T) {
	// 0.4 a second: a burst of 2, then one every 2.5 s, so the third
	// Allocate is refused however slowly this machine runs the first two.
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw", "bob": "pw"},
		Configure: func(c *relay.Config) { c.UserAllocRate = 0.4 }})
	for range 2 {
		relaytest.NewRawClient(t, tn.Addr()).Allocate("alice", "pw")
	}
	c := relaytest.NewRawClient(t, tn.Addr())
	if code := relaytest.ErrCode(c.Do(stun.MethodAllocate, "alice", "pw", relaytest.RequestedTransport(17))); code != 486 {
		t.Fatalf("Allocate past the burst: code %d, want 486", code)
	}
	if got := tn.Scrape(`supernode_quota_rejections_total{quota="rate"}`); got != 1 {
		t.Fatalf(`/metrics: supernode_quota_rejections_total{quota="rate"} = %v, want 1`, got)
	}
	if got := tn.Counter("quota", metrics.QuotaUser); got != 0 {
		t.Fatalf("quota_rejections_total{quota=user} = %v, want 0", got)
	}
	relaytest.NewRawClient(t, tn.Addr()).Allocate("bob", "pw")
	if got := tn.Counter("allocations_active", "udp"); got != 3 {
		t.Fatalf("allocations_active = %v, want 3", got)
	}
}

// TestRelayPortsExhaustedLogged: an Allocate that gets 508 because no relay
// port can be bound is logged at warn (pion logs it only at its debug
// level), naming the flags to change.
func TestRelayPortsExhaustedLogged(t *testing.T) {
	held, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.LocalAddr().(*net.UDPAddr).Port
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"},
		Configure: func(c *relay.Config) { c.MinPort, c.MaxPort = port, port }})
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := relaytest.NewClient(t, conn, tn.Addr(), "alice", "pw")
	if _, err := c.Allocate(); err == nil || !strings.Contains(err.Error(), "508") {
		t.Fatalf("Allocate: %v, want 508", err)
	}
	// OnAllocationError and the log line come before pion's answer.
	if logs := tn.Logs.String(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "no free relay port") ||
		!strings.Contains(logs, "--min-port") {
		t.Errorf("no warning about the relay ports:\n%s", logs)
	}
}
