package offload

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// This file builds and checks the test's packets: Ethernet + IPv4/IPv6 +
// UDP, with its own RFC 1071 checksum, written apart from the program so
// that the two cannot share a mistake.

// frame describes one Ethernet frame carrying a UDP datagram.
type frame struct {
	src, dst netip.AddrPort
	payload  []byte
	mac      [6]byte // destination MAC: the receiving device's (all zeros: loopback's)

	ttl      uint8  // TTL or hop limit; 0 means 64
	tos      uint8  // IPv4 TOS or IPv6 traffic class
	id       uint16 // IPv4 identification
	fragOff  uint16 // IPv4 flags and fragment offset, host order (0x4000: DF)
	flow     uint32 // IPv6 flow label
	options  []byte // IPv4 options (a multiple of 4 bytes)
	hopByHop bool   // IPv6: a Hop-by-Hop extension header before UDP
	noCsum   bool   // UDP checksum 0 (no checksum)
	badCsum  bool   // UDP checksum off by one
	badIPSum bool   // IPv4 header checksum off by one
	version  uint8  // IP version field; 0 means the right one
	trailer  []byte // bytes after the IP packet (Ethernet padding)
}

// srcMAC is the sender's MAC in every frame.
var srcMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}

const (
	ethLen  = 14
	ipv4Len = 20
	ipv6Len = 40
	udpLen  = 8
)

// bytes lays the frame out.
func (f frame) bytes() []byte {
	v4 := f.src.Addr().Is4()
	ttl := f.ttl
	if ttl == 0 {
		ttl = 64
	}
	udp := make([]byte, udpLen+len(f.payload))
	binary.BigEndian.PutUint16(udp[0:], f.src.Port())
	binary.BigEndian.PutUint16(udp[2:], f.dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[udpLen:], f.payload)
	if !f.noCsum {
		c := udpChecksum(f.src.Addr(), f.dst.Addr(), udp)
		if f.badCsum {
			c++
		}
		binary.BigEndian.PutUint16(udp[6:], c)
	}

	b := make([]byte, ethLen, 128+len(udp))
	copy(b[0:], f.mac[:])
	copy(b[6:], srcMAC[:])
	if v4 {
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		ip := make([]byte, ipv4Len+len(f.options))
		ver := f.version
		if ver == 0 {
			ver = 4
		}
		ip[0] = ver<<4 | uint8(len(ip)/4)
		ip[1] = f.tos
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(udp)))
		binary.BigEndian.PutUint16(ip[4:], f.id)
		binary.BigEndian.PutUint16(ip[6:], f.fragOff)
		ip[8] = ttl
		ip[9] = 17
		s, d := f.src.Addr().As4(), f.dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		copy(ip[20:], f.options)
		c := ^fold(sum(0, ip))
		if f.badIPSum {
			c++
		}
		binary.BigEndian.PutUint16(ip[10:], c)
		b = append(b, ip...)
	} else {
		binary.BigEndian.PutUint16(b[12:], 0x86dd)
		ip := make([]byte, ipv6Len)
		ver := f.version
		if ver == 0 {
			ver = 6
		}
		binary.BigEndian.PutUint32(ip[0:], uint32(ver)<<28|uint32(f.tos)<<20|f.flow&0xfffff)
		plen := len(udp)
		next := uint8(17)
		if f.hopByHop {
			plen += 8
			next = 0
		}
		binary.BigEndian.PutUint16(ip[4:], uint16(plen))
		ip[6] = next
		ip[7] = ttl
		s, d := f.src.Addr().As16(), f.dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		b = append(b, ip...)
		if f.hopByHop {
			// next header UDP, length 0 (8 bytes), PadN option of 4 bytes
			b = append(b, 17, 0, 1, 4, 0, 0, 0, 0)
		}
	}
	b = append(b, udp...)
	return append(b, f.trailer...)
}

// sum adds b to s as big-endian 16-bit words (RFC 1071), an odd last byte
// padded with zero.
func sum(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// udpChecksum is the UDP checksum of udp (its checksum field zero) between
// src and dst, with RFC 768's zero sent as all ones.
func udpChecksum(src, dst netip.Addr, udp []byte) uint16 {
	var s uint32
	s = sum(s, src.AsSlice())
	s = sum(s, dst.AsSlice())
	s += 17 + uint32(len(udp))
	c := ^fold(sum(s, udp))
	if c == 0 {
		c = 0xffff
	}
	return c
}

// checkFrame verifies, independently of how it was built, that b is a
// well-formed Ethernet + IP + UDP frame with correct lengths and
// checksums. A zero UDP checksum is accepted over IPv4 only.
func checkFrame(b []byte) error {
	if len(b) < ethLen {
		return fmt.Errorf("%d bytes: no Ethernet header", len(b))
	}
	var src, dst netip.Addr
	var udp []byte
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0800:
		ip := b[ethLen:]
		if len(ip) < ipv4Len || ip[0] != 0x45 {
			return fmt.Errorf("IPv4 header %x", ip[:min(len(ip), ipv4Len)])
		}
		if fold(sum(0, ip[:ipv4Len])) != 0xffff {
			return fmt.Errorf("IPv4 header checksum %#04x is wrong", binary.BigEndian.Uint16(ip[10:]))
		}
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		if tot != len(ip) {
			return fmt.Errorf("IPv4 total length %d, packet %d", tot, len(ip))
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		udp = ip[ipv4Len:]
	case 0x86dd:
		ip := b[ethLen:]
		if len(ip) < ipv6Len || ip[0]>>4 != 6 || ip[6] != 17 {
			return fmt.Errorf("IPv6 header %x", ip[:min(len(ip), ipv6Len)])
		}
		if pl := int(binary.BigEndian.Uint16(ip[4:])); pl != len(ip)-ipv6Len {
			return fmt.Errorf("IPv6 payload length %d, packet %d", pl, len(ip)-ipv6Len)
		}
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		udp = ip[ipv6Len:]
	default:
		return fmt.Errorf("ethertype %#04x", binary.BigEndian.Uint16(b[12:]))
	}
	if len(udp) < udpLen || int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		return fmt.Errorf("UDP length field disagrees with the packet (%d bytes)", len(udp))
	}
	c := binary.BigEndian.Uint16(udp[6:])
	if c == 0 {
		if src.Is4() {
			return nil
		}
		return fmt.Errorf("IPv6 UDP checksum zero")
	}
	s := sum(0, src.AsSlice())
	s = sum(s, dst.AsSlice())
	s += 17 + uint32(len(udp))
	if fold(sum(s, udp)) != 0xffff {
		return fmt.Errorf("UDP checksum %#04x is wrong", c)
	}
	return nil
}

// channelData is what pion's proto.ChannelData.Encode writes: the channel
// number, the data length, the data, and zeros up to a multiple of 4.
func channelData(ch uint16, data []byte) []byte {
	b := make([]byte, 4, 4+len(data)+3)
	binary.BigEndian.PutUint16(b[0:], ch)
	binary.BigEndian.PutUint16(b[2:], uint16(len(data)))
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// rawChannelData is a ChannelData message as a client may send it: header,
// data, and exactly pad bytes of (non-zero) padding.
func rawChannelData(ch uint16, length int, data []byte, pad int) []byte {
	b := make([]byte, 4, 4+len(data)+pad)
	binary.BigEndian.PutUint16(b[0:], ch)
	binary.BigEndian.PutUint16(b[2:], uint16(length))
	b = append(b, data...)
	for i := 0; i < pad; i++ {
		b = append(b, 0xa0+byte(i))
	}
	return b
}

// testData is n bytes of data that differ from packet to packet position.
func testData(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}
