package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/load"
	"github.com/supernode/supernode/load/loadtest"
	"github.com/supernode/supernode/looptest"
)

// startCoturn runs coturn's turnserver on 127.0.0.1 (UDP and TCP on one
// free port, user alice:pw) and returns its address once it answers a STUN
// Binding request. It is stopped when the test ends.
func startCoturn(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		msg := "turnserver not on PATH: apt-get install coturn to run the interop tests"
		if os.Getenv("SUPERNODE_REQUIRE_INTEROP") != "" {
			t.Fatal(msg + " (SUPERNODE_REQUIRE_INTEROP is set)")
		}
		t.Skip(msg)
	}
	port := looptest.FreePort(t, "127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), interopTimeout)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-n", "--listening-ip", "127.0.0.1", "--listening-port", strconv.Itoa(port),
		"--relay-ip", "127.0.0.1", "--lt-cred-mech", "--user", "alice:pw", "--realm", "coturn.test",
		"--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls", "--log-file", "stdout", "--simple-log",
		"--pidfile", t.TempDir()+"/turnserver.pid")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start turnserver: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("turnserver output:\n%s", out.String())
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := mustListenUDP(t, "udp4", "127.0.0.1:0")
	to := mustUDPAddr(t, addr)
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	buf := make([]byte, 1500)
	for range 100 {
		select {
		case err := <-exited:
			t.Fatalf("turnserver exited before serving: %v\n%s", err, out.String())
		default:
		}
		_, _ = c.WriteTo(req.Raw, to)
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := c.ReadFrom(buf); err == nil && stun.IsMessage(buf[:n]) {
			return addr
		}
	}
	t.Fatalf("turnserver on %s did not answer a Binding request within 10s\n%s", addr, out.String())
	return ""
}

// TestInteropTurnloadCoturn: turnload works against the reference TURN
// server too (that is how the benchmark measures coturn), with every
// packet accounted for.
func TestInteropTurnloadCoturn(t *testing.T) {
	server := startCoturn(t)
	for _, tc := range loadtest.Modes {
		t.Run(tc.Name, func(t *testing.T) {
			cfg := loadtest.SmallLoad(server)
			tc.Apply(&cfg)
			loadtest.CheckClean(t, loadtest.Run(t, cfg), cfg.Calls)
		})
	}
	t.Run("probe", func(t *testing.T) {
		res, err := load.Probe(context.Background(), load.Config{Server: server, Username: "alice", Password: "pw", SetupTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if res.RoundTrip <= 0 {
			t.Fatalf("probe %+v", res)
		}
	})
}
