package offload

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

// The program's cases, run with BPF_PROG_TEST_RUN: each crafts a frame,
// runs it, and compares the verdict, the bytes the program left and the
// counters it moved with what is expected. Expected frames are built by
// packet_test.go, with payloads as pion writes them (the data for client
// to peer; proto.ChannelData.Encode's header, data and zero padding for
// peer to client), and every relayed frame's checksums are also verified
// on their own. Bindings are installed with Bind in the test namespace,
// so each entry's route (interface and MTU) is what the Go side read from
// its route table.

var ap = netip.MustParseAddrPort

// Bindings the cases use. Remote ones (client and peer off-host on d0's
// subnet) arrive on d0 and are redirected; loopback ones arrive on lo and
// are delivered locally.
var (
	remote4 = Binding{Alloc: 1, Client: ap("192.0.2.100:5000"), Server: ap("192.0.2.1:3478"),
		Relay: ap("192.0.2.2:50000"), Peer: ap("192.0.2.200:6000"), Channel: 0x4001}
	remote6 = Binding{Alloc: 2, Client: ap("[2001:db8::100]:5000"), Server: ap("[2001:db8::1]:3478"),
		Relay: ap("[2001:db8::2]:50000"), Peer: ap("[2001:db8::200]:6000"), Channel: 0x7fff}
	loop4 = Binding{Alloc: 3, Client: ap("127.0.0.1:5003"), Server: ap("127.0.0.1:3478"),
		Relay: ap("127.0.0.2:50003"), Peer: ap("127.0.0.1:6003"), Channel: 0x4000}
	loop6 = Binding{Alloc: 4, Client: ap("[::1]:5004"), Server: ap("[::1]:3478"),
		Relay: ap("[::1]:50004"), Peer: ap("[::1]:6004"), Channel: 0x4abc}
)

// Two allocations of one call, each other's peer: one pass.
func onePassPair(v6 bool) (a, b Binding) {
	a = Binding{Alloc: 10, Client: ap("192.0.2.101:5010"), Server: ap("192.0.2.1:3478"),
		Relay: ap("192.0.2.2:50010"), Peer: ap("192.0.2.3:50011"), Channel: 0x4010}
	b = Binding{Alloc: 11, Client: ap("192.0.2.102:5011"), Server: ap("192.0.2.1:3479"),
		Relay: ap("192.0.2.3:50011"), Peer: ap("192.0.2.2:50010"), Channel: 0x5011, Fleet: true}
	if v6 {
		a = Binding{Alloc: 10, Client: ap("[2001:db8::101]:5010"), Server: ap("[2001:db8::1]:3478"),
			Relay: ap("[2001:db8::2]:50010"), Peer: ap("[2001:db8::3]:50011"), Channel: 0x4010}
		b = Binding{Alloc: 11, Client: ap("[2001:db8::102]:5011"), Server: ap("[2001:db8::1]:3479"),
			Relay: ap("[2001:db8::3]:50011"), Peer: ap("[2001:db8::2]:50010"), Channel: 0x5011, Fleet: true}
	}
	return a, b
}

// isLoopback reports whether b's client is on loopback: its frames
// arrive there, addressed to loopback's all-zero MAC.
func isLoopback(b Binding) bool { return b.Client.Addr().IsLoopback() }

func ingressMAC(b Binding) [6]byte {
	if isLoopback(b) {
		return [6]byte{}
	}
	return d0MAC
}

// clientFrame is a client's ChannelData to b's listener; the IP fields
// the program must keep are set to values it would not choose.
func clientFrame(b Binding, payload []byte) frame {
	return frame{src: b.Client, dst: b.Server, payload: payload, mac: ingressMAC(b),
		ttl: 50, tos: 0x10, id: 0x1234, fragOff: 0x4000, flow: 0x12345}
}

// peerFrame is a peer's datagram to b's relayed address.
func peerFrame(b Binding, data []byte) frame {
	return frame{src: b.Peer, dst: b.Relay, payload: data, mac: ingressMAC(b),
		ttl: 50, tos: 0x10, id: 0x1234, fragOff: 0x4000, flow: 0x12345}
}

// toPeer is what the client's frame in must become: from the relayed
// address to the peer, the data alone, TTL 64.
func toPeer(b Binding, in frame, data []byte) frame {
	out := in
	out.src, out.dst, out.payload, out.ttl, out.trailer = b.Relay, b.Peer, data, 64, nil
	return out
}

// toClient is what in must become toward b's client: from the listener,
// pion's ChannelData encoding of data.
func toClient(b Binding, server netip.Addr, in frame, data []byte) frame {
	out := in
	out.src, out.dst, out.ttl, out.trailer = netip.AddrPortFrom(server, b.Server.Port()), b.Client, 64, nil
	out.payload = channelData(b.Channel, data)
	return out
}

func (h *harness) ingress(b Binding) int {
	if isLoopback(b) {
		return 1
	}
	return h.ns.d0
}

func verdict(b Binding) uint32 {
	if isLoopback(b) {
		return actOK
	}
	return actRedirect
}

// expectRelayed runs in and checks the verdict and the output frame.
func (h *harness) expectRelayed(in []byte, ifindex int, wantRet uint32, want []byte) {
	h.t.Helper()
	ret, out := h.run(in, ifindex)
	if ret != wantRet {
		h.t.Errorf("verdict %d, want %d", ret, wantRet)
	}
	if d := diffBytes(out, want); d != "" {
		h.t.Errorf("output: %s", d)
	}
	if err := checkFrame(out); err != nil {
		h.t.Errorf("output frame: %v", err)
	}
}

// expectPassed runs in and checks the program left it alone: NEXT
// (TC_ACT_UNSPEC), not a byte changed, and the counters moved by want.
func (h *harness) expectPassed(in []byte, ifindex int, want Counters) {
	h.t.Helper()
	h.expectPassedCtx(in, skbContext{IngressIfindex: uint32(ifindex), Ifindex: uint32(ifindex)}, want)
}

func (h *harness) expectPassedCtx(in []byte, ctx skbContext, want Counters) {
	h.t.Helper()
	before := h.o.Counters()
	ret, out := h.runCtx(in, ctx)
	if ret != actNext {
		h.t.Errorf("verdict %d, want NEXT (TC_ACT_UNSPEC)", int32(ret))
	}
	if d := diffBytes(out, in); d != "" {
		h.t.Errorf("packet changed: %s", d)
	}
	h.expectCounters(before, want)
}

// expectCounters checks what the node counters moved by since before.
func (h *harness) expectCounters(before, want Counters) {
	h.t.Helper()
	if got := delta(h.o.Counters(), before); got != want {
		h.t.Errorf("counters moved by\n %+v, want\n %+v", got, want)
	}
}

// TestRelaySizes: remote bindings redirected out d0, loopback ones
// delivered locally, both ways, with data across the move's 256-byte
// chunks and up to the largest datagram user space takes: client
// ChannelData with any padding of 0-3 bytes (non-zero bytes, so the
// checksum must take them out) up to 1599 bytes, peer datagrams up to
// 1600. The per-allocation counters add up to what was relayed.
func TestRelaySizes(t *testing.T) {
	bindings := []Binding{remote4, remote6, loop4, loop6}
	for _, toPeerDir := range []bool{true, false} {
		name, sizes, pads := "client to peer", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 255, 256, 257, 511, 513, 1024, 1500, 1592, 1593, 1595}, 3
		if !toPeerDir {
			name, sizes, pads = "peer to client", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 255, 256, 257, 511, 513, 1024, 1597, 1598, 1599, 1600}, 0
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			h.addBind(bindings...)
			total := map[uint32]AllocationStats{}
			for _, b := range bindings {
				for _, n := range sizes {
					for pad := 0; pad <= pads; pad++ {
						if 4+n+pad >= 1600 && toPeerDir { // user space drops it: see TestPassed
							continue
						}
						t.Run(fmt.Sprintf("%s/data=%d/pad=%d", b.Client.Addr(), n, pad), func(t *testing.T) {
							h.t = t
							data := testData(n, byte(pad))
							u := uint64(n)
							st := total[b.Alloc]
							var in, want frame
							var moved Counters
							if toPeerDir {
								in = clientFrame(b, rawChannelData(b.Channel, n, data, pad))
								want = toPeer(b, in, data)
								moved = Counters{ToPeerPackets: 1, ToPeerBytes: u}
								st.PacketsToPeer++
								st.BytesToPeer += u
							} else {
								in = peerFrame(b, data)
								want = toClient(b, b.Server.Addr(), in, data)
								moved = Counters{ToClientPackets: 1, ToClientBytes: u}
								st.PacketsToClient++
								st.BytesToClient += u
							}
							before := h.o.Counters()
							h.expectRelayed(in.bytes(), h.ingress(b), verdict(b), want.bytes())
							h.expectCounters(before, moved)
							total[b.Alloc] = st
						})
					}
				}
			}
			h.t = t
			for _, b := range bindings {
				if got := h.allocStats(b.Alloc); got != total[b.Alloc] {
					t.Errorf("allocation %d: %+v, want %+v", b.Alloc, got, total[b.Alloc])
				}
			}
		})
	}
}

// TestNoChecksum: an IPv4 datagram without a UDP checksum is relayed
// without one (the program only updates checksums), both ways.
func TestNoChecksum(t *testing.T) {
	h := newHarness(t)
	h.addBind(remote4)
	for _, n := range []int{0, 5, 8, 99} {
		data := testData(n, 9)
		in := clientFrame(remote4, rawChannelData(remote4.Channel, n, data, 3))
		in.noCsum = true
		h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, toPeer(remote4, in, data).bytes())

		in = peerFrame(remote4, data)
		in.noCsum = true
		h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, toClient(remote4, remote4.Server.Addr(), in, data).bytes())
	}
}

// TestChecksumAllOnes: a datagram whose checksum works out to zero is
// sent with all ones (RFC 768), as user space's would be.
func TestChecksumAllOnes(t *testing.T) {
	h := newHarness(t)
	for _, b := range []Binding{remote4, remote6} {
		h.addBind(b)
		data := testData(8, 0)
		found := false
		for w := 0; w < 1<<16 && !found; w++ {
			binary.BigEndian.PutUint16(data[6:], uint16(w))
			in := clientFrame(b, rawChannelData(b.Channel, 8, data, 0))
			want := toPeer(b, in, data).bytes()
			if binary.BigEndian.Uint16(want[len(want)-10:]) != 0xffff {
				continue
			}
			h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, want)
			p := peerFrame(b, data)
			h.expectRelayed(p.bytes(), h.ns.d0, actRedirect, toClient(b, b.Server.Addr(), p, data).bytes())
			found = true
		}
		if !found {
			t.Errorf("%s: no data gives a zero checksum", b.Client.Addr())
		}
	}
}

// TestOnePass: a client's ChannelData to a peer that is another
// allocation's relayed address on this node, with a channel back, goes
// straight to the other client as ChannelData; the fleet mark of the
// other binding counts no cross-host bytes (nothing left the host).
func TestOnePass(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			h := newHarness(t)
			a, b := onePassPair(v6)
			h.addBind(a, b)
			var sa, sb AllocationStats
			for _, n := range []int{0, 1, 2, 3, 4, 7, 256, 1000, 1592, 1595} {
				for pad := 0; pad <= 3; pad++ {
					if 4+n+pad >= 1600 {
						continue
					}
					data := testData(n, 5)
					in := clientFrame(a, rawChannelData(a.Channel, n, data, pad))
					before := h.o.Counters()
					h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, toClient(b, b.Server.Addr(), in, data).bytes())
					u := uint64(n)
					h.expectCounters(before, Counters{ToPeerPackets: 1, ToPeerBytes: u, ToClientPackets: 1, ToClientBytes: u,
						OnePassPackets: 1, OnePassBytes: u})
					sa.PacketsToPeer++
					sa.BytesToPeer += u
					sb.PacketsToClient++
					sb.BytesToClient += u
				}
			}
			if got := h.allocStats(a.Alloc); got != sa {
				t.Errorf("allocation a: %+v, want %+v", got, sa)
			}
			if got := h.allocStats(b.Alloc); got != sb {
				t.Errorf("allocation b: %+v, want %+v", got, sb)
			}
		})
	}
}

// TestOnePassLocal: one pass toward a client on this host. Both clients
// on this host: the packet arrives on loopback and is delivered locally.
// A remote client's packet toward a local one arrives on d0 and is left to
// user space (pass_route), as any local destination off loopback.
func TestOnePassLocal(t *testing.T) {
	h := newHarness(t)
	a := Binding{Alloc: 12, Client: ap("127.0.0.1:5012"), Server: ap("127.0.0.1:3478"),
		Relay: ap("127.0.0.2:50012"), Peer: ap("127.0.0.3:50013"), Channel: 0x4012}
	b := Binding{Alloc: 13, Client: ap("127.0.0.1:5013"), Server: ap("127.0.0.1:3478"),
		Relay: ap("127.0.0.3:50013"), Peer: ap("127.0.0.2:50012"), Channel: 0x4013}
	remote, local := onePassPair(false)
	local.Client = ap("192.0.2.1:5011")
	h.addBind(a, b, remote, local)
	data := testData(33, 2)
	in := clientFrame(a, rawChannelData(a.Channel, len(data), data, 3))
	before := h.o.Counters()
	h.expectRelayed(in.bytes(), 1, actOK, toClient(b, b.Server.Addr(), in, data).bytes())
	h.expectCounters(before, Counters{ToPeerPackets: 1, ToPeerBytes: 33, ToClientPackets: 1, ToClientBytes: 33,
		OnePassPackets: 1, OnePassBytes: 33})

	in = clientFrame(remote, rawChannelData(remote.Channel, len(data), data, 3))
	h.expectPassed(in.bytes(), h.ns.d0, Counters{PassRoute: 1})
}

// TestOnePassFallsBack: when the other allocation cannot take the packet
// in one pass (its wildcard listener not learned yet, or its allocation
// gone), the packet takes the plain client-to-peer path: to the other
// relayed address, which is on this host, so arriving on d0 it goes up.
func TestOnePassFallsBack(t *testing.T) {
	h := newHarness(t)
	a, b := onePassPair(false)
	b.Server = ap("0.0.0.0:3478")
	h.addBind(a, b)
	data := []byte{1, 2, 3}
	in := clientFrame(a, rawChannelData(a.Channel, 3, data, 1))
	h.expectPassed(in.bytes(), h.ns.d0, Counters{PassRoute: 1})
	// On loopback the plain path delivers it to b's relayed address.
	lo := in
	lo.mac = [6]byte{}
	h.expectRelayed(lo.bytes(), 1, actOK, toPeer(a, lo, data).bytes())

	// b's client speaks to 192.0.2.1 (one pass the other way: a's
	// listener is known): b's listener address is learned, and a's
	// packet goes through in one pass.
	c := clientFrame(b, rawChannelData(b.Channel, 0, nil, 0))
	c.dst = ap("192.0.2.1:3478")
	h.expectRelayed(c.bytes(), h.ns.d0, actRedirect, toClient(a, a.Server.Addr(), c, []byte{}).bytes())
	h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, toClient(b, netip.MustParseAddr("192.0.2.1"), in, data).bytes())

	// b's allocation gone from the kernel (its channel entries left):
	// the plain path again.
	if err := h.o.objs.Allocations.Delete(b.Alloc); err != nil {
		t.Fatal(err)
	}
	h.expectPassed(in.bytes(), h.ns.d0, Counters{PassRoute: 1})
}

// TestWildcardListener: a binding whose listener is the wildcard address
// matches the client's ChannelData to any address; the address the client
// used is learned and is the source of what goes back. Until then the
// peer's datagrams go up, counted.
func TestWildcardListener(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			h := newHarness(t)
			b := Binding{Alloc: 20, Client: ap("192.0.2.120:5020"), Server: ap("0.0.0.0:3478"),
				Relay: ap("192.0.2.2:50020"), Peer: ap("192.0.2.200:6020"), Channel: 0x4020}
			addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.3")}
			if v6 {
				b = Binding{Alloc: 20, Client: ap("[2001:db8::120]:5020"), Server: ap("[::]:3478"),
					Relay: ap("[2001:db8::2]:50020"), Peer: ap("[2001:db8::200]:6020"), Channel: 0x4020}
				addrs = []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::3")}
			}
			h.addBind(b)
			data := testData(13, 1)
			p := peerFrame(b, data)
			h.expectPassed(p.bytes(), h.ns.d0, Counters{PassNoServer: 1})

			for _, server := range addrs {
				c := clientFrame(b, rawChannelData(b.Channel, len(data), data, 3))
				c.dst = netip.AddrPortFrom(server, 3478)
				// Twice: learning, then the same address again.
				for range 2 {
					h.expectRelayed(c.bytes(), h.ns.d0, actRedirect, toPeer(b, c, data).bytes())
					h.expectRelayed(p.bytes(), h.ns.d0, actRedirect, toClient(b, server, p, data).bytes())
				}
			}
			// A ChannelData to another port is not this listener's.
			c := clientFrame(b, rawChannelData(b.Channel, len(data), data, 3))
			c.dst = netip.AddrPortFrom(addrs[0], 3479)
			h.expectPassed(c.bytes(), h.ns.d0, Counters{})
		})
	}
}

// TestEthernetPadding: a short frame arrives with padding after its IP
// packet; what the program sends ends where its IP packet does.
func TestEthernetPadding(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			h := newHarness(t)
			r := remote4
			if v6 {
				r = remote6
			}
			a, b := onePassPair(v6)
			h.addBind(r, a, b)
			for _, trailer := range [][]byte{{0xee}, {0xee, 0xee, 0xee, 0xee, 0xee, 0xee}, make([]byte, 40)} {
				for _, n := range []int{1, 4} {
					data := testData(n, 7)

					in := clientFrame(r, rawChannelData(r.Channel, n, data, 0))
					out := toPeer(r, in, data)
					in.trailer = trailer
					h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, out.bytes())

					in = peerFrame(r, data)
					out = toClient(r, r.Server.Addr(), in, data)
					in.trailer = trailer
					h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, out.bytes())

					// One pass, padding already normalised (n = 4) or not:
					// the UDP payload keeps its length or grows.
					in = clientFrame(a, rawChannelData(a.Channel, n, data, 0))
					out = toClient(b, b.Server.Addr(), in, data)
					in.trailer = trailer
					h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, out.bytes())
				}
			}
		})
	}
}

// TestFleetCounters: bytes to and from another fleet member are counted.
func TestFleetCounters(t *testing.T) {
	h := newHarness(t)
	b := remote4
	b.Fleet = true
	h.addBind(b)
	data := testData(77, 1)
	in := clientFrame(b, rawChannelData(b.Channel, len(data), data, 3))
	before := h.o.Counters()
	h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, toPeer(b, in, data).bytes())
	h.expectCounters(before, Counters{ToPeerPackets: 1, ToPeerBytes: 77, CrossOutBytes: 77})
	p := peerFrame(b, data)
	before = h.o.Counters()
	h.expectRelayed(p.bytes(), h.ns.d0, actRedirect, toClient(b, b.Server.Addr(), p, data).bytes())
	h.expectCounters(before, Counters{ToClientPackets: 1, ToClientBytes: 77, CrossInBytes: 77})
}

// TestOtherHost: a frame addressed to another host's MAC (seen by a
// promiscuous device) is dropped by the stack, so the program leaves it
// alone; an Ethernet broadcast the stack takes, and so does the program.
func TestOtherHost(t *testing.T) {
	h := newHarness(t)
	h.addBind(remote4, loop4)
	data := testData(8, 1)
	for _, c := range []struct {
		b       Binding
		ifindex int
	}{{remote4, h.ns.d0}, {loop4, 1}} {
		for _, f := range []frame{clientFrame(c.b, rawChannelData(c.b.Channel, 8, data, 0)), peerFrame(c.b, data)} {
			f.mac = [6]byte{0x02, 0, 0, 0, 0, 0x99}
			before := h.o.Counters()
			in := f.bytes()
			ret, out := h.runOtherHost(in, skbContext{IngressIfindex: uint32(c.ifindex), Ifindex: uint32(c.ifindex)})
			if ret != actNext {
				t.Errorf("%s: verdict %d, want NEXT", f.src, int32(ret))
			}
			if d := diffBytes(out, in); d != "" {
				t.Errorf("%s: packet changed: %s", f.src, d)
			}
			h.expectCounters(before, Counters{})
		}
	}
	f := clientFrame(remote4, rawChannelData(remote4.Channel, 8, data, 0))
	f.mac = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ret, out := h.runOtherHost(f.bytes(), skbContext{IngressIfindex: uint32(h.ns.d0), Ifindex: uint32(h.ns.d0)})
	if ret != actRedirect {
		t.Errorf("broadcast: verdict %d, want TC_ACT_REDIRECT", int32(ret))
	}
	if d := diffBytes(out, toPeer(remote4, f, data).bytes()); d != "" {
		t.Errorf("broadcast: output: %s", d)
	}
}
