package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
)

// Interop tests: coturn's turnutils_uclient (and turnutils_peer as the UDP
// echo peer) against an in-process node on loopback. Run them with
//
//	go test -run Interop ./cmd/supernode
//
// They skip when coturn's client tools are missing, unless
// SUPERNODE_REQUIRE_INTEROP is set (CI), where a missing tool fails.

const (
	uclientBin = "turnutils_uclient"
	peerBin    = "turnutils_peer"

	// Per run: messages per client, clients, payload bytes, send interval.
	// Small enough that the whole suite takes well under a minute.
	interopMessages = 50
	interopClients  = 2
	interopLength   = 120
	interopInterval = 10 // milliseconds

	// interopTimeout bounds every external process.
	interopTimeout = 60 * time.Second
)

// interopTools returns the paths of turnutils_uclient and turnutils_peer, or
// skips (fails under SUPERNODE_REQUIRE_INTEROP) when either is missing.
func interopTools(t *testing.T) (uclient, peer string) {
	t.Helper()
	var missing []string
	uclient, err := exec.LookPath(uclientBin)
	if err != nil {
		missing = append(missing, uclientBin)
	}
	peer, err = exec.LookPath(peerBin)
	if err != nil {
		missing = append(missing, peerBin)
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("%s not on PATH: apt-get install coturn to run the interop tests", strings.Join(missing, " and "))
		if os.Getenv("SUPERNODE_REQUIRE_INTEROP") != "" {
			t.Fatal(msg + " (SUPERNODE_REQUIRE_INTEROP is set)")
		}
		t.Skip(msg)
	}
	return uclient, peer
}

// uclientResult is the summary turnutils_uclient prints at the end of a run.
type uclientResult struct {
	sent, recv   int // start_mclient: tot_send_msgs=N, tot_recv_msgs=N
	lost         int // Total lost packets N (P%)
	lostPct      float64
	sendDropped  int // total send dropped N (P%)
	sendDropPct  float64
	transmitSecs int // Total transmit time is N
}

var (
	reTotals   = regexp.MustCompile(`(?m)start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)
	reLost     = regexp.MustCompile(`(?m)Total lost packets (\d+) \(([0-9.]+)%\), total send dropped (\d+) \(([0-9.]+)%\)`)
	reTransmit = regexp.MustCompile(`(?m)Total transmit time is (\d+)`)
)

// parseUclient extracts the final summary of a turnutils_uclient run. Output
// without one (the run aborted, or the format changed) is an error.
func parseUclient(out string) (uclientResult, error) {
	var r uclientResult
	totals := reTotals.FindAllStringSubmatch(out, -1)
	lost := reLost.FindAllStringSubmatch(out, -1)
	if len(totals) == 0 || len(lost) == 0 {
		return r, errors.New("no `start_mclient: tot_send_msgs=..., tot_recv_msgs=...` and `Total lost packets ...` summary in output")
	}
	if len(lost) != 1 {
		return r, fmt.Errorf("%d `Total lost packets` lines, want 1", len(lost))
	}
	tl, ll := totals[len(totals)-1], lost[0]
	var errs []error
	atoi := func(s string) int {
		n, err := strconv.Atoi(s)
		errs = append(errs, err)
		return n
	}
	atof := func(s string) float64 {
		f, err := strconv.ParseFloat(s, 64)
		errs = append(errs, err)
		return f
	}
	r.sent, r.recv = atoi(tl[1]), atoi(tl[2])
	r.lost, r.lostPct, r.sendDropped, r.sendDropPct = atoi(ll[1]), atof(ll[2]), atoi(ll[3]), atof(ll[4])
	if m := reTransmit.FindStringSubmatch(out); m != nil {
		r.transmitSecs = atoi(m[1])
	}
	return r, errors.Join(errs...)
}

// startEchoPeer runs turnutils_peer on 127.0.0.1 and returns its port once
// it echoes a probe. It is killed when the test ends.
func startEchoPeer(t *testing.T, bin string) int {
	t.Helper()
	port := looptest.FreePort(t, "127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), interopTimeout)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-L", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
	})

	probe := mustListenUDP(t, "udp4", "127.0.0.1:0")
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	buf := make([]byte, 64)
	for range 50 {
		select {
		case err := <-exited:
			t.Fatalf("%s exited before serving: %v\n%s", bin, err, out.String())
		default:
		}
		if _, err := probe.WriteTo([]byte("supernode interop probe"), to); err != nil {
			t.Fatal(err)
		}
		_ = probe.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := probe.ReadFrom(buf); err == nil && string(buf[:n]) == "supernode interop probe" {
			return port
		}
	}
	t.Fatalf("%s on 127.0.0.1:%d did not echo a probe within 5s", bin, port)
	return 0
}

// runUclient runs turnutils_uclient against the node with args, then parses
// its summary; a run that fails or prints no summary fails the test.
func runUclient(t *testing.T, bin string, tn *testNode, args ...string) (uclientResult, string) {
	t.Helper()
	out, err := execUclient(t, bin, tn, args...)
	if err != nil {
		t.Fatalf("turnutils_uclient %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	res, err := parseUclient(out)
	if err != nil {
		t.Fatalf("turnutils_uclient %s: cannot parse its output: %v\n%s", strings.Join(args, " "), err, out)
	}
	return res, out
}

// execUclient runs turnutils_uclient against the node's listen port and
// returns its combined output.
func execUclient(t *testing.T, bin string, tn *testNode, args ...string) (string, error) {
	t.Helper()
	host, port, err := net.SplitHostPort(tn.udp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), interopTimeout)
	defer cancel()
	all := append(append([]string{}, args...), "-p", port, host)
	cmd := exec.CommandContext(ctx, bin, all...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %v: %w", interopTimeout, ctx.Err())
	}
	return out.String(), err
}

// uclientCommon are the flags every run shares: size of the run.
func uclientCommon() []string {
	return []string{
		"-n", strconv.Itoa(interopMessages), "-m", strconv.Itoa(interopClients),
		"-l", strconv.Itoa(interopLength), "-z", strconv.Itoa(interopInterval),
	}
}

// atLeast fails the test unless the metric child is at least want.
func atLeast(t *testing.T, tn *testNode, want float64, name string, labels ...any) {
	t.Helper()
	if got := tn.counter(name, labels...); got < want {
		t.Errorf("%s%q = %v, want >= %v", name, labels, got, want)
	}
}

// exactly fails the test unless the metric child equals want.
func exactly(t *testing.T, tn *testNode, want float64, name string, labels ...any) {
	t.Helper()
	if got := tn.counter(name, labels...); got != want {
		t.Errorf("%s%q = %v, want %v", name, labels, got, want)
	}
}

func TestInteropUclient(t *testing.T) {
	uclient, peer := interopTools(t)
	const secret = "interop-rest-secret"
	userPass := []string{"-u", "alice", "-w", "secret1"}
	const minSent = interopMessages * interopClients

	for _, tc := range []struct {
		name string
		// node flags beyond baseArgs
		node []string
		// uclient flags beyond uclientCommon and -p; "-e" is added when peer is set
		flags []string
		peer  bool
		check func(t *testing.T, tn *testNode, r uclientResult)
	}{{
		// UDP to the server, ChannelBind then ChannelData each way.
		name:  "channel_data",
		node:  []string{"--user", "alice:secret1", "--allow-peer", "127.0.0.1"},
		flags: append([]string{"-c"}, userPass...),
		peer:  true,
		check: func(t *testing.T, tn *testNode, r uclientResult) {
			atLeast(t, tn, interopClients, "allocations_created", "udp")
			atLeast(t, tn, 1, "requests", "channel_bind", "success")
			atLeast(t, tn, float64(r.sent), "relay_packets", metrics.ClientToPeer, "udp")
			atLeast(t, tn, float64(r.recv), "relay_packets", metrics.PeerToClient, "udp")
			exactly(t, tn, 0, "dropped", metrics.DropMalformed)
		},
	}, {
		// uclient's default: an RTP and an RTCP allocation per client, the
		// first with EVEN-PORT (R bit), the second with the RESERVATION-TOKEN
		// the first returned (RFC 8656 §7.2 steps 5 and 6).
		name:  "rtp_rtcp_reservation",
		node:  []string{"--user", "alice:secret1", "--allow-peer", "127.0.0.1"},
		flags: userPass,
		peer:  true,
		check: func(t *testing.T, tn *testNode, r uclientResult) {
			// uclient -m 2 makes three: RTP+RTCP for one client, RTP for
			// the other.
			atLeast(t, tn, interopClients+1, "allocations_created", "udp")
			exactly(t, tn, 0, "requests", "allocate", "capacity")
			atLeast(t, tn, float64(r.sent), "relay_packets", metrics.ClientToPeer, "udp")
			atLeast(t, tn, float64(r.recv), "relay_packets", metrics.PeerToClient, "udp")
		},
	}, {
		// Send and Data indications only, no channels.
		name:  "send_indication",
		node:  []string{"--user", "alice:secret1", "--allow-peer", "127.0.0.1"},
		flags: append([]string{"-c", "-s"}, userPass...),
		peer:  true,
		check: func(t *testing.T, tn *testNode, r uclientResult) {
			atLeast(t, tn, interopClients, "allocations_created", "udp")
			atLeast(t, tn, 1, "requests", "create_permission", "success")
			exactly(t, tn, 0, "requests", "channel_bind", "success")
			atLeast(t, tn, float64(r.sent), "relay_packets", metrics.ClientToPeer, "udp")
			atLeast(t, tn, float64(r.recv), "relay_packets", metrics.PeerToClient, "udp")
		},
	}, {
		// Two clients talk relay to relay on this node; an exact
		// --allow-peer for the relay IP opens every port on it.
		name:  "client_to_client",
		node:  []string{"--user", "alice:secret1", "--allow-peer", "127.0.0.1"},
		flags: append([]string{"-c", "-y"}, userPass...),
		check: func(t *testing.T, tn *testNode, r uclientResult) {
			atLeast(t, tn, interopClients, "allocations_created", "udp")
			atLeast(t, tn, float64(r.sent), "relay_packets", metrics.ClientToPeer, "udp")
			atLeast(t, tn, float64(r.recv), "relay_packets", metrics.PeerToClient, "udp")
		},
	}, {
		// The same with no --allow-peer: both legs on one node reach each
		// other only because the peer is a relay port of this node's own
		// relay IP (DESIGN.md decision 2 and 5).
		name:  "client_to_client_same_node_default_policy",
		node:  []string{"--user", "alice:secret1"},
		flags: append([]string{"-c", "-y"}, userPass...),
		check: func(t *testing.T, tn *testNode, r uclientResult) {
			atLeast(t, tn, interopClients, "allocations_created", "udp")
			atLeast(t, tn, float64(r.sent), "relay_packets", metrics.ClientToPeer, "udp")
			exactly(t, tn, 0, "dropped", metrics.DropPeerDenied)
		},
	}, {
		// TCP between client and server, UDP relay.
		name:  "tcp_client",
		node:  []string{"--user", "alice:secret1", "--allow-peer", "127.0.0.1"},
		flags: append([]string{"-c", "-t"}, userPass...),
		peer:  true,
		check: func(t *testing.T, tn *testNode, r uclientResult) {
			atLeast(t, tn, interopClients, "allocations_created", "tcp")
			atLeast(t, tn, float64(r.sent), "relay_packets", metrics.ClientToPeer, "tcp")
			atLeast(t, tn, float64(r.recv), "relay_packets", metrics.PeerToClient, "tcp")
		},
	}, {
		// RFC 6062 TCP relay: -T implies -t, -y and -c; clients pair up, one
		// sends Connect to the other's relayed address, both ConnectionBind
		// a data connection. No UDP peer involved.
		name:  "tcp_relay_rfc6062",
		node:  []string{"--user", "alice:secret1", "--allow-peer", "127.0.0.1"},
		flags: append([]string{"-T"}, userPass...),
		check: func(t *testing.T, tn *testNode, r uclientResult) {
			atLeast(t, tn, interopClients, "allocations_created", "tcp")
			atLeast(t, tn, 1, "requests", "connect", "success")
			atLeast(t, tn, 2, "requests", "connection_bind", "success")
			atLeast(t, tn, float64(r.sent*interopLength), "relay_bytes", metrics.ClientToPeer, "tcp")
			atLeast(t, tn, float64(r.recv*interopLength), "relay_bytes", metrics.PeerToClient, "tcp")
		},
	}, {
		// TURN REST credentials: uclient mints <expiry>:alice and
		// base64(HMAC-SHA1(secret, username)) itself.
		name:  "rest_secret",
		node:  []string{"--auth-secret", secret, "--allow-peer", "127.0.0.1"},
		flags: []string{"-c", "-u", "alice", "-W", secret},
		peer:  true,
		check: func(t *testing.T, tn *testNode, r uclientResult) {
			atLeast(t, tn, interopClients, "allocations_created", "udp")
			exactly(t, tn, 0, "auth_failures", metrics.AuthBadPassword)
			atLeast(t, tn, float64(r.sent), "relay_packets", metrics.ClientToPeer, "udp")
			atLeast(t, tn, float64(r.recv), "relay_packets", metrics.PeerToClient, "udp")
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tn := startNode(t, tc.node...)
			args := append(uclientCommon(), tc.flags...)
			if tc.peer {
				args = append(args, "-e", "127.0.0.1", "-r", strconv.Itoa(startEchoPeer(t, peer)))
			}
			start := time.Now()
			r, out := runUclient(t, uclient, tn, args...)
			t.Logf("turnutils_uclient %s: sent %d, received %d, lost %d (%.2f%%) in %v",
				strings.Join(args, " "), r.sent, r.recv, r.lost, r.lostPct, time.Since(start).Round(time.Millisecond))
			if r.sent < minSent {
				t.Errorf("uclient sent %d messages, want at least %d (-n %d x -m %d)", r.sent, minSent, interopMessages, interopClients)
			}
			if r.lost != 0 || r.lostPct != 0 || r.recv != r.sent {
				t.Errorf("uclient lost %d of %d messages (%.2f%%), received %d", r.lost, r.sent, r.lostPct, r.recv)
			}
			if r.sendDropped != 0 || r.sendDropPct != 0 {
				t.Errorf("uclient dropped %d sends (%.2f%%)", r.sendDropped, r.sendDropPct)
			}
			tc.check(t, tn, r)
			if t.Failed() {
				t.Logf("uclient output:\n%s", out)
			}
		})
	}
}

// TestInteropRESTSecretWrong is the control for rest_secret: a client minting
// credentials with another secret gets no allocation and relays nothing.
func TestInteropRESTSecretWrong(t *testing.T) {
	uclient, peer := interopTools(t)
	tn := startNode(t, "--auth-secret", "the-real-secret", "--allow-peer", "127.0.0.1")
	args := append(uclientCommon(), "-c", "-u", "alice", "-W", "not-the-secret",
		"-e", "127.0.0.1", "-r", strconv.Itoa(startEchoPeer(t, peer)))
	out, err := execUclient(t, uclient, tn, args...)
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("uclient with a wrong REST secret: err = %v, want a non-zero exit\n%s", err, out)
	}
	if r, perr := parseUclient(out); perr == nil && r.recv > 0 {
		t.Errorf("uclient with a wrong REST secret received %d messages\n%s", r.recv, out)
	}
	exactly(t, tn, 0, "allocations_created", "udp")
	atLeast(t, tn, 1, "auth_failures", metrics.AuthBadPassword)
	exactly(t, tn, 0, "relay_packets", metrics.ClientToPeer, "udp")
}

// TestInteropParseUclient pins the summary format the interop tests rely on,
// so a change in coturn's output fails loudly instead of passing silently.
func TestInteropParseUclient(t *testing.T) {
	const clean = `0: : Total connect time is 0
3: : start_mclient: msz=2, tot_send_msgs=100, tot_recv_msgs=100, tot_send_bytes ~ 12000, tot_recv_bytes ~ 12000
3: : start_mclient: tot_send_msgs=100, tot_recv_msgs=100
3: : start_mclient: tot_send_bytes ~ 12000, tot_recv_bytes ~ 12000
3: : Total transmit time is 3
3: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
3: : Average round trip delay 0.100000 ms; min = 0 ms, max = 1 ms
`
	const lossy = `12: : start_mclient: msz=2, tot_send_msgs=100, tot_recv_msgs=50, tot_send_bytes ~ 10000, tot_recv_bytes ~ 5000
12: : start_mclient: tot_send_msgs=100, tot_recv_msgs=50
12: : Total transmit time is 12
12: : Total lost packets 50 (50.000000%), total send dropped 0 (0.000000%)
`
	for _, tc := range []struct {
		name, out string
		want      uclientResult
		wantErr   bool
	}{
		{"clean", clean, uclientResult{sent: 100, recv: 100, transmitSecs: 3}, false},
		{"lossy", lossy, uclientResult{sent: 100, recv: 50, lost: 50, lostPct: 50, transmitSecs: 12}, false},
		{"allocate_failed", "0: : error 508 ()\n0: : error 508 ()\n", uclientResult{}, true},
		{"no_loss_line", "3: : start_mclient: tot_send_msgs=100, tot_recv_msgs=100\n", uclientResult{}, true},
		{"empty", "", uclientResult{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseUclient(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseUclient: err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Fatalf("parseUclient = %+v, want %+v", got, tc.want)
			}
		})
	}
}
