// Package loadtest runs turnload's engine (package load) from tests: a
// small run of a few calls (SmallLoad), the run itself with a bound on its
// length (Run), and the check that a run lost nothing (CheckClean). The
// tests of load itself use it against relaytest nodes, relay's tests to
// compare session records with what turnload sent, and cmd/supernode's
// against the daemon, a fleet of them or coturn.
package loadtest

import (
	"context"
	"testing"
	"time"

	"github.com/supernode/supernode/load"
)

// SmallLoad is a handful of calls (4, as user alice with password pw) at
// 50 packets per second per leg for two seconds, against server.
func SmallLoad(server string) load.Config {
	return load.Config{
		Server: server, Username: "alice", Password: "pw",
		Calls: 4, Ramp: 20, PPS: 50, Duration: 2 * time.Second, Drain: 500 * time.Millisecond,
	}
}

// Run runs cfg, for at most a minute, and fails t if the run cannot start
// or finish.
func Run(t testing.TB, cfg load.Config) *load.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := load.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// CheckClean fails t unless rep is a run of SmallLoad's rate without loss:
// all calls up, every packet sent received once, and plausible latency,
// setup and rate figures.
func CheckClean(t testing.TB, rep *load.Report, calls int) {
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

// Mode is one way of relaying media a run can take: a client transport,
// and a bound channel or Send indications.
type Mode struct {
	Name      string
	Transport string
	Send      bool
}

// Modes are the ways every TURN server here relays: UDP with a channel, UDP
// with Send indications, TCP with a channel. Tests add TLS where the server
// has a TLS listener.
var Modes = []Mode{
	{"udp channel", "udp", false},
	{"udp send indications", "udp", true},
	{"tcp channel", "tcp", false},
}

// Apply sets cfg's transport and indications as m says.
func (m Mode) Apply(cfg *load.Config) { cfg.Transport, cfg.SendIndications = m.Transport, m.Send }
