package main

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/load"
	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
)

// turnload's engine against an in-process node: small runs whose counts are
// checked against the node's own metrics.

// smallLoad is a handful of calls for a couple of seconds.
func smallLoad(server string) load.Config {
	return load.Config{
		Server: server, Username: "alice", Password: "pw",
		Calls: 4, Ramp: 20, PPS: 50, Duration: 2 * time.Second, Drain: 500 * time.Millisecond,
	}
}

func runLoad(t *testing.T, cfg load.Config) *load.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := load.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// checkClean asserts a run without loss: every call up, every packet sent
// was received once, and the numbers are plausible.
func checkClean(t *testing.T, rep *load.Report, calls int) {
	t.Helper()
	if rep.Calls.Established != calls || rep.Calls.Failed != 0 || rep.Setup.Allocations != 2*calls {
		t.Fatalf("calls %+v, allocations %d; errors %v %v", rep.Calls, rep.Setup.Allocations, rep.Errors, rep.ErrorSamples)
	}
	// 2 legs x 50 pps x 2 s at least (calls started earlier send longer).
	if min := uint64(calls * 2 * 50 * 2 * 9 / 10); rep.Packets.Sent < min {
		t.Fatalf("sent %d packets, want at least %d", rep.Packets.Sent, min)
	}
	if rep.Packets.Received != rep.Packets.Sent || rep.Packets.Lost != 0 || rep.Packets.Duplicates != 0 {
		t.Fatalf("packets %+v, want every one received once", rep.Packets)
	}
	if len(rep.Errors) != 0 {
		t.Fatalf("errors %v", rep.Errors)
	}
	if rep.LatencyMS.P50 <= 0 || rep.LatencyMS.Max < rep.LatencyMS.P99 || rep.LatencyMS.P99 < rep.LatencyMS.P50 {
		t.Fatalf("latency %+v", rep.LatencyMS)
	}
	if rep.Setup.AllocateMS.P50 <= 0 || rep.Setup.AllocationsPerSecond <= 0 {
		t.Fatalf("setup %+v", rep.Setup)
	}
	if rep.Rate.ReceivedPPS <= 0 || rep.Rate.WindowSeconds < 1.9 {
		t.Fatalf("rate %+v", rep.Rate)
	}
}

func TestTurnloadCleanRun(t *testing.T) {
	cert, key := writeTestCert(t)
	tn := startNode(t, "--user", "alice:pw", "--tls-listen", "127.0.0.1:0", "--cert", cert, "--key", key)
	for _, tc := range []struct {
		name      string
		transport string
		send      bool
	}{
		{"udp channel", "udp", false},
		{"udp send indications", "udp", true},
		{"tcp channel", "tcp", false},
		{"tls send indications", "tls", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// relay_packets is labelled with the client transport.
			before := tn.counter("relay_packets", metrics.ClientToPeer, tc.transport)
			cfg := smallLoad(tn.udp)
			cfg.Transport, cfg.SendIndications = tc.transport, tc.send
			if tc.transport == "tls" {
				cfg.Server = tn.tls
				cfg.TLS = &tls.Config{InsecureSkipVerify: true}
			}
			rep := runLoad(t, cfg)
			checkClean(t, rep, cfg.Calls)
			// The node relayed exactly what turnload sent, plus one setup
			// hello per leg when a channel is bound.
			hellos := 0.0
			if !tc.send {
				hellos = float64(2 * cfg.Calls)
			}
			if got := tn.counter("relay_packets", metrics.ClientToPeer, tc.transport) - before; got != float64(rep.Packets.Sent)+hellos {
				t.Fatalf("node relayed %v packets client->peer, turnload sent %d (+%v hellos)", got, rep.Packets.Sent, hellos)
			}
			looptest.Eventually(t, "allocations released", func() bool { return tn.n.relay.AllocationCount() == 0 })
		})
	}
}

// TestTurnloadIPv6 runs calls over IPv6 end to end: XOR-PEER-ADDRESS with
// the transaction id in the XOR, and relayed addresses of family IPv6.
func TestTurnloadIPv6(t *testing.T) {
	needIPv6Loopback(t)
	tn := startNode(t, "--user", "alice:pw", "--listen", "[::1]:0", "--relay-ip", "::1")
	for _, send := range []bool{false, true} {
		cfg := smallLoad(tn.udp)
		cfg.SendIndications = send
		checkClean(t, runLoad(t, cfg), cfg.Calls)
	}
}

// TestTurnloadScheduleAccounting: at a rate per leg above one packet per
// millisecond tick, every packet the schedule asks for is either sent or
// counted as unsent by the loader, never silently skipped.
func TestTurnloadScheduleAccounting(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw")
	cfg := smallLoad(tn.udp)
	cfg.Calls, cfg.PPS, cfg.Duration = 1, 5000, 500*time.Millisecond
	rep := runLoad(t, cfg)
	if rep.Calls.Established != 1 {
		t.Fatalf("calls %+v errors %v", rep.Calls, rep.Errors)
	}
	// 2 legs x 5000 pps x 0.5 s, less a few ticks at each end.
	want := uint64(2 * 5000 * 0.5 * 0.95)
	if got := rep.Packets.Sent + rep.Loader.Unsent + rep.Loader.Dropped; got < want {
		t.Fatalf("sent %d + unsent %d + dropped %d = %d, want at least %d scheduled",
			rep.Packets.Sent, rep.Loader.Unsent, rep.Loader.Dropped, got, want)
	}
	if rep.Packets.Received > rep.Packets.Sent {
		t.Fatalf("received %d > sent %d", rep.Packets.Received, rep.Packets.Sent)
	}
}

// TestTurnloadReportsRelayLoss makes the node drop a share of the media with
// --max-bps and checks turnload's loss against the node's own drop count.
func TestTurnloadReportsRelayLoss(t *testing.T) {
	// Each leg offers 50 pps x 172 bytes = 68.8 kbit/s; allow about half.
	tn := startNode(t, "--user", "alice:pw", "--max-bps", "34400")
	cfg := smallLoad(tn.udp)
	cfg.Duration = 3 * time.Second
	rep := runLoad(t, cfg)
	if rep.Calls.Established != cfg.Calls {
		t.Fatalf("calls %+v, errors %v", rep.Calls, rep.Errors)
	}
	drops := tn.counter("dropped", "rate_limit")
	if float64(rep.Packets.Lost) != drops || rep.Packets.Received+rep.Packets.Lost != rep.Packets.Sent {
		t.Fatalf("turnload lost %d of %d; the node dropped %v for rate_limit", rep.Packets.Lost, rep.Packets.Sent, drops)
	}
	// The bucket starts full (half a second of budget), so a bit under half is lost.
	if rep.Packets.LossPercent < 20 || rep.Packets.LossPercent > 60 {
		t.Fatalf("loss %.1f%%, want about 40%% (half the rate, less the burst)", rep.Packets.LossPercent)
	}
	// With the kernel path on, the limit is the kernel's bucket: the calls'
	// media went through it, not through user space.
	kernel := tn.counter("relay_packets", metrics.ClientToPeer, "udp", metrics.PathKernel)
	user := tn.counter("relay_packets", metrics.ClientToPeer, "udp", metrics.PathUser)
	t.Logf("offload %v: client-to-peer packets relayed by the kernel %v, by user space %v", tn.n.offload != nil, kernel, user)
	if tn.n.offload != nil && kernel < user {
		t.Errorf("the kernel relayed %v packets and user space %v: the limit was not the kernel's", kernel, user)
	}
	if tn.n.offload == nil && kernel != 0 {
		t.Errorf("the kernel relayed %v packets with the kernel path off", kernel)
	}
}

func TestTurnloadCredentials(t *testing.T) {
	tn := startNode(t, "--auth-secret", "s3cret")
	t.Run("rest secret", func(t *testing.T) {
		cfg := smallLoad(tn.udp)
		cfg.Username, cfg.Password, cfg.Secret = "", "", "s3cret"
		checkClean(t, runLoad(t, cfg), cfg.Calls)
	})
	t.Run("ice servers endpoint", func(t *testing.T) {
		cfg := smallLoad("")
		cfg.Username, cfg.Password = "", ""
		cfg.ICEServers = "http://" + tn.http + "/v1/ice-servers?ttl=600"
		checkClean(t, runLoad(t, cfg), cfg.Calls)
	})
	t.Run("wrong secret", func(t *testing.T) {
		cfg := smallLoad(tn.udp)
		cfg.Username, cfg.Password, cfg.Secret = "", "", "not-the-secret"
		cfg.Calls, cfg.Duration = 3, 200*time.Millisecond
		rep := runLoad(t, cfg)
		if rep.Calls.Established != 0 || rep.Calls.Failed != 3 || rep.Errors["allocate_401"] != 3 {
			t.Fatalf("calls %+v errors %v, want 3 failed with allocate_401", rep.Calls, rep.Errors)
		}
	})
}

// TestTurnloadIdleCallsAndServerPID holds idle allocations and reads the
// "server" (this test process, where the node runs) from /proc.
func TestTurnloadIdleCallsAndServerPID(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw")
	cfg := smallLoad(tn.udp)
	cfg.PPS, cfg.Calls, cfg.Ramp, cfg.Duration = 0, 10, 0, 300*time.Millisecond
	cfg.ServerPID = os.Getpid()
	rep := runLoad(t, cfg)
	if rep.Calls.Established != 10 || rep.Packets.Sent != 0 || rep.Setup.Allocations != 20 {
		t.Fatalf("idle run: calls %+v packets %+v errors %v", rep.Calls, rep.Packets, rep.Errors)
	}
	if rep.Server == nil || rep.Server.PID != os.Getpid() || rep.Server.RSSBeforeBytes <= 0 || rep.Server.RSSLoadedBytes <= 0 {
		t.Fatalf("server report %+v", rep.Server)
	}
	looptest.Eventually(t, "allocations released", func() bool { return tn.n.relay.AllocationCount() == 0 })
}

// TestTurnloadLeavesNoAllocations: when a run ends, every allocation it made
// is gone from the server at once, even after a burst of hundreds of
// deallocations (turnload waits for the server to answer each one, and
// pion retransmits those the server did not get).
func TestTurnloadLeavesNoAllocations(t *testing.T) {
	// 600 allocations by one static user in one burst: past the default
	// --user-quota and --user-alloc-rate, which this test is not about.
	tn := startNode(t, "--user", "alice:pw", "--user-quota", "0", "--user-alloc-rate", "0")
	cfg := smallLoad(tn.udp)
	cfg.PPS, cfg.Calls, cfg.Ramp, cfg.Duration = 0, 300, 0, 100*time.Millisecond
	rep := runLoad(t, cfg)
	if rep.Calls.Established != cfg.Calls {
		t.Fatalf("calls %+v errors %v", rep.Calls, rep.ErrorSamples)
	}
	if n := tn.n.relay.AllocationCount(); n != 0 {
		t.Fatalf("%d of %d allocations still on the server when the run returned", n, rep.Setup.Allocations)
	}
}

func TestTurnloadProbe(t *testing.T) {
	ctx := context.Background()
	t.Run("allowed", func(t *testing.T) {
		cert, key := writeTestCert(t)
		tn := startNode(t, "--user", "alice:pw", "--allow-peer", "127.0.0.1", "--tls-listen", "127.0.0.1:0", "--cert", cert, "--key", key)
		for _, tr := range []struct{ transport, server string }{{"udp", tn.udp}, {"tcp", tn.udp}, {"tls", tn.tls}} {
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
				if n := tn.n.relay.AllocationCount(); n != 0 {
					t.Fatalf("udp: the probe left %d allocations behind", n)
				}
			}
		}
	})
	t.Run("peer refused by default policy", func(t *testing.T) {
		// The probe's peer is 127.0.0.1, the node's own relay IP: the
		// permission is granted (relay-to-relay calls need it) but packets
		// to a port that is not a live relay port are dropped.
		tn := startNode(t, "--user", "alice:pw")
		_, err := load.Probe(ctx, load.Config{Server: tn.udp, Username: "alice", Password: "pw", SetupTimeout: 2 * time.Second})
		var pe *load.ProbeError
		if !errors.As(err, &pe) || pe.Step != "relay" {
			t.Fatalf("err %v, want the relay step to fail", err)
		}
		// peer_denied, or peer_gone when the port once was a relay port.
		if got := tn.counter("dropped", metrics.DropPeerDenied) + tn.counter("dropped", metrics.DropPeerGone); got < 1 {
			t.Fatalf("dropped{peer_denied or peer_gone} = %v, want the probe's packets", got)
		}
	})
	t.Run("private peer refused", func(t *testing.T) {
		// A relay IP other than the peer's: the permission itself is refused.
		tn := startNode(t, "--user", "alice:pw", "--relay-ip", "127.0.0.2")
		_, err := load.Probe(ctx, load.Config{Server: tn.udp, Username: "alice", Password: "pw", SetupTimeout: 2 * time.Second})
		var pe *load.ProbeError
		var te *stun.TurnError
		if !errors.As(err, &pe) || pe.Step != "permission" || !errors.As(err, &te) || te.ErrorCodeAttr.Code != stun.CodeForbidden {
			t.Fatalf("err %v, want a permission step failing with 403", err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		tn := startNode(t, "--user", "alice:pw")
		_, err := load.Probe(ctx, load.Config{Server: tn.udp, Username: "alice", Password: "nope", SetupTimeout: 5 * time.Second})
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
	c := mustListenUDP(t, "udp4", "127.0.0.1:0")
	to := mustUDPAddr(t, target)
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
	tn := startNode(t, "--user", "alice:pw", "--allow-peer", "127.0.0.1")
	redirector := startRedirector(t, tn.udp, "alice", "pw")
	cfg := smallLoad(redirector)
	rep := runLoad(t, cfg)
	checkClean(t, rep, cfg.Calls)
	if rep.Setup.Redirects != 2*cfg.Calls {
		t.Fatalf("redirects %d, want one per leg (%d)", rep.Setup.Redirects, 2*cfg.Calls)
	}
	if got := tn.counter("allocations_created", "udp"); got != float64(2*cfg.Calls) {
		t.Fatalf("node created %v allocations, want %d", got, 2*cfg.Calls)
	}
	res, err := load.Probe(context.Background(), load.Config{Server: redirector, Username: "alice", Password: "pw", SetupTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Redirected || res.Server != tn.udp {
		t.Fatalf("probe %+v, want redirected to %s", res, tn.udp)
	}
}
