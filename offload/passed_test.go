package offload

import (
	"encoding/binary"
	"testing"
)

// TestPassed: what the program must leave to user space untouched (NEXT,
// not a byte changed), and what it counts.
func TestPassed(t *testing.T) {
	h := newHarness(t)
	h.addBind(remote4, remote6)
	opA, opB := onePassPair(false)
	h.addBind(opA, opB)
	missing := Binding{Alloc: 36, Client: ap("192.0.2.136:5036"), Server: ap("192.0.2.1:3478"),
		Relay: ap("192.0.2.2:50036"), Peer: ap("192.0.2.200:6036"), Channel: 0x4036}
	h.addBind(missing)
	if err := h.o.objs.Allocations.Delete(missing.Alloc); err != nil {
		t.Fatal(err)
	}

	cd := func(b Binding, n, length, pad int) frame {
		return clientFrame(b, rawChannelData(b.Channel, length, testData(n, 1), pad))
	}
	stun := make([]byte, 20)
	binary.BigEndian.PutUint16(stun[0:], 0x0001)
	binary.BigEndian.PutUint32(stun[4:], 0x2112a442)
	withChannel := func(f frame, ch uint16) frame {
		p := append([]byte(nil), f.payload...)
		binary.BigEndian.PutUint16(p, ch)
		f.payload = p
		return f
	}
	mod := func(f frame, m func(*frame)) frame { m(&f); return f }

	full4 := cd(remote4, 8, 8, 0).bytes()
	full6 := cd(remote6, 8, 8, 0).bytes()

	cases := []struct {
		name string
		in   []byte
		ctx  skbContext // beyond the ingress device
		want Counters
	}{
		{"unknown channel", withChannel(cd(remote4, 8, 8, 0), 0x4002).bytes(), skbContext{}, Counters{}},
		{"unknown client port", mod(cd(remote4, 8, 8, 0), func(f *frame) { f.src = ap("192.0.2.100:5999") }).bytes(), skbContext{}, Counters{}},
		{"unknown listener port", mod(cd(remote4, 8, 8, 0), func(f *frame) { f.dst = ap("192.0.2.1:3479") }).bytes(), skbContext{}, Counters{}},
		{"unknown peer port", mod(peerFrame(remote4, testData(8, 0)), func(f *frame) { f.src = ap("192.0.2.200:6001") }).bytes(), skbContext{}, Counters{}},
		{"STUN", mod(cd(remote4, 0, 0, 0), func(f *frame) { f.payload = stun }).bytes(), skbContext{}, Counters{}},
		{"channel 0x3fff", withChannel(cd(remote4, 8, 8, 0), 0x3fff).bytes(), skbContext{}, Counters{}},
		{"channel 0x8001", withChannel(cd(remote4, 8, 8, 0), 0x8001).bytes(), skbContext{}, Counters{}},
		{"channel 0xc001", withChannel(cd(remote4, 8, 8, 0), 0xc001).bytes(), skbContext{}, Counters{}},
		{"length past the datagram", cd(remote4, 8, 9, 0).bytes(), skbContext{}, Counters{}},
		{"length past the datagram v6", cd(remote6, 8, 12, 3).bytes(), skbContext{}, Counters{}},
		{"4 bytes of padding", cd(remote4, 8, 8, 4).bytes(), skbContext{}, Counters{}},
		{"7 bytes of padding v6", cd(remote6, 1, 1, 7).bytes(), skbContext{}, Counters{}},
		{"3-byte ChannelData", mod(cd(remote4, 0, 0, 0), func(f *frame) { f.payload = f.payload[:3] }).bytes(), skbContext{}, Counters{}},
		// User space drops a client datagram of 1600 bytes or more (it
		// fills pion's 1600-byte read buffer): the program leaves it to.
		{"client datagram of 1600", cd(remote4, 1596, 1596, 0).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"client datagram of 1600, padded", cd(remote4, 1593, 1593, 3).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"client datagram of 1602 v6", cd(remote6, 1596, 1596, 2).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"data of 1600", cd(remote4, 1600, 1600, 0).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"data of 1601", cd(remote4, 1601, 1601, 3).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"one pass, datagram of 1600", cd(opA, 1596, 1596, 0).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"peer datagram of 1601", peerFrame(remote4, testData(1601, 0)).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"peer datagram of 2000 v6", peerFrame(remote6, testData(2000, 0)).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"IPv4 options", mod(cd(remote4, 8, 8, 0), func(f *frame) { f.options = []byte{1, 1, 1, 0} }).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"IPv4 MF", mod(cd(remote4, 8, 8, 0), func(f *frame) { f.fragOff = 0x2000 }).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"IPv4 fragment offset", mod(cd(remote4, 8, 8, 0), func(f *frame) { f.fragOff = 0x0010 }).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"IPv4 bad header checksum", mod(cd(remote4, 8, 8, 0), func(f *frame) { f.badIPSum = true }).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"IPv4 peer bad header checksum", mod(peerFrame(remote4, testData(8, 0)), func(f *frame) { f.badIPSum = true }).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"IPv4 version 5", mod(cd(remote4, 8, 8, 0), func(f *frame) { f.version = 5 }).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"IPv6 version 4", mod(cd(remote6, 8, 8, 0), func(f *frame) { f.version = 4 }).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"IPv6 hop-by-hop header", mod(cd(remote6, 8, 8, 0), func(f *frame) { f.hopByHop = true }).bytes(), skbContext{}, Counters{}},
		{"IPv6 zero checksum", mod(cd(remote6, 8, 8, 0), func(f *frame) { f.noCsum = true }).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"IPv6 peer zero checksum", mod(peerFrame(remote6, testData(8, 0)), func(f *frame) { f.noCsum = true }).bytes(), skbContext{}, Counters{PassShape: 1}},
		{"UDP length short of IP length", lengthen(full4, 2), skbContext{}, Counters{PassShape: 1}},
		{"UDP length short of IPv6 length", lengthen(full6, 2), skbContext{}, Counters{PassShape: 1}},
		{"UDP length below its header", udpLength(full4[:ethLen+ipv4Len+udpLen], 4), skbContext{}, Counters{PassShape: 1}},
		{"UDP length below its header v6", udpLength(full6[:ethLen+ipv6Len+udpLen], 4), skbContext{}, Counters{PassShape: 1}},
		{"IPv4 total length past the frame", full4[:len(full4)-1], skbContext{}, Counters{PassShape: 1}},
		{"IPv6 payload length past the frame", full6[:len(full6)-1], skbContext{}, Counters{PassShape: 1}},
		{"GSO", full4, skbContext{GSOSize: 1000, GSOSegs: 2}, Counters{PassShape: 1}},
		{"GSO v6", full6, skbContext{GSOSize: 1000, GSOSegs: 2}, Counters{PassShape: 1}},
		// PROG_TEST_RUN refuses an IPv4 or IPv6 frame whose IP header
		// is cut (EINVAL), so the shortest frames that reach the program
		// have a whole IP header.
		{"Ethernet only", arp()[:ethLen], skbContext{}, Counters{}},
		{"UDP header cut", full4[:ethLen+ipv4Len+4], skbContext{}, Counters{}},
		{"UDP header cut v6", full6[:ethLen+ipv6Len+7], skbContext{}, Counters{}},
		{"no UDP header", full4[:ethLen+ipv4Len], skbContext{}, Counters{}},
		{"ARP", arp(), skbContext{}, Counters{}},
		{"TCP", tcp(full4), skbContext{}, Counters{}},
		{"client, allocation gone", cd(missing, 8, 8, 0).bytes(), skbContext{}, Counters{}},
		{"peer, allocation gone", peerFrame(missing, testData(8, 0)).bytes(), skbContext{}, Counters{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			ctx := c.ctx
			ctx.IngressIfindex, ctx.Ifindex = uint32(h.ns.d0), uint32(h.ns.d0)
			h.expectPassedCtx(c.in, ctx, c.want)
		})
	}

	// Just within the limits, the same bindings relay.
	h.t = t
	for _, n := range []int{1595, 1592} {
		data := testData(n, 1)
		in := clientFrame(remote4, rawChannelData(remote4.Channel, n, data, 1599-4-n))
		h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, toPeer(remote4, in, data).bytes())
	}
	data := testData(1595, 1)
	in := clientFrame(opA, rawChannelData(opA.Channel, 1595, data, 0))
	h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, toClient(opB, opB.Server.Addr(), in, data).bytes())
}

// lengthen grows a frame's IP length fields by n and appends n bytes, so
// that the UDP length falls short of the IP packet.
func lengthen(f []byte, n int) []byte {
	b := append(append([]byte(nil), f...), make([]byte, n)...)
	ip := b[ethLen:]
	if ip[0]>>4 == 4 {
		binary.BigEndian.PutUint16(ip[2:], binary.BigEndian.Uint16(ip[2:])+uint16(n))
		setIPv4Checksum(ip)
	} else {
		binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(ip[4:])+uint16(n))
	}
	return b
}

// udpLength sets the UDP length field of a frame cut right after its UDP
// header to n, and the IP length fields to agree with it.
func udpLength(f []byte, n int) []byte {
	b := append([]byte(nil), f...)
	ip := b[ethLen:]
	if ip[0]>>4 == 4 {
		binary.BigEndian.PutUint16(ip[2:], uint16(ipv4Len+n))
		setIPv4Checksum(ip)
		binary.BigEndian.PutUint16(ip[ipv4Len+4:], uint16(n))
	} else {
		binary.BigEndian.PutUint16(ip[4:], uint16(n))
		binary.BigEndian.PutUint16(ip[ipv6Len+4:], uint16(n))
	}
	return b
}

// setIPv4Checksum recomputes the header checksum of the IPv4 packet ip.
func setIPv4Checksum(ip []byte) {
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum(0, ip[:ipv4Len])))
}

func arp() []byte {
	b := make([]byte, 42)
	copy(b, d0MAC[:])
	copy(b[6:], srcMAC[:])
	binary.BigEndian.PutUint16(b[12:], 0x0806)
	return b
}

// tcp turns an IPv4 UDP frame into one that claims to carry TCP.
func tcp(f []byte) []byte {
	b := append([]byte(nil), f...)
	ip := b[ethLen:]
	ip[9] = 6
	setIPv4Checksum(ip)
	return b
}
