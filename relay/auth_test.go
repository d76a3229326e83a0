package relay_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/relay/relaytest"
)

func TestAuthWrongPassword(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "right"}})
	c := relaytest.NewRawClient(t, tn.Addr())
	if code := relaytest.ErrCode(c.Do(stun.MethodAllocate, "alice", "wrong", relaytest.RequestedTransport(17))); code != 401 {
		t.Fatalf("wrong password: code %d, want 401", code)
	}
	if got := tn.Counter("auth_failures", "bad_password"); got < 1 {
		t.Fatalf("auth_failures{bad_password} = %v", got)
	}
	if got := tn.Counter("allocations_created", "udp"); got != 0 {
		t.Fatalf("an allocation was created: %v", got)
	}
	// And with pion's client, the way an application sees it.
	pc := relaytest.NewClient(t, relaytest.ListenUDP(t, "udp4", "127.0.0.1:0"), tn.Addr(), "alice", "wrong")
	if _, err := pc.Allocate(); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("pion client with wrong password: %v, want a 401 error", err)
	}
}

func TestAuthRESTCredentials(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Secrets: []string{"s3cret", "older"}})
	now := time.Now()
	for _, tc := range []struct {
		name     string
		expiry   time.Time
		secret   string
		wantCode int
		reason   string
	}{
		{"valid, first secret", now.Add(time.Hour), "s3cret", 0, ""},
		{"valid, second secret (rotation)", now.Add(time.Hour), "older", 0, ""},
		{"expired", now.Add(-time.Minute), "s3cret", 401, "expired"},
		{"unknown secret", now.Add(time.Hour), "nope", 401, "bad_password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := fmt.Sprintf("%d:caller-%d", tc.expiry.Unix(), time.Now().UnixNano())
			pass := allocation.RESTPassword(tc.secret, user)
			before := 0.0
			if tc.reason != "" {
				before = tn.Counter("auth_failures", tc.reason)
			}
			c := relaytest.NewRawClient(t, tn.Addr())
			if code := relaytest.ErrCode(c.Do(stun.MethodAllocate, user, pass, relaytest.RequestedTransport(17))); code != tc.wantCode {
				t.Fatalf("code %d, want %d", code, tc.wantCode)
			}
			if tc.reason != "" && tn.Counter("auth_failures", tc.reason) <= before {
				t.Fatalf("auth_failures{%s} did not move", tc.reason)
			}
		})
	}
}

func TestAuthAllocationBelongsToItsUser(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pa", "mallory": "pm"}, AllowPeer: []string{"127.0.0.1"}})
	c := relaytest.NewRawClient(t, tn.Addr())
	c.Allocate("alice", "pa")
	peer := relaytest.PeerAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	// Same 5-tuple, another valid user: every request is refused.
	for _, tc := range []struct {
		method stun.Method
		attrs  []stun.Setter
	}{
		{stun.MethodCreatePermission, []stun.Setter{peer}},
		{stun.MethodChannelBind, []stun.Setter{relaytest.ChannelNumber(0x4001), peer}},
		{stun.MethodRefresh, []stun.Setter{relaytest.Lifetime(0)}},
		{stun.MethodAllocate, []stun.Setter{relaytest.RequestedTransport(17)}},
	} {
		if code := relaytest.ErrCode(c.Do(tc.method, "mallory", "pm", tc.attrs...)); code != 437 {
			t.Errorf("%v as mallory on alice's allocation: code %d, want 437", tc.method, code)
		}
	}
	if got := tn.Counter("auth_failures", "wrong_owner"); got < 3 {
		t.Errorf("auth_failures{wrong_owner} = %v, want >= 3", got)
	}
	// Alice herself still can.
	if code := relaytest.ErrCode(c.Do(stun.MethodCreatePermission, "alice", "pa", peer)); code != 0 {
		t.Fatalf("alice's own CreatePermission: code %d", code)
	}
	if got := tn.Counter("allocations_active", "udp"); got != 1 {
		t.Fatalf("allocations_active = %v, want alice's 1", got)
	}
}

func TestQuotaUnderConcurrentAllocates(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{UDPSockets: 4, UserQuota: 3, TotalQuota: 8,
		Users: map[string]string{"u0": "p", "u1": "p", "u2": "p", "u3": "p"}})
	const clients = 24 // 4 users x 6 attempts, half over UDP, half over TCP
	var wg sync.WaitGroup
	var mu sync.Mutex
	okPerUser := map[string]int{}
	codes := map[int]int{}
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("u%d", i%4)
			var err error
			if i%2 == 0 {
				c := relaytest.NewClient(t, relaytest.ListenUDP(t, "udp4", "127.0.0.1:0"), tn.Addr(), user, "p")
				var rc net.PacketConn
				if rc, err = c.Allocate(); err == nil {
					t.Cleanup(func() { _ = rc.Close() })
				}
			} else {
				c := relaytest.StreamClient(t, "tcp", tn.Addr(), user, "p")
				var rc net.PacketConn
				if rc, err = c.Allocate(); err == nil {
					t.Cleanup(func() { _ = rc.Close() })
				}
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				okPerUser[user]++
				codes[0]++
			case strings.Contains(err.Error(), "486"):
				codes[486]++
			default:
				codes[-1]++
				t.Errorf("allocate %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if codes[0] != 8 || codes[486] != clients-8 {
		t.Fatalf("results %v, want exactly 8 allocations and %d x 486", codes, clients-8)
	}
	for u, n := range okPerUser {
		if n > 3 {
			t.Errorf("%s got %d allocations, over --user-quota 3", u, n)
		}
	}
	if got := tn.Counter("quota", "user") + tn.Counter("quota", "total"); got != clients-8 {
		t.Errorf("quota_rejections_total = %v, want %d", got, clients-8)
	}
	if got := tn.Counter("allocations_active", "udp") + tn.Counter("allocations_active", "tcp"); got != 8 {
		t.Errorf("allocations_active = %v, want 8", got)
	}
}
