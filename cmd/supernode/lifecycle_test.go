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
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
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

// streamer sends numbered packets through a relay conn to an echo peer
// until stopped, counting what comes back.
type streamer struct {
	sent, got atomic.Int64
	stop      chan struct{}
	done      chan struct{}
	once      sync.Once
}

func startStreamer(t *testing.T, relayConn net.PacketConn, peer net.Addr) *streamer {
	s := &streamer{stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(s.finish)
	go func() { // reader
		buf := make([]byte, 1600)
		for {
			_ = relayConn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, _, err := relayConn.ReadFrom(buf); err == nil {
				s.got.Add(1)
			}
			select {
			case <-s.done:
				return
			default:
			}
		}
	}()
	go func() { // writer, 50 packets per second like one media leg
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		payload := make([]byte, 172)
		for {
			select {
			case <-s.stop:
				time.Sleep(300 * time.Millisecond) // let the last echoes arrive
				close(s.done)
				return
			case <-t.C:
				if _, err := relayConn.WriteTo(payload, peer); err == nil {
					s.sent.Add(1)
				}
			}
		}
	}()
	return s
}

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

func (s *streamer) finish() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

func TestMetricsMoveDuringTransfer(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--allow-peer", "127.0.0.1")
	s, relayConn := streamThrough(t, tn, "alice", "pw")
	defer relayConn.Close()

	// Both paths: the first packets go as indications through user
	// space, the rest as ChannelData through the kernel path when it is on.
	paths := func(name, dir string) float64 {
		return scrape(t, tn.http, `supernode_`+name+`{direction="`+dir+`",path="user",transport="udp"}`) +
			scrape(t, tn.http, `supernode_`+name+`{direction="`+dir+`",path="kernel",transport="udp"}`)
	}
	const active = `supernode_allocations_active{transport="udp"}`
	looptest.Eventually(t, "traffic", func() bool { return s.got.Load() > 5 })
	a1, b1 := paths("relay_bytes_total", "client_to_peer"), paths("relay_bytes_total", "peer_to_client")
	time.Sleep(500 * time.Millisecond)
	a2, b2 := paths("relay_bytes_total", "client_to_peer"), paths("relay_bytes_total", "peer_to_client")
	if scrape(t, tn.http, active) != 1 {
		t.Fatal("allocation not active while streaming")
	}
	if !(a2 > a1 && a1 > 0) || !(b2 > b1 && b1 > 0) {
		t.Fatalf("relay bytes did not grow while the call was live: c2p %v -> %v, p2c %v -> %v", a1, a2, b1, b2)
	}
	s.finish()
	if got := paths("relay_packets_total", "client_to_peer"); got != float64(s.sent.Load()) {
		t.Errorf("relay_packets{client_to_peer} = %v, client sent %d", got, s.sent.Load())
	}
}

func TestDrainKeepsCallsAndRefusesNew(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--allow-peer", "127.0.0.1", "--drain-timeout", "1m")
	s, relayConn := streamThrough(t, tn, "alice", "pw")
	looptest.Eventually(t, "traffic", func() bool { return s.got.Load() > 5 })

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
	before := s.got.Load()
	looptest.Eventually(t, "20 more packets echoed after SIGTERM", func() bool { return s.got.Load()-before >= 20 })
	if code := errCode(raw.do(stun.MethodRefresh, "alice", "pw", lifetime(600))); code != 0 {
		t.Fatalf("refresh while draining: code %d", code)
	}
	select {
	case err := <-tn.done:
		t.Fatalf("node exited with calls still up: %v", err)
	default:
	}
	// The calls end; the node then exits by itself.
	s.finish()
	if s.got.Load() != s.sent.Load() {
		t.Errorf("lost packets across the drain: sent %d, echoed %d", s.sent.Load(), s.got.Load())
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
	looptest.Eventually(t, "traffic", func() bool { return s.got.Load() > 5 })

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
	before := s.got.Load()
	time.Sleep(500 * time.Millisecond)
	s.finish()
	if s.got.Load() <= before || s.got.Load() != s.sent.Load() {
		t.Fatalf("existing call disturbed by reload: sent %d, echoed %d", s.sent.Load(), s.got.Load())
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
