package relay

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"go.uber.org/goleak"
)

// nopPacketConn stands in for the kernel socket so a benchmark and the
// allocation check measure only what this package adds per packet.
type nopPacketConn struct{ from net.Addr }

func (c nopPacketConn) ReadFrom(b []byte) (int, net.Addr, error)  { return 172, c.from, nil }
func (c nopPacketConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }
func (nopPacketConn) Close() error                                { return nil }
func (nopPacketConn) LocalAddr() net.Addr                         { return &net.UDPAddr{} }
func (nopPacketConn) SetDeadline(time.Time) error                 { return nil }
func (nopPacketConn) SetReadDeadline(time.Time) error             { return nil }
func (nopPacketConn) SetWriteDeadline(time.Time) error            { return nil }

func hotPathPackets(t testing.TB) (chanData, sendInd []byte) {
	chanData = make([]byte, 4+172)
	binary.BigEndian.PutUint16(chanData, 0x4001)
	binary.BigEndian.PutUint16(chanData[2:], 172)
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		stun.RawAttribute{Type: stun.AttrData, Value: make([]byte, 172)})
	if err != nil {
		t.Fatal(err)
	}
	return chanData, m.Raw
}

// TestHotPathAllocatesNothing asserts that checking and counting a relayed
// packet allocates nothing: steering across the sockets of an address
// (with a token waiting and a client steered), client-side inspection of
// ChannelData and Send indications, and both directions of a relay socket,
// with and without a bandwidth limit.
func TestHotPathAllocatesNothing(t *testing.T) {
	l := newInspectListener(t, false)
	chanData, sendInd := hotPathPackets(t)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	r := &discardReplier{}
	peer := &net.UDPAddr{IP: net.IPv4(203, 0, 113, 1), Port: 6000}
	l.clients.add(src) // src holds an allocation: its ChannelData passes
	stranger := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5001}
	if _, pass := l.inspect(chanData, stranger, r); pass {
		t.Fatal("ChannelData from a client without an allocation passed")
	}
	for _, maxBPS := range []int64{0, 1 << 40} {
		l.srv.cfg.MaxBPS = maxBPS
		rc := l.wrapRelayPacketConn(nopPacketConn{from: peer}, 50000, l.srv.newRecord(nil))
		rc.rec.add(netip.MustParseAddr("203.0.113.1"))
		buf := make([]byte, 1600)
		g := steeringGroup(l)
		c := &clientPacketConn{l: l, g: g}
		for name, f := range map[string]func(){
			"steer ChannelData":      func() { _ = g.steer(c, chanData, src) },
			"inspect ChannelData":    func() { _, _ = l.inspect(chanData, src, r) },
			"drop stray ChannelData": func() { _, _ = l.inspect(chanData, stranger, r) },
			"inspect Send":           func() { _, _ = l.inspect(sendInd, src, r) },
			"finish ChannelData":     func() { _ = l.finishResponse(chanData, readOutHeader(chanData), src, &r.rm) },
			"relay WriteTo":          func() { _, _ = rc.WriteTo(buf[:172], peer) },
			"relay ReadFrom":         func() { _, _, _ = rc.ReadFrom(buf) },
			"observe response":       func() { l.observeResponse(chanData, readOutHeader(chanData)) },
		} {
			if n := testing.AllocsPerRun(1000, f); n != 0 {
				t.Errorf("%s (max-bps %d): %v allocations per packet, want 0", name, maxBPS, n)
			}
		}
	}
}

// TestClientReadAllocatesNothing asserts that reading a ChannelData
// datagram from a real UDP listener socket through clientPacketConn
// allocates nothing once its source is known: the batch read, the copy
// into pion's buffer, the source address (shared, from addrCache) and the
// inspection. Where a socket is not a *net.UDPConn, net.PacketConn.ReadFrom
// allocates the address of every datagram (two allocations).
func TestClientReadAllocatesNothing(t *testing.T) {
	defer goleak.VerifyNone(t)
	const runs = 2*readBatch + 10 // refills the batch twice
	pcs, err := ListenUDP("127.0.0.1:0", 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	c := &clientPacketConn{PacketConn: pcs[0], l: newInspectListener(t, false)}
	defer c.Close()
	s, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c.l.clients.add(s.LocalAddr()) // the sender holds an allocation
	chanData, _ := hotPathPackets(t)
	defer queueDatagrams(t, s, chanData, c.LocalAddr(), runs+1, c)() // AllocsPerRun runs f once more to warm up
	buf := make([]byte, maxMessageSize)
	var rerr error
	n := testing.AllocsPerRun(runs, func() {
		if _, _, err := c.ReadFrom(buf); err != nil && rerr == nil {
			rerr = err
		}
	})
	if rerr != nil {
		t.Fatal(rerr)
	}
	if n != 0 {
		t.Errorf("client ReadFrom: %v allocations per datagram, want 0", n)
	}
}

// TestRelaySocketAllocatesNothing asserts the same of the rest of both
// directions of the user-space path, on real loopback UDP sockets: a
// datagram from a peer read from a relay socket (permission, limit, the
// peer decision, counting, the peer's address), ChannelData written to the
// client through clientPacketConn, and a datagram written from a relay
// socket to a peer. The peer is another live relay port of the node on a
// fleet member's address, so every branch of the peer decision runs.
// (clientPacketConn.ReadFrom is TestClientReadAllocatesNothing's.)
func TestRelaySocketAllocatesNothing(t *testing.T) {
	defer goleak.VerifyNone(t)
	const runs = 200
	l := newInspectListener(t, false)
	l.srv.cfg.MaxBPS = 1 << 40
	relaySock, peerSock, clientSock := listenLoopback(t), listenLoopback(t), listenLoopback(t)
	peer := peerSock.LocalAddr().(*net.UDPAddr)
	client := clientSock.LocalAddr().(*net.UDPAddr)
	l.srv.addSelf(netip.MustParseAddr("127.0.0.1"), true)
	l.srv.ports.udp4.add(peer.Port)
	l.srv.SetFleetPeers([]FleetPeer{{Addr: netip.MustParseAddr("127.0.0.1"), MinPort: 1, MaxPort: 65535}})
	rc := l.wrapRelayPacketConn(relaySock, relaySock.LocalAddr().(*net.UDPAddr).Port, l.srv.newRecord(nil))
	rc.rec.add(netip.MustParseAddr("127.0.0.1"))
	listener := &clientPacketConn{PacketConn: listenLoopback(t), l: l}
	chanData, _ := hotPathPackets(t)
	payload := chanData[chanHeaderSize:]
	defer queueDatagrams(t, peerSock, payload, relaySock.LocalAddr(), runs+1, relaySock)()
	buf := make([]byte, maxMessageSize)
	var (
		ioErr    error
		lastN    int
		lastFrom net.Addr
	)
	note := func(err error) {
		if err != nil && ioErr == nil {
			ioErr = err
		}
	}
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"peer -> client: relay socket ReadFrom", func() {
			var err error
			lastN, lastFrom, err = rc.ReadFrom(buf)
			note(err)
		}},
		{"peer -> client: ChannelData to the client", func() {
			_, err := listener.WriteTo(chanData, client)
			note(err)
		}},
		{"client -> peer: relay socket WriteTo", func() {
			_, err := rc.WriteTo(payload, peer)
			note(err)
		}},
	} {
		if n := testing.AllocsPerRun(runs, tc.f); n != 0 {
			t.Errorf("%s: %v allocations per datagram, want 0", tc.name, n)
		}
		if ioErr != nil {
			t.Fatalf("%s: %v", tc.name, ioErr)
		}
	}
	if lastN != len(payload) || lastFrom.String() != peer.String() {
		t.Errorf("relay socket read %d bytes from %v, want %d from %v", lastN, lastFrom, len(payload), peer)
	}
	if got := rc.rec.stats.p2cPackets.Load(); got != runs+1 {
		t.Errorf("relay socket counted %d datagrams from the peer, want %d", got, runs+1)
	}
	if got := rc.rec.stats.c2pPackets.Load(); got != runs+1 {
		t.Errorf("relay socket counted %d datagrams to the peer, want %d", got, runs+1)
	}
}

// queueDatagrams sends n copies of msg from from to to, for the test to
// read, and closes reader if they have not all been read in 10 s: a lost
// datagram must not hang the test. Call what it returns once they have.
func queueDatagrams(t *testing.T, from net.PacketConn, msg []byte, to net.Addr, n int, reader io.Closer) (stop func()) {
	t.Helper()
	for range n {
		if _, err := from.WriteTo(msg, to); err != nil {
			t.Fatal(err)
		}
	}
	timer := time.AfterFunc(10*time.Second, func() { _ = reader.Close() })
	return func() { timer.Stop() }
}

func BenchmarkInspectChannelData(b *testing.B) {
	l := newInspectListener(b, false)
	chanData, _ := hotPathPackets(b)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	r := &discardReplier{}
	l.clients.add(src)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = l.inspect(chanData, src, r)
	}
}

func BenchmarkRelayWriteTo(b *testing.B) {
	l := newInspectListener(b, false)
	peer := &net.UDPAddr{IP: net.IPv4(203, 0, 113, 1), Port: 6000}
	rc := l.wrapRelayPacketConn(nopPacketConn{from: peer}, 50000, l.srv.newRecord(nil))
	rc.rec.add(netip.MustParseAddr("203.0.113.1"))
	buf := make([]byte, 172)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = rc.WriteTo(buf, peer)
	}
}

// BenchmarkClientReadFrom reads ChannelData datagrams from a real loopback
// UDP socket through clientPacketConn: batched (recvmmsg on Linux) and one
// system call per datagram (net.PacketConn.ReadFrom), side by side. Bursts
// of 256 are sent with the timer stopped, so what is timed is the receive
// side: the system calls, the copy, the address and the inspection.
func BenchmarkClientReadFrom(b *testing.B) {
	for _, mode := range []string{"batch", "single"} {
		b.Run(mode, func(b *testing.B) {
			pcs, err := ListenUDP("127.0.0.1:0", 1, 1<<20)
			if err != nil {
				b.Fatal(err)
			}
			c := &clientPacketConn{PacketConn: pcs[0], l: newInspectListener(b, false)}
			defer c.Close()
			if mode == "single" {
				c.rdInit = true // no batchReader: PacketConn.ReadFrom
			}
			s, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			c.l.clients.add(s.LocalAddr()) // the sender holds an allocation
			chanData, _ := hotPathPackets(b)
			to := c.LocalAddr()
			buf := make([]byte, maxMessageSize)
			readBursts(b, s, chanData, to, func() error {
				_, _, err := c.ReadFrom(buf)
				return err
			})
		})
	}
}

// steeringGroup returns a group of sockets of l with a RESERVATION-TOKEN
// waiting to be claimed and a client steered to another socket.
func steeringGroup(l *listener) *udpGroup {
	g := newUDPGroup()
	other := &clientPacketConn{l: l, g: g}
	g.tokens["unclaimed"] = tokenOwner{c: other, at: time.Now()}
	g.nTokens.Store(1)
	g.setSteeredLocked(steerMap{netip.MustParseAddrPort("127.0.0.1:7000"): {c: other, at: time.Now()}})
	return g
}

// BenchmarkSteer is the steering check every datagram of a UDP listener
// socket goes through while an RESERVATION-TOKEN waits to be claimed and
// another client is steered: ChannelData from a client that is not
// steered, on every core at once.
func BenchmarkSteer(b *testing.B) {
	l := newInspectListener(b, false)
	g := steeringGroup(l)
	c := &clientPacketConn{l: l, g: g}
	chanData, _ := hotPathPackets(b)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if g.steer(c, chanData, src) {
				b.Fatal("steered a client nobody steers")
			}
		}
	})
}

// BenchmarkRelayReadFrom reads datagrams from a peer on a real loopback
// relay socket through relayPacketConn (permission, limit, peer decision,
// counting, address), in bursts sent with the timer stopped.
func BenchmarkRelayReadFrom(b *testing.B) {
	l := newInspectListener(b, false)
	relaySock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer relaySock.Close()
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer peer.Close()
	rc := l.wrapRelayPacketConn(relaySock, relaySock.LocalAddr().(*net.UDPAddr).Port, l.srv.newRecord(nil))
	rc.rec.add(netip.MustParseAddr("127.0.0.1"))
	buf := make([]byte, maxMessageSize)
	readBursts(b, peer, make([]byte, 172), relaySock.LocalAddr(), func() error {
		_, _, err := rc.ReadFrom(buf)
		return err
	})
}

// readBursts runs read once per iteration of b, the receive side of a
// benchmark. Whenever the datagrams sent are used up, from sends a burst
// of 256 copies of msg to to with the timer stopped, so the sending is not
// timed.
func readBursts(b *testing.B, from net.PacketConn, msg []byte, to net.Addr, read func() error) {
	const burst = 256
	left := 0
	b.ReportAllocs()
	for b.Loop() {
		if left == 0 {
			b.StopTimer()
			for range burst {
				if _, err := from.WriteTo(msg, to); err != nil {
					b.Fatal(err)
				}
			}
			left = burst
			b.StartTimer()
		}
		if err := read(); err != nil {
			b.Fatal(err)
		}
		left--
	}
}
