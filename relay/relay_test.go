package relay_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

func TestRelayUDPChannelDataAndIndications(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "secret1"}, AllowPeer: []string{"127.0.0.1"}})
	peer := relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)

	tap := &relaytest.TapConn{PacketConn: relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")}
	c := relaytest.NewClient(t, tap, tn.Addr(), "alice", "secret1")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = relayConn.Close()
		}
	})
	if got := tn.Counter("allocations_active", "udp"); got != 1 {
		t.Fatalf("allocations_active{udp} = %v, want 1", got)
	}
	// Peer first, before any channel exists: it arrives as a Data indication.
	if err := c.CreatePermission(peer.LocalAddr()); err != nil {
		t.Fatalf("create permission: %v", err)
	}
	if _, err := peer.WriteTo([]byte("hello from peer"), relayConn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1600)
	_ = relayConn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := relayConn.ReadFrom(buf); err != nil || string(buf[:n]) != "hello from peer" {
		t.Fatalf("peer-first packet: %q, %v", buf[:n], err)
	}
	if n := relaytest.Exchange(t, relayConn, peer.LocalAddr(), 60); n != 60 {
		t.Fatalf("%d of 60 messages came back", n)
	}
	if tap.SendInd.Load() == 0 || tap.ChanOut.Load() == 0 || tap.DataInd.Load() == 0 || tap.ChanIn.Load() == 0 {
		t.Fatalf("want both indications and ChannelData each way: send=%d chanOut=%d data=%d chanIn=%d",
			tap.SendInd.Load(), tap.ChanOut.Load(), tap.DataInd.Load(), tap.ChanIn.Load())
	}
	if got := tn.Counter("relay_packets", metrics.ClientToPeer, "udp"); got != 60 {
		t.Errorf("relay_packets{client_to_peer,udp} = %v, want 60", got)
	}
	if got := tn.Counter("relay_packets", metrics.PeerToClient, "udp"); got != 61 {
		t.Errorf("relay_packets{peer_to_client,udp} = %v, want 61", got)
	}
	if got := tn.Counter("requests", "channel_bind", "success"); got < 1 {
		t.Errorf("requests{channel_bind,success} = %v, want >= 1", got)
	}
	// Closing the relay conn refreshes with lifetime 0: the allocation goes.
	closed = true
	if err := relayConn.Close(); err != nil {
		t.Fatal(err)
	}
	looptest.Eventually(t, "allocation deleted", func() bool {
		return tn.Counter("allocations_active", "udp") == 0 && tn.Counter("allocations_deleted", "udp") == 1
	})
	// The Refresh's answer is counted as it is written, which is after the
	// allocation is gone (and pion's Close does not wait for it): wait for
	// the count rather than read it once.
	looptest.Eventually(t, "requests{refresh,success} >= 1", func() bool {
		return tn.Counter("requests", "refresh", "success") >= 1
	})
}

func TestRelayStreamTransports(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "secret1"}, AllowPeer: []string{"127.0.0.1"},
		TLS: true, DTLS: true})
	peer := relaytest.ListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)
	for _, tc := range []struct{ transport, addr string }{
		{"tcp", tn.Addr()}, {"tls", tn.TLS}, {"dtls", tn.DTLS},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			c := relaytest.StreamClient(t, tc.transport, tc.addr, "alice", "secret1")
			relayConn, err := c.Allocate()
			if err != nil {
				t.Fatalf("allocate over %s: %v", tc.transport, err)
			}
			defer relayConn.Close()
			if n := relaytest.Exchange(t, relayConn, peer.LocalAddr(), 20); n != 20 {
				t.Fatalf("%d of 20 messages came back over %s", n, tc.transport)
			}
			if got := tn.Counter("relay_packets", metrics.PeerToClient, tc.transport); got != 20 {
				t.Errorf("relay_packets{peer_to_client,%s} = %v, want 20", tc.transport, got)
			}
		})
	}
}

func TestRelayIPv6(t *testing.T) {
	relaytest.NeedIPv6Loopback(t)
	tn := relaytest.Start(t, relaytest.Options{Listen: []string{"127.0.0.1:0", "[::1]:0"}, RelayIPs: []string{"127.0.0.1", "::1"},
		Users: map[string]string{"alice": "secret1"}, AllowPeer: []string{"::1"}})
	addr6 := tn.UDP[1]
	peer := relaytest.ListenUDP(t, "udp6", "[::1]:0")
	looptest.Echo(peer)
	c := relaytest.NewClient(t, relaytest.ListenUDP(t, "udp6", "[::1]:0"), addr6, "alice", "secret1")
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relayConn.Close()
	if ip := relayConn.LocalAddr().(*net.UDPAddr).IP; !ip.Equal(net.IPv6loopback) {
		t.Fatalf("relayed address %v, want ::1", relayConn.LocalAddr())
	}
	if n := relaytest.Exchange(t, relayConn, peer.LocalAddr(), 20); n != 20 {
		t.Fatalf("%d of 20 messages came back over IPv6", n)
	}
}

func TestRelayTCPAllocation(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "secret1"}, AllowPeer: []string{"127.0.0.1"}})
	ln := relaytest.TCPEchoPeer(t)
	alloc := relaytest.AllocateTCP(t, tn.Addr(), "alice", "secret1")
	dataConn, err := alloc.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("connect through relay: %v", err)
	}
	defer dataConn.Close()
	for i := range 10 {
		msg := []byte(fmt.Sprintf("tcp relay message %d", i))
		if _, err := dataConn.Write(msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		_ = dataConn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(dataConn, buf); err != nil {
			t.Fatalf("read echo %d: %v", i, err)
		}
		if !bytes.Equal(buf, msg) {
			t.Fatalf("echo %d: got %q want %q", i, buf, msg)
		}
	}
	if got := tn.Counter("requests", "connection_bind", "success"); got != 1 {
		t.Errorf("requests{connection_bind,success} = %v, want 1", got)
	}
	if got := tn.Counter("relay_bytes", metrics.PeerToClient, "tcp"); got < 10 {
		t.Errorf("relay_bytes{peer_to_client,tcp} = %v, want the echoed bytes", got)
	}
}

// TestReservationAcrossSockets reserves port pairs with EVEN-PORT and claims
// the second port with RESERVATION-TOKEN from another client socket, as
// turnutils_uclient does for RTCP. With several SO_REUSEPORT sockets the
// kernel sends most second requests to a socket other than the one that
// issued the token; every claim must still get exactly the reserved port.
//
// A reserved port must be held, not merely hoped to stay free: on a busy
// host other programs' sockets land anywhere in the default relay range
// (it overlaps the kernel's ephemeral range), and a claim whose port one of
// them had bound got 508. Here the relay range lies below the ephemeral
// range, and another socket holds the odd port after every other even
// port, so half of the pairs pion would pick are taken, every run.
func TestReservationAcrossSockets(t *testing.T) {
	lo, hi := looptest.FreeUDPRange(t, 21000, 64) // lo is even
	for port := lo + 1; port <= hi; port += 4 {
		held, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
	}
	tn := relaytest.Start(t, relaytest.Options{UDPSockets: 4, Users: map[string]string{"alice": "pw"},
		Configure: func(c *relay.Config) { c.MinPort, c.MaxPort = lo, hi }})
	for i := range 8 {
		rtp := relaytest.NewRawClient(t, tn.Addr())
		resp := rtp.Do(stun.MethodAllocate, "alice", "pw", relaytest.RequestedTransport(17), relaytest.EvenPort{})
		if code := relaytest.ErrCode(resp); code != 0 {
			t.Fatalf("pair %d: EVEN-PORT allocate: code %d", i, code)
		}
		port := relaytest.RelayedPort(t, resp)
		tok, err := resp.Get(stun.AttrReservationToken)
		if err != nil || port%2 != 0 {
			t.Fatalf("pair %d: port %d, token %v", i, port, err)
		}
		rtcp := relaytest.NewRawClient(t, tn.Addr())
		resp = rtcp.Do(stun.MethodAllocate, "alice", "pw", relaytest.RequestedTransport(17), relaytest.ReservationToken(tok))
		if code := relaytest.ErrCode(resp); code != 0 {
			t.Fatalf("pair %d: RESERVATION-TOKEN allocate: code %d", i, code)
		}
		if got := relaytest.RelayedPort(t, resp); got != port+1 {
			t.Fatalf("pair %d: reserved port %d, got %d", i, port+1, got)
		}
		// The steered client keeps working: refresh and delete its allocation.
		if code := relaytest.ErrCode(rtcp.Do(stun.MethodRefresh, "alice", "pw", relaytest.Lifetime(0))); code != 0 {
			t.Fatalf("pair %d: refresh of the reserved allocation: code %d", i, code)
		}
	}
}

// TestTCPAllocationOverUDPRefused: RFC 6062 §5.1 — a TCP allocation asked
// for over UDP gets 400, and no TCP relay is opened.
func TestTCPAllocationOverUDPRefused(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}})
	c := relaytest.NewRawClient(t, tn.Addr())
	if code := relaytest.ErrCode(c.Do(stun.MethodAllocate, "alice", "pw", relaytest.RequestedTransport(6))); code != 400 {
		t.Fatalf("TCP allocate over UDP: code %d, want 400", code)
	}
	if got := tn.Counter("allocations_created", "udp"); got != 0 {
		t.Fatalf("allocations_created = %v", got)
	}
}

// TestBindingOnEveryListener sends a STUN Binding request over each
// transport and checks the reflexive address.
func TestBindingOnEveryListener(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, TLS: true, DTLS: true})
	udp := relaytest.NewClient(t, relaytest.ListenUDP(t, "udp4", "127.0.0.1:0"), tn.Addr(), "alice", "pw")
	if a, err := udp.SendBindingRequest(); err != nil || !strings.HasPrefix(a.String(), "127.0.0.1:") {
		t.Fatalf("udp binding: %v %v", a, err)
	}
	for _, tc := range []struct{ transport, addr string }{{"tcp", tn.Addr()}, {"tls", tn.TLS}, {"dtls", tn.DTLS}} {
		c := relaytest.StreamClient(t, tc.transport, tc.addr, "alice", "pw")
		if a, err := c.SendBindingRequest(); err != nil || !strings.HasPrefix(a.String(), "127.0.0.1:") {
			t.Errorf("%s binding: %v %v", tc.transport, a, err)
		}
	}
	if got := tn.Counter("requests", "binding", "success"); got != 4 {
		t.Errorf("requests{binding,success} = %v, want 4", got)
	}
}
