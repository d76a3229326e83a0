package main

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/supernode/supernode/looptest"
)

// buildBinary builds supernode into the test's temporary directory
// (skipped with -short).
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "supernode")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestBinarySIGTERMDrain builds the real binary, runs it, and sends it real
// signals: SIGTERM in the middle of a call drains (the call keeps flowing,
// readiness fails, the process exits 0 once the call ends).
func TestBinarySIGTERMDrain(t *testing.T) {
	bin := buildBinary(t)
	listen, httpAddr := looptest.FreeAddr(t, "127.0.0.1"), looptest.FreeAddr(t, "127.0.0.1")
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--listen", listen, "--http-listen", httpAddr, "--relay-ip", "127.0.0.1",
		"--realm", "supernode.test", "--user", "alice:pw", "--allow-peer", "127.0.0.1", "--drain-timeout", "1m")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("supernode log:\n%s", logs.String())
		}
	})
	ready := func() int {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	looptest.Eventually(t, "the node to be ready", func() bool { return ready() == http.StatusOK })

	peer := mustListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)
	c := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), listen, "alice", "pw")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	s := startStreamer(t, relayConn, peer.LocalAddr())
	looptest.Eventually(t, "traffic", func() bool { return s.Got.Load() > 5 })

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	looptest.Eventually(t, "readyz to fail", func() bool { return ready() == http.StatusServiceUnavailable })
	before := s.Got.Load()
	time.Sleep(time.Second)
	if s.Got.Load()-before < 20 {
		t.Fatalf("call stalled after SIGTERM: %d packets in a second", s.Got.Load()-before)
	}
	select {
	case err := <-exited:
		t.Fatalf("exited during the drain with the call up: %v", err)
	default:
	}
	s.Finish()
	if s.Got.Load() != s.Sent.Load() {
		t.Errorf("packets lost across SIGTERM: sent %d, echoed %d", s.Sent.Load(), s.Got.Load())
	}
	_ = relayConn.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after drain: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after its last call ended")
	}
	if !strings.Contains(logs.String(), "drained") {
		t.Errorf("log does not say it drained:\n%s", logs.String())
	}
	exited <- nil // for the cleanup
	http.DefaultClient.CloseIdleConnections()
	_ = os.Remove(bin)
}
