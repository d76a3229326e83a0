package load_test

import (
	"crypto/tls"
	"net/http/httptest"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/endpoint"
	"github.com/supernode/supernode/load/loadtest"
	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// turnload's engine against a relay on loopback (relaytest): small runs
// whose counts are checked against the relay's own metrics.

// alice is the static user every run here signs in as (loadtest.SmallLoad's).
var alice = map[string]string{"alice": "pw"}

func TestTurnloadCleanRun(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: alice, TLS: true})
	for _, tc := range slices.Concat(loadtest.Modes, []loadtest.Mode{{Name: "tls send indications", Transport: "tls", Send: true}}) {
		t.Run(tc.Name, func(t *testing.T) {
			// relay_packets is labelled with the client transport.
			before := tn.Counter("relay_packets", metrics.ClientToPeer, tc.Transport)
			cfg := loadtest.SmallLoad(tn.Addr())
			tc.Apply(&cfg)
			if tc.Transport == "tls" {
				cfg.Server = tn.TLS
				cfg.TLS = &tls.Config{InsecureSkipVerify: true}
			}
			rep := loadtest.Run(t, cfg)
			loadtest.CheckClean(t, rep, cfg.Calls)
			// The relay relayed exactly what turnload sent, plus one setup
			// hello per leg when a channel is bound.
			hellos := 0.0
			if !tc.Send {
				hellos = float64(2 * cfg.Calls)
			}
			if got := tn.Counter("relay_packets", metrics.ClientToPeer, tc.Transport) - before; got != float64(rep.Packets.Sent)+hellos {
				t.Fatalf("node relayed %v packets client->peer, turnload sent %d (+%v hellos)", got, rep.Packets.Sent, hellos)
			}
			looptest.Eventually(t, "allocations released", func() bool { return tn.Server.AllocationCount() == 0 })
		})
	}
}

// TestTurnloadIPv6 runs calls over IPv6 end to end: XOR-PEER-ADDRESS with
// the transaction id in the XOR, and relayed addresses of family IPv6.
func TestTurnloadIPv6(t *testing.T) {
	relaytest.NeedIPv6Loopback(t)
	tn := relaytest.Start(t, relaytest.Options{Users: alice, Listen: []string{"[::1]:0"}, RelayIPs: []string{"::1"}})
	for _, send := range []bool{false, true} {
		cfg := loadtest.SmallLoad(tn.Addr())
		cfg.SendIndications = send
		loadtest.CheckClean(t, loadtest.Run(t, cfg), cfg.Calls)
	}
}

// TestTurnloadScheduleAccounting: at a rate per leg above one packet per
// millisecond tick, every packet the schedule asks for is either sent or
// counted as unsent by the loader, never silently skipped.
func TestTurnloadScheduleAccounting(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: alice})
	cfg := loadtest.SmallLoad(tn.Addr())
	cfg.Calls, cfg.PPS, cfg.Duration = 1, 5000, 500*time.Millisecond
	rep := loadtest.Run(t, cfg)
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

// TestTurnloadReportsRelayLoss makes the relay drop a share of the media
// with its bandwidth limit (MaxBPS, the daemon's --max-bps) and checks
// turnload's loss against the relay's own drop count.
func TestTurnloadReportsRelayLoss(t *testing.T) {
	// Each leg offers 50 pps x 172 bytes = 68.8 kbit/s; allow about half.
	tn := relaytest.Start(t, relaytest.Options{Users: alice, Configure: func(c *relay.Config) { c.MaxBPS = 34400 }})
	cfg := loadtest.SmallLoad(tn.Addr())
	cfg.Duration = 3 * time.Second
	rep := loadtest.Run(t, cfg)
	if rep.Calls.Established != cfg.Calls {
		t.Fatalf("calls %+v, errors %v", rep.Calls, rep.Errors)
	}
	drops := tn.Counter("dropped", "rate_limit")
	if float64(rep.Packets.Lost) != drops || rep.Packets.Received+rep.Packets.Lost != rep.Packets.Sent {
		t.Fatalf("turnload lost %d of %d; the node dropped %v for rate_limit", rep.Packets.Lost, rep.Packets.Sent, drops)
	}
	// The bucket starts full (half a second of budget), so a bit under half is lost.
	if rep.Packets.LossPercent < 20 || rep.Packets.LossPercent > 60 {
		t.Fatalf("loss %.1f%%, want about 40%% (half the rate, less the burst)", rep.Packets.LossPercent)
	}
	// With the kernel path on, the limit is the kernel's bucket: the calls'
	// media went through it, not through user space.
	kernel := tn.Counter("relay_packets", metrics.ClientToPeer, "udp", metrics.PathKernel)
	user := tn.Counter("relay_packets", metrics.ClientToPeer, "udp", metrics.PathUser)
	t.Logf("offload %v: client-to-peer packets relayed by the kernel %v, by user space %v", tn.Offload != nil, kernel, user)
	if tn.Offload != nil && kernel < user {
		t.Errorf("the kernel relayed %v packets and user space %v: the limit was not the kernel's", kernel, user)
	}
	if tn.Offload == nil && kernel != 0 {
		t.Errorf("the kernel relayed %v packets with the kernel path off", kernel)
	}
}

func TestTurnloadCredentials(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Secrets: []string{"s3cret"}})
	t.Run("rest secret", func(t *testing.T) {
		cfg := loadtest.SmallLoad(tn.Addr())
		cfg.Username, cfg.Password, cfg.Secret = "", "", "s3cret"
		loadtest.CheckClean(t, loadtest.Run(t, cfg), cfg.Calls)
	})
	t.Run("ice servers endpoint", func(t *testing.T) {
		cfg := loadtest.SmallLoad("")
		cfg.Username, cfg.Password = "", ""
		cfg.ICEServers = "http://" + startICEServers(t, tn) + "/v1/ice-servers?ttl=600"
		loadtest.CheckClean(t, loadtest.Run(t, cfg), cfg.Calls)
	})
	t.Run("wrong secret", func(t *testing.T) {
		cfg := loadtest.SmallLoad(tn.Addr())
		cfg.Username, cfg.Password, cfg.Secret = "", "", "not-the-secret"
		cfg.Calls, cfg.Duration = 3, 200*time.Millisecond
		rep := loadtest.Run(t, cfg)
		if rep.Calls.Established != 0 || rep.Calls.Failed != 3 || rep.Errors["allocate_401"] != 3 {
			t.Fatalf("calls %+v errors %v, want 3 failed with allocate_401", rep.Calls, rep.Errors)
		}
	})
}

// startICEServers serves supernode's HTTP API (package api, which answers
// /v1/ice-servers with credentials minted from tn's secret and the URLs of
// tn's listener) on 127.0.0.1 until the test ends, and returns its
// host:port.
func startICEServers(t *testing.T, tn *relaytest.Node) string {
	t.Helper()
	h, err := api.New(api.Config{Metrics: tn.Metrics, Credentials: tn.Store, Node: tn.Server,
		URLs: endpoint.ListenerURLs("udp", tn.Addr())})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestTurnloadIdleCallsAndServerPID holds idle allocations and reads the
// "server" (this test process, where the relay runs) from /proc.
func TestTurnloadIdleCallsAndServerPID(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: alice})
	cfg := loadtest.SmallLoad(tn.Addr())
	cfg.PPS, cfg.Calls, cfg.Ramp, cfg.Duration = 0, 10, 0, 300*time.Millisecond
	cfg.ServerPID = os.Getpid()
	rep := loadtest.Run(t, cfg)
	if rep.Calls.Established != 10 || rep.Packets.Sent != 0 || rep.Setup.Allocations != 20 {
		t.Fatalf("idle run: calls %+v packets %+v errors %v", rep.Calls, rep.Packets, rep.Errors)
	}
	if rep.Server == nil || rep.Server.PID != os.Getpid() || rep.Server.RSSBeforeBytes <= 0 || rep.Server.RSSLoadedBytes <= 0 {
		t.Fatalf("server report %+v", rep.Server)
	}
	looptest.Eventually(t, "allocations released", func() bool { return tn.Server.AllocationCount() == 0 })
}

// TestTurnloadLeavesNoAllocations: when a run ends, every allocation it made
// is gone from the server at once, even after a burst of hundreds of
// deallocations (turnload waits for the server to answer each one, and
// pion retransmits those the server did not get).
func TestTurnloadLeavesNoAllocations(t *testing.T) {
	// 600 allocations by one static user in one burst: past the default
	// per-user quota and allocation rate, which this test is not about.
	tn := relaytest.Start(t, relaytest.Options{Users: alice, UserQuota: -1, Configure: func(c *relay.Config) { c.UserAllocRate = 0 }})
	cfg := loadtest.SmallLoad(tn.Addr())
	cfg.PPS, cfg.Calls, cfg.Ramp, cfg.Duration = 0, 300, 0, 100*time.Millisecond
	rep := loadtest.Run(t, cfg)
	if rep.Calls.Established != cfg.Calls {
		t.Fatalf("calls %+v errors %v", rep.Calls, rep.ErrorSamples)
	}
	if n := tn.Server.AllocationCount(); n != 0 {
		t.Fatalf("%d of %d allocations still on the server when the run returned", n, rep.Setup.Allocations)
	}
}
