// Package looptest is what tests in several packages need to run real
// servers on the machine's loopback addresses: ports that are free to
// listen on, an echoing UDP peer, waiting, with a bound, for a server or a
// cluster to reach a state, a buffer for what a server logs while it
// runs, and a client for its HTTP API.
//
// A free port is only a port that was free a moment ago: another process
// may take it before the caller binds it. Tests that can listen on port 0
// should; these are for what cannot (a port range handed to a server, a
// port given to an external program on its command line).
package looptest

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// PortFree reports whether addr (host:port) could be bound for TCP right
// now and, if udp, for UDP too (a TURN listener takes both).
func PortFree(addr string, udp bool) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	if !udp {
		return true
	}
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	_ = u.Close()
	return true
}

// FreeAddr returns host:port on ip with a port that was free a moment ago
// for both TCP and UDP. It fails t after 20 ports the kernel offered were
// taken for UDP.
func FreeAddr(t testing.TB, ip string) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		if u, err := net.ListenPacket("udp", addr); err == nil {
			_ = u.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

// FreePort is FreeAddr's port.
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(FreeAddr(t, ip))
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// FreeUDPRange returns n consecutive ports that nothing holds for UDP on
// 127.0.0.1 right now, searched from `from` upwards in steps of n and
// below 32000, under the kernel's ephemeral range (32768 on, where the
// tests' own client sockets land). Packages whose tests run at the same
// time should search from different places. It skips t when no such range
// is free.
func FreeUDPRange(t testing.TB, from, n int) (lo, hi int) {
	t.Helper()
	for lo = from; lo+n <= 32000; lo += n {
		free := true
		for port := lo; port < lo+n && free; port++ {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
			if err != nil {
				free = false
				break
			}
			_ = c.Close()
		}
		if free {
			return lo, lo + n - 1
		}
	}
	t.Skipf("no %d free UDP ports in a row below 32000", n)
	return 0, 0
}

// Eventually polls cond every 20 ms until it holds, and fails t, naming
// what it waited for, after 15 s. The bound only limits how long a broken
// test hangs; it is not a timing assertion.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, what, 15*time.Second, 20*time.Millisecond, cond)
}

// EventuallyWithin is Eventually with its own bound and polling interval,
// for a state that is slow to reach (a Prometheus scrape, a rule's
// evaluation).
func EventuallyWithin(t testing.TB, what string, bound, every time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(every)
	}
}

// Echo answers every datagram on pc with the same bytes, to where it came
// from, until pc is closed: a peer for relayed traffic.
func Echo(pc net.PacketConn) {
	go func() {
		buf := make([]byte, 64*1024)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// Log collects what a server under test logs, written from its own
// goroutines, for the test to read while the server runs.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Lines returns the lines written so far that contain substr.
func (l *Log) Lines(substr string) []string {
	var out []string
	for line := range strings.SplitSeq(l.String(), "\n") {
		if line != "" && strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

// JSON sends method url (with "Authorization: Bearer token" when token is
// set), decodes the JSON body into into when into is not nil, and returns
// the status code: a client of a server's HTTP API.
func JSON(t testing.TB, method, url, token string, into any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if into != nil {
		_ = json.NewDecoder(resp.Body).Decode(into)
	}
	return resp.StatusCode
}
