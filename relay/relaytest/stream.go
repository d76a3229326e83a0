package relaytest

import (
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// DialStream opens a plain TCP or TLS connection to a relay's stream
// listener, closed when the test ends.
func DialStream(t testing.TB, transport, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	if transport == "tls" {
		c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test certificate
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial %s %s: %v", transport, addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// StreamRaw speaks STUN by hand over a TCP/TLS connection (framed as RFC
// 6062 §4 and RFC 8656 §12.5 say).
func StreamRaw(t testing.TB, c net.Conn) *RawClient {
	return &RawClient{T: t, Conn: turn.NewSTUNConn(c), Server: c.RemoteAddr()}
}

// Busy writes write(i) to c every 100 ms, at most 100 times, until a
// write fails or the returned stop is called; stop waits for it to end.
func Busy(c net.Conn, write func(i int) []byte) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := range 100 {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(write(i)); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// BindingRequest is a new STUN Binding request, for Busy.
func BindingRequest(int) []byte { return stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw }
