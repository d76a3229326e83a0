package relay_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay/relaytest"
)

// publicPeer is the i-th of a run of public IPv4 addresses (11.0.0.0/8). The
// tests only create permissions for them and send them nothing.
func publicPeer(i int) net.IP { return net.IPv4(11, byte(i>>16), byte(i>>8), byte(i)) }

// TestPermissionFloodIsBounded tries what froze a listener before: one
// allocation asking for tens of thousands of permissions and channels. The
// node grants the limit, refuses the rest with 508 and counts them, and
// when the allocation is closed with everything it holds, a client on the
// same socket keeps getting answers.
func TestPermissionFloodIsBounded(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw", "bob": "pw"}, UDPSockets: 1})
	a := relaytest.NewRawClient(t, tn.Addr())
	a.Allocate("alice", "pw")
	const perRequest = 16
	granted, refused := 0, 0
	for req := 0; req < 200; req++ { // 3,200 peer IPs asked for: bounded
		var peers []stun.Setter
		for i := range perRequest {
			peers = append(peers, relaytest.PeerAddr{IP: publicPeer(req*perRequest + i), Port: 9})
		}
		switch code := relaytest.ErrCode(a.Do(stun.MethodCreatePermission, "alice", "pw", peers...)); code {
		case 0:
			granted += perRequest
		case 508:
			refused++
		default:
			t.Fatalf("CreatePermission %d: error %d", req, code)
		}
	}
	if granted != 128 || refused != 200-128/perRequest {
		t.Fatalf("granted %d permissions and refused %d requests, want 128 and %d", granted, refused, 200-128/perRequest)
	}
	if got := tn.Scrape(`supernode_limit_rejections_total{limit="permissions"}`); got != float64(refused) {
		t.Errorf("limit_rejections_total{permissions} = %v, want %d", got, refused)
	}
	if got := tn.Scrape("supernode_permissions_active"); got != 128 {
		t.Errorf("permissions_active = %v, want 128", got)
	}
	if code := relaytest.ErrCode(a.Do(stun.MethodCreatePermission, "alice", "pw", relaytest.PeerAddr{IP: publicPeer(1), Port: 9})); code != 0 {
		t.Errorf("refreshing an existing permission at the limit: error %d", code)
	}
	// Too many addresses in one request: 400.
	var many []stun.Setter
	for i := range 17 {
		many = append(many, relaytest.PeerAddr{IP: publicPeer(i), Port: 9})
	}
	if code := relaytest.ErrCode(a.Do(stun.MethodCreatePermission, "alice", "pw", many...)); code != 400 {
		t.Errorf("17 peer addresses in one request: error %d, want 400", code)
	}
	// Channels: 64 bind, the 65th and later are refused.
	for ch := 0; ch < 100; ch++ {
		code := relaytest.ErrCode(a.Do(stun.MethodChannelBind, "alice", "pw", relaytest.ChannelNumber(0x4000+ch), relaytest.PeerAddr{IP: publicPeer(ch), Port: 9}))
		if want := 0; ch >= 64 {
			want = 508
			if code != want {
				t.Fatalf("channel %d: error %d, want %d", ch, code, want)
			}
		} else if code != want {
			t.Fatalf("channel %d: error %d, want %d", ch, code, want)
		}
	}
	if got := tn.Scrape("supernode_channels_active"); got != 64 {
		t.Errorf("channels_active = %v, want 64", got)
	}

	// Close the biggest allocation allowed while bob's Bindings go on on
	// the same socket: every one is answered.
	b := relaytest.NewRawClient(t, tn.Addr())
	var answered, asked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			asked.Add(1)
			if b.RoundTrip(stun.TransactionID, stun.BindingRequest) != nil {
				answered.Add(1)
			}
		}
	}()
	if code := relaytest.ErrCode(a.Do(stun.MethodRefresh, "alice", "pw", relaytest.Lifetime(0))); code != 0 {
		t.Fatalf("Refresh(0): error %d", code)
	}
	time.Sleep(50 * time.Millisecond) // a few more Bindings after the close
	close(stop)
	wg.Wait()
	if asked.Load() == 0 || answered.Load() != asked.Load() {
		t.Errorf("bob: %d of %d Bindings answered while alice's allocation closed", answered.Load(), asked.Load())
	}
	looptest.Eventually(t, "gauges back to zero", func() bool {
		return tn.Scrape("supernode_permissions_active") == 0 && tn.Scrape("supernode_channels_active") == 0
	})
}

// TestNonceBoundToClientIP replays a nonce handed to 127.0.0.1 from
// 127.0.0.2 with valid credentials: 438 with a nonce for the new address,
// which then works.
func TestNonceBoundToClientIP(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}})
	a := relaytest.NewRawClient(t, tn.Addr())
	a.Allocate("alice", "pw") // a.Nonce is now one handed to 127.0.0.1
	c := &relaytest.RawClient{T: t, Conn: relaytest.ListenUDP(t, "udp4", "127.0.0.2:0"), Server: relaytest.UDPAddr(t, tn.Addr())}
	resp := c.RoundTrip(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), relaytest.RequestedTransport(17),
		stun.NewUsername("alice"), stun.NewRealm(a.Realm), stun.NewNonce(a.Nonce),
		stun.NewLongTermIntegrity("alice", a.Realm, "pw"), stun.Fingerprint)
	if code := relaytest.ErrCode(resp); code != 438 {
		t.Fatalf("another IP's nonce: error %d, want 438", code)
	}
	var n stun.Nonce
	if err := n.GetFrom(resp); err != nil || string(n) == a.Nonce {
		t.Fatalf("438 carries nonce %q, want a new one", n)
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(resp); err != nil || string(ec.Reason) != "Stale Nonce" {
		t.Errorf("reason phrase %q, want Stale Nonce", ec.Reason)
	}
	c.Nonce, c.Realm = string(n), a.Realm
	c.Allocate("alice", "pw")
}

// TestCredentialShapes: REST credentials expiring too far ahead and
// usernames too long or with control bytes are refused (counted as
// bad_username); every error response carries its reason phrase.
func TestCredentialShapes(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Secrets: []string{"s3cret"}})
	tn.Store.SetMaxTTL(48 * time.Hour) // --max-credential-ttl 48h
	mint := func(expiry time.Time, id string) (string, string) {
		u := fmt.Sprintf("%d:%s", expiry.Unix(), id)
		return u, allocation.RESTPassword("s3cret", u)
	}
	cases := []struct {
		name string
		user func() (string, string)
		code int
	}{
		{"year 5138", func() (string, string) { return mint(time.Date(5138, 1, 1, 0, 0, 0, 0, time.UTC), "alice") }, 401},
		{"beyond --max-credential-ttl", func() (string, string) { return mint(time.Now().Add(72*time.Hour), "alice") }, 401},
		{"512-byte username", func() (string, string) { return mint(time.Now().Add(time.Hour), strings.Repeat("a", 501)) }, 401},
		{"NUL in the username", func() (string, string) { return mint(time.Now().Add(time.Hour), "al\x00ice") }, 401},
		{"newline in the username", func() (string, string) { return mint(time.Now().Add(time.Hour), "al\nice") }, 401},
		{"a good one", func() (string, string) { return mint(time.Now().Add(47*time.Hour), "alice") }, 0},
	}
	bad := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, p := tc.user()
			c := relaytest.NewRawClient(t, tn.Addr())
			resp := c.Do(stun.MethodAllocate, u, p, relaytest.RequestedTransport(17))
			if code := relaytest.ErrCode(resp); code != tc.code {
				t.Fatalf("error %d, want %d", code, tc.code)
			}
			if tc.code != 0 {
				bad++
				var ec stun.ErrorCodeAttribute
				if err := ec.GetFrom(resp); err != nil || string(ec.Reason) != "Unauthorized" {
					t.Errorf("reason phrase %q", ec.Reason)
				}
			}
		})
	}
	// 911 bytes, as tried: more than pion's client will encode.
	t.Run("911-byte username", func(t *testing.T) {
		u, p := mint(time.Now().Add(time.Hour), strings.Repeat("a", 900))
		c := relaytest.NewRawClient(t, tn.Addr())
		challenge := c.RoundTrip(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), relaytest.RequestedTransport(17))
		var n stun.Nonce
		var r stun.Realm
		if relaytest.ErrCode(challenge) != 401 || n.GetFrom(challenge) != nil || r.GetFrom(challenge) != nil {
			t.Fatalf("no 401 challenge: %v", challenge)
		}
		resp := c.RoundTrip(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), relaytest.RequestedTransport(17),
			stun.RawAttribute{Type: stun.AttrUsername, Value: []byte(u)}, r, n,
			stun.NewLongTermIntegrity(u, string(r), p), stun.Fingerprint)
		if code := relaytest.ErrCode(resp); code != 401 {
			t.Fatalf("error %d, want 401", code)
		}
		bad++
	})
	if got := tn.Scrape(`supernode_auth_failures_total{reason="bad_username"}`); got < float64(bad) {
		t.Errorf("auth_failures_total{bad_username} = %v, want at least %d", got, bad)
	}
	// A refusal the node makes itself and one pion makes both carry a
	// reason phrase.
	c := relaytest.NewRawClient(t, tn.Addr())
	u, p := mint(time.Now().Add(time.Hour), "bob")
	c.Allocate(u, p)
	for _, tc := range []struct {
		method stun.Method
		attrs  []stun.Setter
		reason string
	}{
		{stun.MethodCreatePermission, []stun.Setter{relaytest.PeerAddr{IP: net.IPv4(10, 0, 0, 1), Port: 9}}, "Forbidden"}, // permission only: nothing is sent
		{stun.MethodAllocate, []stun.Setter{relaytest.RequestedTransport(17)}, "Allocation Mismatch"},
	} {
		resp := c.Do(tc.method, u, p, tc.attrs...)
		var ec stun.ErrorCodeAttribute
		if err := ec.GetFrom(resp); err != nil || string(ec.Reason) != tc.reason {
			t.Errorf("%v: error %v %q, want reason %q", tc.method, ec.Code, ec.Reason, tc.reason)
		}
		if err := stun.NewLongTermIntegrity(u, c.Realm, p).Check(resp); err != nil {
			t.Errorf("%v: answer no longer verifies: %v", tc.method, err)
		}
	}
}
