package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay/relaytest"
)

// scrape fetches /metrics over HTTP and returns one sample's value.
func scrape(t *testing.T, httpAddr, series string) float64 {
	t.Helper()
	return scrapeWith(t, http.DefaultClient, httpAddr, series)
}

// scrapeWith is scrape through client (one that dials into a namespace, say).
func scrapeWith(t *testing.T, client *http.Client, httpAddr, series string) float64 {
	t.Helper()
	resp, err := client.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, series)), 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("series %s not in /metrics", series)
	return 0
}

// streamer is relaytest's: packets through a relay conn to an echo peer,
// counted both ways.
type streamer = relaytest.Streamer

var startStreamer = relaytest.StartStreamer

// streamThrough allocates for user through tn over UDP and streams media
// to an echoing peer through the allocation; the caller closes relayConn.
func streamThrough(t *testing.T, tn *testNode, user, password string) (s *streamer, relayConn net.PacketConn) {
	t.Helper()
	peer := mustListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)
	c := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), tn.udp, user, password)
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	return startStreamer(t, relayConn, peer.LocalAddr()), relayConn
}

func TestDrainKeepsCallsAndRefusesNew(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--allow-peer", "127.0.0.1", "--drain-timeout", "1m")
	s, relayConn := streamThrough(t, tn, "alice", "pw")
	looptest.Eventually(t, "traffic", func() bool { return s.Got.Load() > 5 })

	// A second, raw allocation to show refreshes still work while draining.
	raw := newRawClient(t, tn.udp)
	raw.allocate("alice", "pw")

	tn.sigs <- syscall.SIGTERM
	looptest.Eventually(t, "readyz to fail", func() bool {
		resp, err := http.Get("http://" + tn.http + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	resp, err := http.Get("http://" + tn.http + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz while draining: %s", resp.Status)
	}

	// New allocations are refused, over pion's client and raw.
	nc := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), tn.udp, "alice", "pw")
	if _, err := nc.Allocate(); err == nil || !strings.Contains(err.Error(), "508") {
		t.Fatalf("allocate while draining: %v, want 508", err)
	}
	if code := errCode(newRawClient(t, tn.udp).do(stun.MethodAllocate, "alice", "pw", requestedTransport(17))); code != 508 {
		t.Fatalf("raw allocate while draining: code %d, want 508", code)
	}
	// The existing call keeps flowing, and refreshes are answered.
	before := s.Got.Load()
	looptest.Eventually(t, "20 more packets echoed after SIGTERM", func() bool { return s.Got.Load()-before >= 20 })
	if code := errCode(raw.do(stun.MethodRefresh, "alice", "pw", lifetime(600))); code != 0 {
		t.Fatalf("refresh while draining: code %d", code)
	}
	select {
	case err := <-tn.done:
		t.Fatalf("node exited with calls still up: %v", err)
	default:
	}
	// The calls end; the node then exits by itself.
	s.Finish()
	if s.Got.Load() != s.Sent.Load() {
		t.Errorf("lost packets across the drain: sent %d, echoed %d", s.Sent.Load(), s.Got.Load())
	}
	if err := relayConn.Close(); err != nil {
		t.Fatal(err)
	}
	if code := errCode(raw.do(stun.MethodRefresh, "alice", "pw", lifetime(0))); code != 0 {
		t.Fatalf("delete while draining: code %d", code)
	}
	select {
	case err := <-tn.done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
		tn.done <- nil // for stop in cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("node did not exit after its last allocation ended")
	}
}

func TestReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("# users\nalice:old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, key := writeTestCert(t)
	tn := startNode(t, "--users-file", users, "--allow-peer", "127.0.0.1", "--tls-listen", "127.0.0.1:0",
		"--cert", cert, "--key", key)
	s, relayConn := streamThrough(t, tn, "alice", "old")
	defer relayConn.Close()
	looptest.Eventually(t, "traffic", func() bool { return s.Got.Load() > 5 })

	if err := os.WriteFile(users, []byte("alice:new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert2, key2 := writeTestCert(t)
	for _, f := range [][2]string{{cert2, cert}, {key2, key}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tn.sigs <- syscall.SIGHUP
	looptest.Eventually(t, "new password accepted", func() bool {
		return errCode(newRawClient(t, tn.udp).do(stun.MethodAllocate, "alice", "new", requestedTransport(17))) == 0
	})
	if code := errCode(newRawClient(t, tn.udp).do(stun.MethodAllocate, "alice", "old", requestedTransport(17))); code != 401 {
		t.Fatalf("old password after reload: code %d, want 401", code)
	}
	before := s.Got.Load()
	time.Sleep(500 * time.Millisecond)
	s.Finish()
	if s.Got.Load() <= before || s.Got.Load() != s.Sent.Load() {
		t.Fatalf("existing call disturbed by reload: sent %d, echoed %d", s.Sent.Load(), s.Got.Load())
	}
	// The TLS listener now serves the new certificate.
	conn, err := tls.Dial("tcp", tn.tls, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test certificate
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pemBytes, err := os.ReadFile(cert2)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if got := conn.ConnectionState().PeerCertificates[0].Raw; !bytes.Equal(got, block.Bytes) {
		t.Fatal("TLS listener still serves the old certificate after SIGHUP")
	}
}
