package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestServers starts each real server the way the harness does, checks it
// answers a STUN Binding on its port (and supernode /readyz and, with
// --pprof, /debug/pprof/ and /metrics), stops it, and checks the process is
// gone and its port free again. coturn is skipped when it is not installed
// (bench/run installs it).
func TestServers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real servers")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	bins := map[Kind]string{}
	sn := filepath.Join(t.TempDir(), "supernode")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", sn, "../cmd/supernode").CombinedOutput(); err != nil {
		t.Fatalf("go build supernode: %v\n%s", err, out)
	}
	bins[Supernode] = sn
	if p, err := exec.LookPath("turnserver"); err == nil {
		bins[Coturn] = p
	}
	for _, k := range []Kind{Supernode, Coturn} {
		t.Run(string(k), func(t *testing.T) {
			bin, ok := bins[k]
			if !ok {
				t.Skip("turnserver not installed (apt-get install coturn)")
			}
			// A relative directory, as bench/run passes (bench/results/...):
			// the server runs in it, so its paths must still resolve.
			top, err := os.MkdirTemp(".", "testdata-run-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(top) })
			dir := filepath.Join(top, "runs", "001")
			s, err := startServer(ctx, k, bin, dir, true, 15*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			if k == Coturn {
				if _, err := os.Stat(filepath.Join(dir, "coturn.log")); err != nil {
					t.Errorf("coturn did not write its log where it was told: %v\n%s", err, tail(s.logFiles(), 5))
				}
			}
			if err := stunBinding(s.Addr, time.Second); err != nil {
				t.Errorf("STUN Binding after ready: %v", err)
			}
			if k == Supernode {
				if err := httpOK(ctx, "http://"+s.HTTP+"/debug/pprof/"); err != nil {
					t.Errorf("pprof: %v", err)
				}
				m, err := scrape(ctx, s.HTTP)
				if active := m.Labelled("supernode_allocations_active", "transport"); err != nil || len(active) == 0 || m.Sum("supernode_allocations_active") != 0 {
					t.Errorf("/metrics: %v; active allocations %v, want zeros", err, active)
				}
			}
			if p, err := readProc(s.PID()); err != nil || p.RSSBytes == 0 {
				t.Errorf("readProc(server) = %+v, %v", p, err)
			}
			if err := s.Stop(5 * time.Second); err != nil {
				t.Errorf("stop: %v", err)
			}
			if !s.Exited() {
				t.Error("server still running after Stop")
			}
			if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(s.PID()))); err == nil {
				t.Error("server process still in /proc")
			}
			u, err := net.ListenPacket("udp", s.Addr)
			if err != nil {
				t.Errorf("port still taken after stop: %v", err)
			} else {
				u.Close()
			}
		})
	}
}

// TestStartServerFailure: a server that exits at once is reported with
// its output, not waited on for the whole ready timeout.
func TestStartServerFailure(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "broken")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'cannot bind: address in use' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := startServer(context.Background(), Coturn, bin, t.TempDir(), false, 30*time.Second, nil)
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "cannot bind") {
		t.Errorf("err = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s to notice the server exited", d)
	}
}

func TestFreePort(t *testing.T) {
	p, err := freePort(true)
	if err != nil {
		t.Fatal(err)
	}
	if p < listenPortLow || p > listenPortHigh || (p >= relayMinPort && p <= relayMaxPort) {
		t.Errorf("freePort = %d, outside %d-%d or inside the relay range", p, listenPortLow, listenPortHigh)
	}
}
