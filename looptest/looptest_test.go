package looptest

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestFreeAddr(t *testing.T) {
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		addr := FreeAddr(t, ip)
		if host, _, err := net.SplitHostPort(addr); err != nil || host != ip {
			t.Fatalf("FreeAddr(%s) = %q, %v", ip, addr, err)
		}
		if !PortFree(addr, true) {
			t.Errorf("%s is not free for TCP and UDP", addr)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if PortFree(addr, false) {
			t.Errorf("%s held for TCP reads as free", addr)
		}
		l.Close()
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if !PortFree(addr, false) || PortFree(addr, true) {
			t.Errorf("%s held for UDP only: free for TCP %v, for both %v", addr, PortFree(addr, false), PortFree(addr, true))
		}
		u.Close()
	}
	if p := FreePort(t, "127.0.0.1"); p <= 0 || p > 65535 {
		t.Errorf("FreePort = %d", p)
	}
}

func TestFreeUDPRange(t *testing.T) {
	lo, hi := FreeUDPRange(t, 23000, 4)
	if lo < 23000 || hi != lo+3 || hi >= 32000 || (lo-23000)%4 != 0 {
		t.Fatalf("FreeUDPRange = %d..%d", lo, hi)
	}
	for p := lo; p <= hi; p++ {
		if !udpFree(p) {
			t.Errorf("port %d of %d..%d is taken", p, lo, hi)
		}
	}
	// A held port in the first range moves the search past it.
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: lo + 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if lo2, _ := FreeUDPRange(t, lo, 4); lo2 <= lo+1 {
		t.Errorf("a range over held port %d: from %d", lo+1, lo2)
	}
}

func udpFree(port int) bool {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// recorder is a testing.TB whose Fatalf records the failure and ends its
// goroutine, as t.Fatalf does, so that a failing wait can be watched.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, "the third poll", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("polled %d times, want 3", n)
	}
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		EventuallyWithin(r, "what never happens", 30*time.Millisecond, 5*time.Millisecond, func() bool { return false })
	}()
	<-done
	if !strings.Contains(r.failed, "timed out waiting for what never happens") {
		t.Errorf("failure %q does not name what it waited for", r.failed)
	}
}

func TestLog(t *testing.T) {
	var l Log
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 100 {
				fmt.Fprintf(&l, "writer=%d line=%d\n", g, i)
			}
		}()
	}
	for range 4 {
		<-done
	}
	if got := len(l.Lines("writer=")); got != 400 {
		t.Errorf("%d lines, want 400", got)
	}
	if got := l.Lines("writer=3 line=99"); len(got) != 1 || got[0] != "writer=3 line=99" {
		t.Errorf("Lines = %q", got)
	}
	if !strings.HasSuffix(l.String(), "\n") || l.Lines("absent") != nil {
		t.Errorf("String or Lines: %q", l.Lines("absent"))
	}
}

func TestEcho(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	Echo(pc)
	c, err := net.DialUDP("udp4", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Not a timing assertion: only how long a lost datagram is waited for.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64*1024)
	for _, size := range []int{1, 1500, 9000} {
		msg := make([]byte, size)
		msg[0], msg[size-1] = byte(size), byte(size>>8)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil || n != size || buf[0] != msg[0] || buf[n-1] != msg[size-1] {
			t.Fatalf("%d bytes sent, %d came back (%v)", size, n, err)
		}
	}
}
