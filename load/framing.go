package load

import (
	"encoding/binary"
	"net/netip"
)

// TURN data-path framing, written here rather than through pion's relayed
// conn so that the loader spends as little CPU per packet as possible:
// pion's WriteTo looks up permissions and bindings and allocates per packet,
// and its read path copies every payload twice. Control traffic (Allocate,
// Refresh, CreatePermission, ChannelBind) still goes through pion/turn.

const (
	stunHeaderLen    = 20
	stunMagicCookie  = 0x2112a442
	typeSendInd      = 0x0016 // Send indication (RFC 8656 section 11.1)
	typeDataInd      = 0x0017 // Data indication (RFC 8656 section 11.4)
	attrXorPeerAddr  = 0x0012
	attrData         = 0x0013
	chanDataHeader   = 4
	channelMinNumber = 0x4000
	channelMaxNumber = 0x4fff // RFC 8656 section 12
)

func pad4(n int) int { return (n + 3) &^ 3 }

// channelDataLen is the framed size of a payload of n bytes; stream
// transports need the padding (RFC 8656 section 12.5), UDP does not.
func channelDataLen(n int, stream bool) int {
	if stream {
		return chanDataHeader + pad4(n)
	}
	return chanDataHeader + n
}

// putChannelHeader writes the ChannelData header for a payload of n bytes
// into b[0:4] and zeroes any stream padding after the payload.
func putChannelHeader(b []byte, channel uint16, n int, stream bool) {
	binary.BigEndian.PutUint16(b[0:2], channel)
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	if stream {
		clear(b[chanDataHeader+n : chanDataHeader+pad4(n)])
	}
}

// sendIndicationLen is the size of a Send indication carrying n bytes to peer.
func sendIndicationLen(n int, peer netip.AddrPort) int {
	return stunHeaderLen + 4 + xorAddrLen(peer) + 4 + pad4(n)
}

func xorAddrLen(peer netip.AddrPort) int {
	if peer.Addr().Unmap().Is4() {
		return 8
	}
	return 20
}

// payloadOffsetSend is where the payload starts inside a Send indication.
func payloadOffsetSend(peer netip.AddrPort) int {
	return stunHeaderLen + 4 + xorAddrLen(peer) + 4
}

// putSendIndication writes a Send indication around the n payload bytes that
// the caller has already placed at payloadOffsetSend(peer). txid must be 12 bytes.
func putSendIndication(b []byte, txid []byte, peer netip.AddrPort, n int) int {
	total := sendIndicationLen(n, peer)
	binary.BigEndian.PutUint16(b[0:2], typeSendInd)
	binary.BigEndian.PutUint16(b[2:4], uint16(total-stunHeaderLen))
	binary.BigEndian.PutUint32(b[4:8], stunMagicCookie)
	copy(b[8:20], txid)
	o := stunHeaderLen
	alen := xorAddrLen(peer)
	binary.BigEndian.PutUint16(b[o:], attrXorPeerAddr)
	binary.BigEndian.PutUint16(b[o+2:], uint16(alen))
	b[o+4] = 0
	binary.BigEndian.PutUint16(b[o+6:], peer.Port()^(stunMagicCookie>>16))
	ip := peer.Addr().Unmap()
	if ip.Is4() {
		b[o+5] = 1
		a := ip.As4()
		binary.BigEndian.PutUint32(b[o+8:], binary.BigEndian.Uint32(a[:])^stunMagicCookie)
	} else {
		b[o+5] = 2
		a := ip.As16()
		var key [16]byte
		binary.BigEndian.PutUint32(key[0:4], stunMagicCookie)
		copy(key[4:], txid)
		for i := range a {
			b[o+8+i] = a[i] ^ key[i]
		}
	}
	o += 4 + alen
	binary.BigEndian.PutUint16(b[o:], attrData)
	binary.BigEndian.PutUint16(b[o+2:], uint16(n))
	o += 4
	clear(b[o+n : o+pad4(n)])
	return total
}

// frameKind tells what an inbound packet from the server is.
type frameKind int

const (
	frameOther  frameKind = iota // not TURN data: hand to pion (responses) or drop
	frameData                    // ChannelData or Data indication; payload returned
	frameBroken                  // claims to be TURN data but its lengths do not add up
)

// inboundData finds the application payload in a ChannelData message or a
// Data indication without allocating. Everything else is frameOther.
func inboundData(b []byte) ([]byte, frameKind) {
	if len(b) >= chanDataHeader && b[0]&0xc0 == 0x40 {
		ch := binary.BigEndian.Uint16(b[0:2])
		n := int(binary.BigEndian.Uint16(b[2:4]))
		if ch < channelMinNumber || ch > channelMaxNumber || chanDataHeader+n > len(b) {
			return nil, frameBroken
		}
		return b[chanDataHeader : chanDataHeader+n], frameData
	}
	if len(b) < stunHeaderLen || binary.BigEndian.Uint16(b[0:2]) != typeDataInd ||
		binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return nil, frameOther
	}
	end := stunHeaderLen + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) {
		return nil, frameBroken
	}
	for o := stunHeaderLen; o+4 <= end; {
		t := binary.BigEndian.Uint16(b[o:])
		n := int(binary.BigEndian.Uint16(b[o+2:]))
		if o+4+n > end {
			return nil, frameBroken
		}
		if t == attrData {
			return b[o+4 : o+4+n], frameData
		}
		o += 4 + pad4(n)
	}
	return nil, frameBroken
}
