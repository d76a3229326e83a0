package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
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
// packet allocates nothing: client-side inspection of ChannelData and Send
// indications, and both directions of a relay socket, with and without a
// bandwidth limit.
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
		rc := l.wrapRelayPacketConn(nopPacketConn{from: peer}, 50000)
		rc.permits = newPermits()
		rc.permits.add(netip.MustParseAddr("203.0.113.1"))
		buf := make([]byte, 1600)
		for name, f := range map[string]func(){
			"inspect ChannelData":    func() { _, _ = l.inspect(chanData, src, r) },
			"drop stray ChannelData": func() { _, _ = l.inspect(chanData, stranger, r) },
			"inspect Send":           func() { _, _ = l.inspect(sendInd, src, r) },
			"finish ChannelData":     func() { _ = l.finishResponse(chanData, src, &r.rm) },
			"relay WriteTo":          func() { _, _ = rc.WriteTo(buf[:172], peer) },
			"relay ReadFrom":         func() { _, _, _ = rc.ReadFrom(buf) },
			"observe response":       func() { l.observeResponse(chanData) },
		} {
			if n := testing.AllocsPerRun(1000, f); n != 0 {
				t.Errorf("%s (max-bps %d): %v allocations per packet, want 0", name, maxBPS, n)
			}
		}
	}
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
	rc := l.wrapRelayPacketConn(nopPacketConn{from: peer}, 50000)
	buf := make([]byte, 172)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = rc.WriteTo(buf, peer)
	}
}
