package load_test

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/load"
	"github.com/supernode/supernode/load/loadtest"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/relay/relaytest"
)

// turnload's prober, and its following of redirects, against a relay on
// loopback (relaytest).

func TestTurnloadProbe(t *testing.T) {
	ctx := context.Background()
	t.Run("allowed", func(t *testing.T) {
		tn := relaytest.Start(t, relaytest.Options{Users: alice, AllowPeer: []string{"127.0.0.1"}, TLS: true})
		for _, tr := range []struct{ transport, server string }{{"udp", tn.Addr()}, {"tcp", tn.Addr()}, {"tls", tn.TLS}} {
			cfg := load.Config{Server: tr.server, Transport: tr.transport, Username: "alice", Password: "pw", SetupTimeout: 5 * time.Second}
			if tr.transport == "tls" {
				cfg.TLS = &tls.Config{InsecureSkipVerify: true}
			}
			res, err := load.Probe(ctx, cfg)
			if err != nil {
				t.Fatalf("%s: %v", tr.transport, err)
			}
			if res.Relayed == "" || res.RoundTrip <= 0 || res.Allocate <= 0 {
				t.Fatalf("%s: probe %+v", tr.transport, res)
			}
			if tr.transport == "udp" {
				// A probe run every few seconds must not pile up allocations.
				if n := tn.Server.AllocationCount(); n != 0 {
					t.Fatalf("udp: the probe left %d allocations behind", n)
				}
			}
		}
	})
	t.Run("peer refused by default policy", func(t *testing.T) {
		// The probe's peer is 127.0.0.1, the relay's own relay IP: the
		// permission is granted (relay-to-relay calls need it) but packets
		// to a port that is not a live relay port are dropped.
		tn := relaytest.Start(t, relaytest.Options{Users: alice})
		_, err := load.Probe(ctx, load.Config{Server: tn.Addr(), Username: "alice", Password: "pw", SetupTimeout: 2 * time.Second})
		var pe *load.ProbeError
		if !errors.As(err, &pe) || pe.Step != "relay" {
			t.Fatalf("err %v, want the relay step to fail", err)
		}
		// peer_denied, or peer_gone when the port once was a relay port.
		if got := tn.Counter("dropped", metrics.DropPeerDenied) + tn.Counter("dropped", metrics.DropPeerGone); got < 1 {
			t.Fatalf("dropped{peer_denied or peer_gone} = %v, want the probe's packets", got)
		}
	})
	t.Run("private peer refused", func(t *testing.T) {
		// A relay IP other than the peer's: the permission itself is refused.
		tn := relaytest.Start(t, relaytest.Options{Users: alice, RelayIPs: []string{"127.0.0.2"}})
		_, err := load.Probe(ctx, load.Config{Server: tn.Addr(), Username: "alice", Password: "pw", SetupTimeout: 2 * time.Second})
		var pe *load.ProbeError
		var te *stun.TurnError
		if !errors.As(err, &pe) || pe.Step != "permission" || !errors.As(err, &te) || te.ErrorCodeAttr.Code != stun.CodeForbidden {
			t.Fatalf("err %v, want a permission step failing with 403", err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		tn := relaytest.Start(t, relaytest.Options{Users: alice})
		_, err := load.Probe(ctx, load.Config{Server: tn.Addr(), Username: "alice", Password: "nope", SetupTimeout: 5 * time.Second})
		var pe *load.ProbeError
		if !errors.As(err, &pe) || pe.Step != "allocate" {
			t.Fatalf("err %v, want the allocate step to fail", err)
		}
	})
}

// startRedirector answers every Allocate on a UDP socket the way a fleet
// node that does not own the call does: 401 with realm and nonce to the
// first attempt, then an authenticated 300 Try Alternate naming target.
func startRedirector(t *testing.T, target, user, pass string) string {
	t.Helper()
	c := relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")
	to := relaytest.UDPAddr(t, target)
	realm, nonce := stun.NewRealm("redirect.test"), stun.NewNonce("n0nce")
	key := stun.NewLongTermIntegrity(user, realm.String(), pass)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil || req.Type != stun.NewType(stun.MethodAllocate, stun.ClassRequest) {
				continue
			}
			errType := stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse)
			var resp *stun.Message
			if !req.Contains(stun.AttrMessageIntegrity) {
				resp = stun.MustBuild(req, errType, stun.CodeUnauthorized, realm, nonce, stun.Fingerprint)
			} else if key.Check(req) == nil {
				resp = stun.MustBuild(req, errType, stun.CodeTryAlternate,
					&stun.AlternateServer{IP: to.IP, Port: to.Port}, key, stun.Fingerprint)
			} else {
				continue
			}
			_, _ = c.WriteTo(resp.Raw, from)
		}
	}()
	return c.LocalAddr().String()
}

// TestTurnloadFollowsTryAlternate: turnload (and its probe) follow an
// authenticated 300 to the ALTERNATE-SERVER, as browsers do, and count it.
func TestTurnloadFollowsTryAlternate(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: alice, AllowPeer: []string{"127.0.0.1"}})
	redirector := startRedirector(t, tn.Addr(), "alice", "pw")
	cfg := loadtest.SmallLoad(redirector)
	rep := loadtest.Run(t, cfg)
	loadtest.CheckClean(t, rep, cfg.Calls)
	if rep.Setup.Redirects != 2*cfg.Calls {
		t.Fatalf("redirects %d, want one per leg (%d)", rep.Setup.Redirects, 2*cfg.Calls)
	}
	if got := tn.Counter("allocations_created", "udp"); got != float64(2*cfg.Calls) {
		t.Fatalf("node created %v allocations, want %d", got, 2*cfg.Calls)
	}
	res, err := load.Probe(context.Background(), load.Config{Server: redirector, Username: "alice", Password: "pw", SetupTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Redirected || res.Server != tn.Addr() {
		t.Fatalf("probe %+v, want redirected to %s", res, tn.Addr())
	}
}
