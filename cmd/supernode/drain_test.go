package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/stun/v4"
)

// drainPoll is how often serve looks for the last allocation's end.
const drainPoll = 250 * time.Millisecond

// TestDrainTimeoutAndSecondSignal runs a started node's signal loop (serve,
// with the --drain-timeout the flag gave it) in a testing/synctest bubble,
// so the drain's deadline and poll run on the bubble's clock: after
// SIGTERM with an allocation that never ends, the node exits at the drain
// timeout, not before; a second SIGTERM, or SIGINT, exits at once; once the
// last allocation ends it exits at the next poll, not before. The node's
// sockets and pion's goroutines stay outside the bubble; the node's own
// serve loop (on tn.sigs) gets no signal until the test ends.
// (TestDrainKeepsCallsAndRefusesNew and TestBinarySIGTERMDrain drain real
// nodes on the wall clock.)
func TestDrainTimeoutAndSecondSignal(t *testing.T) {
	const timeout = time.Hour
	for _, tc := range []struct {
		name   string
		second os.Signal     // sent 200 ms after SIGTERM
		wait   time.Duration // from SIGTERM to the exit
	}{
		{"drain timeout", nil, timeout},
		{"second SIGTERM", syscall.SIGTERM, 200 * time.Millisecond},
		{"SIGINT", syscall.SIGINT, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := startNode(t, "--user", "alice:pw", "--drain-timeout", timeout.String())
			newRawClient(t, tn.udp).allocate("alice", "pw") // never released
			synctest.Test(t, func(t *testing.T) {
				sigs, done := make(chan os.Signal, 2), make(chan error, 1)
				go func() { done <- tn.n.serve(sigs) }()
				start := time.Now()
				sigs <- syscall.SIGTERM
				if tc.second != nil {
					time.Sleep(200 * time.Millisecond)
					synctest.Wait()
					if len(done) != 0 {
						t.Fatal("node exited before the second signal")
					}
					sigs <- tc.second
				}
				if err := <-done; err != nil {
					t.Fatalf("serve returned %v", err)
				}
				if got := time.Since(start); got != tc.wait {
					t.Fatalf("node exited %v after SIGTERM, want %v", got, tc.wait)
				}
				if !tn.n.relay.Draining() {
					t.Fatal("SIGTERM did not drain the relay")
				}
			})
			if tc.second == nil && !strings.Contains(tn.logs.String(), "drain timeout passed") {
				t.Fatalf("no drain-timeout line in the log:\n%s", tn.logs)
			}
		})
	}

	// The last allocation ends 10 minutes into the drain (a Refresh with
	// lifetime 0 over the network, outside the bubble): the node has waited
	// for it and exits at the next poll.
	t.Run("drained", func(t *testing.T) {
		tn := startNode(t, "--user", "alice:pw", "--drain-timeout", timeout.String(), "--log-level", "info")
		raw := newRawClient(t, tn.udp)
		raw.allocate("alice", "pw")
		release, released := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(released)
			<-release
			if code := errCode(raw.do(stun.MethodRefresh, "alice", "pw", lifetime(0))); code != 0 {
				t.Errorf("delete while draining: code %d", code)
				return
			}
			for deadline := time.Now().Add(10 * time.Second); tn.n.relay.AllocationCount() != 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Errorf("%d allocations 10s after the last was deleted", tn.n.relay.AllocationCount())
					return
				}
			}
		}()
		synctest.Test(t, func(t *testing.T) {
			sigs, done := make(chan os.Signal, 1), make(chan error, 1)
			go func() { done <- tn.n.serve(sigs) }()
			sigs <- syscall.SIGTERM
			time.Sleep(10 * time.Minute)
			synctest.Wait()
			if len(done) != 0 {
				t.Fatal("node exited with an allocation still up")
			}
			// Fake time stands still until the release is done: this
			// goroutine waits on a channel from outside the bubble.
			close(release)
			<-released
			ended := time.Now()
			if err := <-done; err != nil {
				t.Fatalf("serve returned %v", err)
			}
			if got := time.Since(ended); got > drainPoll {
				t.Fatalf("node exited %v after its last allocation ended, want within one poll (%v)", got, drainPoll)
			}
		})
		if !strings.Contains(tn.logs.String(), "drained: no allocations left") {
			t.Fatalf("no drained line in the log:\n%s", tn.logs)
		}
	})
}
