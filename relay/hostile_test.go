package relay_test

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// TestHostileUDP throws garbage, truncated and oversized datagrams at the
// node, then checks it still relays and counted what it dropped.
func TestHostileUDP(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, AllowPeer: []string{"127.0.0.1"}})
	attacker := relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")
	server := relaytest.UDPAddr(t, tn.Addr())
	rng := rand.New(rand.NewPCG(1, 2))
	valid, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		t.Fatal(err)
	}
	send := func(b []byte) {
		_, _ = attacker.WriteTo(b, server)
	}
	for i := range 3000 {
		switch i % 6 {
		case 0: // random bytes
			b := make([]byte, rng.IntN(1500))
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			send(b)
		case 1: // truncated STUN
			send(valid.Raw[:rng.IntN(len(valid.Raw))])
		case 2: // STUN header whose length lies
			b := append([]byte(nil), valid.Raw...)
			binary.BigEndian.PutUint16(b[2:], uint16(rng.IntN(5000)))
			send(b)
		case 3: // ChannelData claiming more than it carries
			send([]byte{0x40, 0x01, 0xff, 0xff, 1, 2, 3, 4})
		case 4: // oversized
			send(make([]byte, 1700+rng.IntN(7000)))
		case 5: // a valid header with random attributes
			b := make([]byte, 20+4*rng.IntN(50))
			copy(b, valid.Raw[:20])
			binary.BigEndian.PutUint16(b[2:], uint16(len(b)-20))
			for j := 20; j < len(b); j++ {
				b[j] = byte(rng.Uint32())
			}
			send(b)
		}
		if i%20 == 0 {
			time.Sleep(2 * time.Millisecond) // keep the kernel's socket buffer from overflowing
		}
	}
	// About 2,000 malformed and 500 oversized datagrams were sent; a busy
	// machine may lose some in the kernel before the node reads them.
	looptest.Eventually(t, "drops counted", func() bool {
		return tn.Counter("dropped", "malformed") >= 1500 && tn.Counter("dropped", "oversized") >= 250
	})
	t.Logf("dropped: malformed %v, oversized %v", tn.Counter("dropped", "malformed"), tn.Counter("dropped", "oversized"))
	if p := tn.Counter("handler_panics"); p != 0 {
		t.Fatalf("%v panics recovered", p)
	}
	// Still serving.
	peer := relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)
	c := relaytest.NewClient(t, relaytest.ListenUDP(t, "udp4", "127.0.0.1:0"), tn.Addr(), "alice", "pw")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate after the storm: %v", err)
	}
	defer relayConn.Close()
	if n := relaytest.Exchange(t, relayConn, peer.LocalAddr(), 10); n != 10 {
		t.Fatalf("%d of 10 echoed after the storm", n)
	}
}

// TestConnectionLimitPerIP: connections over --max-conns-per-ip are closed
// on accept and counted; closing one frees its slot.
func TestConnectionLimitPerIP(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"},
		Configure: func(c *relay.Config) { c.MaxConnsPerIP = 3 }})
	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", tn.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		conns = append(conns, c)
	}
	looptest.Eventually(t, "two connections refused", func() bool { return tn.Counter("connections_closed", "tcp", "limit") == 2 })
	closed := 0
	for _, c := range conns {
		if relaytest.ClosedWithin(c, 300*time.Millisecond) {
			closed++
		}
	}
	if closed != 2 {
		t.Fatalf("%d connections closed by the node, want 2", closed)
	}
	_ = conns[0].Close()
	looptest.Eventually(t, "the close noticed", func() bool { return tn.Counter("connections_closed", "tcp", "peer_closed") >= 1 })
	tc := relaytest.StreamClient(t, "tcp", tn.Addr(), "alice", "pw")
	if _, err := tc.SendBindingRequest(); err != nil {
		t.Fatalf("a slot freed by a close is usable again: %v", err)
	}
}

// TestTLSClientReset: a TLS client that resets its connection (no
// close_notify, no FIN) is counted as peer_reset, and the close_notify the
// server can then no longer send is not logged as an error: clients on bad
// networks do this all the time.
func TestTLSClientReset(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, TLS: true, LogLevel: slog.LevelDebug})
	before := tn.Counter("connections_closed", "tls", "peer_reset")
	const n = 3
	for range n {
		raw, err := net.Dial("tcp", tn.TLS)
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test's own certificate
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		if _, err := c.Write(req.Raw); err != nil {
			t.Fatal(err)
		}
		// The answer proves the server reads this connection.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp := make([]byte, 1500)
		if _, err := io.ReadAtLeast(c, resp, 20); err != nil {
			t.Fatalf("binding over TLS: %v", err)
		}
		_ = raw.(*net.TCPConn).SetLinger(0) // close sends RST
		_ = raw.Close()
	}
	looptest.Eventually(t, "the resets counted as peer_reset", func() bool {
		return tn.Counter("connections_closed", "tls", "peer_reset") >= before+n
	})
	// pion closes its side after the count; its close_notify then fails.
	looptest.Eventually(t, "the failed close_notify logged", func() bool {
		return strings.Count(tn.Logs.String(), "Failed to close conn") >= n
	})
	for _, line := range strings.Split(tn.Logs.String(), "\n") {
		if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") {
			t.Errorf("logged above debug for a client reset: %s", line)
		}
	}
}

// TestHostileStreams checks that garbage and oversized TCP clients are
// disconnected and counted, and that the relay serves TLS normally
// afterwards. (That --first-message-timeout and --idle-timeout reach the
// relay: cmd/supernode's TestHostileStreams; the timeouts themselves, on
// the bubble's clock: TestStreamTimeouts.)
func TestHostileStreams(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, TLS: true})
	for _, tc := range []struct {
		name, transport, reason string
		act                     func(c net.Conn)
	}{
		{"garbage", "tcp", "malformed", func(c net.Conn) { _, _ = c.Write([]byte{0xff, 0xfe, 0xfd, 0xfc, 0, 0, 0, 0}) }},
		{"oversized frame", "tcp", "oversized", func(c net.Conn) {
			_, _ = c.Write([]byte{0x00, 0x01, 0xff, 0xf0, 0x21, 0x12, 0xa4, 0x42})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tn.Counter("connections_closed", tc.transport, tc.reason)
			c := relaytest.DialStream(t, "tcp", tn.Addr())
			tc.act(c)
			if !relaytest.ClosedWithin(c, 5*time.Second) {
				t.Fatal("server kept the connection open")
			}
			looptest.Eventually(t, "close counted", func() bool { return tn.Counter("connections_closed", tc.transport, tc.reason) > before })
		})
	}
	// A real TLS client still works.
	tc := relaytest.StreamClient(t, "tls", tn.TLS, "alice", "pw")
	if _, err := tc.SendBindingRequest(); err != nil {
		t.Fatalf("binding over TLS after the abuse: %v", err)
	}
}
