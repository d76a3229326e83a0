package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

// seqDatagram is a ChannelData message of size bytes (at least 8) whose
// payload starts with seq.
func seqDatagram(seq uint32, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint16(b, 0x4001)
	binary.BigEndian.PutUint16(b[2:], uint16(min(size-chanHeaderSize, 0xFFFF)))
	binary.BigEndian.PutUint32(b[4:], seq)
	return b
}

// readTimed is c.ReadFrom, with the socket closed (and the test failed) if
// nothing comes within 5 s.
func readTimed(t *testing.T, c *clientPacketConn, b []byte) (int, net.Addr) {
	t.Helper()
	stop := time.AfterFunc(5*time.Second, func() { _ = c.Close() })
	defer stop.Stop()
	n, addr, err := c.ReadFrom(b)
	if err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	return n, addr
}

// sameUDPAddr reports whether got is want, with the IP in the same form
// (4 or 16 bytes) as net.UDPConn.ReadFrom would give.
func sameUDPAddr(got net.Addr, want *net.UDPAddr) bool {
	ua, ok := got.(*net.UDPAddr)
	return ok && ua.AddrPort() == want.AddrPort() && len(ua.IP) == len(want.IP) && ua.Zone == want.Zone
}

// TestClientReadFromBatches reads a UDP listener socket through
// clientPacketConn on real loopback sockets: several batches' worth of
// datagrams from three sources come out in order with their sources,
// oversized ones are dropped and counted, a datagram handed over by
// another socket of the group and a bare deadline wake-up still work, and
// after Close the datagrams left in a batch are dropped.
func TestClientReadFromBatches(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{
		{"udp4", "127.0.0.1:0"},
		{"udp6", "[::1]:0"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			pcs, err := ListenUDP(tc.addr, 1, 1<<20)
			if err != nil {
				t.Skipf("no %s loopback: %v", tc.network, err)
			}
			l := newInspectListener(t, false)
			c := &clientPacketConn{PacketConn: pcs[0], l: l}
			defer c.Close()
			// The form of address the socket reports: a 16-byte IP from an
			// IPv6 socket.
			var senders []*net.UDPConn
			var from []*net.UDPAddr
			for range 3 {
				s, err := net.ListenUDP(tc.network, &net.UDPAddr{IP: c.LocalAddr().(*net.UDPAddr).IP})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				senders = append(senders, s)
				a := s.LocalAddr().(*net.UDPAddr)
				if tc.network == "udp4" {
					a = &net.UDPAddr{IP: a.IP.To4(), Port: a.Port}
				} else {
					a = &net.UDPAddr{IP: a.IP.To16(), Port: a.Port}
				}
				from = append(from, a)
				l.clients.add(a) // the sender holds an allocation: its ChannelData is read
			}
			buf := make([]byte, maxMessageSize) // pion's inbound MTU

			// Rounds of one and a half batches, each sent before any of it is
			// read, so that the reader holds a full batch. Datagrams 10 and
			// 70 of a round are oversized (one byte over, and far over).
			const perRound = readBatch + readBatch/2 + 1
			oversized := map[int]int{10: readBufSize, 70: 4000}
			seq := uint32(0)
			for round := range 3 {
				before := testutil.ToFloat64(l.dropOversized)
				inputBefore := testutil.ToFloat64(l.input)
				var want []uint32
				var wantFrom []int
				for i := range perRound {
					size := 8 + i%200
					if o, ok := oversized[i]; ok {
						size = o
					} else {
						want = append(want, seq)
						wantFrom = append(wantFrom, i%len(senders))
					}
					if _, err := senders[i%len(senders)].WriteTo(seqDatagram(seq, size), c.LocalAddr()); err != nil {
						t.Fatal(err)
					}
					seq++
				}
				for k, w := range want {
					n, addr := readTimed(t, c, buf)
					if k == 0 && round == 0 {
						if got, ok := batchLen(c.rd); ok && got < 2 {
							t.Errorf("first read of a queue of %d datagrams took %d into the batch", perRound, got)
						}
					}
					if n < 8 {
						t.Fatalf("round %d, datagram %d: %d bytes", round, k, n)
					}
					if got := binary.BigEndian.Uint32(buf[4:]); got != w {
						t.Fatalf("round %d, datagram %d: seq %d, want %d", round, k, got, w)
					}
					if !sameUDPAddr(addr, from[wantFrom[k]]) {
						t.Fatalf("round %d, seq %d: from %#v, want %#v", round, w, addr, from[wantFrom[k]])
					}
				}
				if got := testutil.ToFloat64(l.dropOversized) - before; got != float64(len(oversized)) {
					t.Errorf("round %d: %v oversized drops, want %d", round, got, len(oversized))
				}
				if got := testutil.ToFloat64(l.input) - inputBefore; got != float64(len(want)) {
					t.Errorf("round %d: %v datagrams counted, want %d", round, got, len(want))
				}
			}

			// A datagram handed over while ReadFrom waits wakes it (inject
			// expires the read deadline) and comes out with its source.
			injFrom := &net.UDPAddr{IP: from[0].IP, Port: 9}
			l.clients.add(injFrom)
			go func() {
				time.Sleep(20 * time.Millisecond)
				c.inject(seqDatagram(7777, 40), injFrom)
			}()
			if n, addr := readTimed(t, c, buf); n != 40 || binary.BigEndian.Uint32(buf[4:]) != 7777 || addr != injFrom {
				t.Fatalf("injected datagram: %d bytes, seq %d from %v", n, binary.BigEndian.Uint32(buf[4:]), addr)
			}

			// A wake-up with nothing handed over is not an error: the read
			// goes on to the next datagram.
			go func() {
				time.Sleep(20 * time.Millisecond)
				_ = c.PacketConn.SetReadDeadline(time.Unix(1, 0))
				time.Sleep(20 * time.Millisecond)
				_, _ = senders[1].WriteTo(seqDatagram(8888, 40), c.LocalAddr())
			}()
			if _, addr := readTimed(t, c, buf); binary.BigEndian.Uint32(buf[4:]) != 8888 || !sameUDPAddr(addr, from[1]) {
				t.Fatalf("after a wake-up: seq %d from %v", binary.BigEndian.Uint32(buf[4:]), addr)
			}

			// A datagram handed over while a batch is buffered comes first;
			// the batch then goes on in order.
			for i := range 5 {
				if _, err := senders[2].WriteTo(seqDatagram(uint32(100+i), 40), c.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			}
			readTimed(t, c, buf)
			c.inject(seqDatagram(7778, 40), injFrom)
			for _, w := range []uint32{7778, 101, 102, 103, 104} {
				readTimed(t, c, buf)
				if got := binary.BigEndian.Uint32(buf[4:]); got != w {
					t.Fatalf("after an injection into a buffered batch: seq %d, want %d", got, w)
				}
			}

			// Close drops what a batch still holds.
			for i := range 5 {
				if _, err := senders[2].WriteTo(seqDatagram(uint32(200+i), 40), c.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			}
			readTimed(t, c, buf)
			_ = c.Close()
			if _, _, err := c.ReadFrom(buf); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("ReadFrom after Close: %v, want net.ErrClosed", err)
			}
		})
	}
}
