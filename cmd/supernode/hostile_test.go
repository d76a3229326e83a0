package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay/relaytest"
)

// closedWithin reports whether the server closes c within d.
var closedWithin = relaytest.ClosedWithin

// TestHostileStreams checks that --first-message-timeout and
// --idle-timeout reach the relay: stalled and idle TCP clients are
// disconnected and counted. (Garbage and oversized frames: relay's
// TestHostileStreams; slow headers, TLS without a handshake and the other
// timeouts, on the bubble's clock: relay's TestStreamTimeouts.)
func TestHostileStreams(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--first-message-timeout", "300ms", "--idle-timeout", "600ms")
	for _, tc := range []struct {
		name, transport, reason string
		act                     func(c net.Conn)
	}{
		{"stalled", "tcp", "first_message_timeout", func(net.Conn) {}},
		{"idle after binding", "tcp", "idle_timeout", func(c net.Conn) {
			m, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
			_, _ = c.Write(m.Raw)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutilClosed(tn, tc.transport, tc.reason)
			c := dialStream(t, "tcp", tn.udp)
			tc.act(c)
			if !closedWithin(c, 5*time.Second) {
				t.Fatal("server kept the connection open")
			}
			looptest.Eventually(t, "close counted", func() bool { return testutilClosed(tn, tc.transport, tc.reason) > before })
		})
	}
}

// deafPacketConn sends but never receives: a DTLS client behind it sends its
// ClientHello and then cannot continue the handshake.
type deafPacketConn struct{ net.PacketConn }

func (d deafPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := d.PacketConn.ReadFrom(b)
		if err != nil {
			return n, a, err
		}
	}
}

// TestStalledDTLSHandshake: a DTLS client that starts a handshake with the
// node's DTLS listener and goes quiet is disconnected after
// --first-message-timeout and counted. (The handshake's deadlines, on the
// bubble's clock: relay's TestStreamTimeouts.)
func TestStalledDTLSHandshake(t *testing.T) {
	cert, key := writeTestCert(t)
	tn := startNode(t, "--user", "alice:pw", "--first-message-timeout", "300ms",
		"--dtls-listen", "127.0.0.1:0", "--cert", cert, "--key", key)
	stallDTLSHandshake(t, tn.dtls)
	looptest.Eventually(t, "stalled handshake closed", func() bool {
		return testutilClosed(tn, "dtls", "first_message_timeout") >= 1
	})
}

// stallDTLSHandshake sends one ClientHello to a DTLS listener and then goes
// deaf, as a client that never completes its handshake.
func stallDTLSHandshake(t *testing.T, server string) {
	t.Helper()
	pc := mustListenUDP(t, "udp4", "127.0.0.1:0")
	c, err := dtls.ClientWithOptions(deafPacketConn{pc}, mustUDPAddr(t, server), dtls.WithInsecureSkipVerify(true))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_ = c.HandshakeContext(ctx) // fails: the client hears nothing
	cancel()
	_ = c.Close()
}
