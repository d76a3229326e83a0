package relay

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"net"
	"net/netip"
)

// Tuning of the UDP listener's read path (clientPacketConn.ReadFrom).
const (
	// readBatch is how many datagrams one receive call takes from a UDP
	// listener socket (recvmmsg on Linux; one elsewhere). Under a flood a
	// batch is usually full, and the system call's cost is shared by all of
	// it; an idle socket returns whatever one call finds.
	readBatch = 64
	// readBufSize is the size in bytes of each buffer of a batch: one more
	// than the largest message the node accepts, so that a datagram too
	// big for it shows as oversized instead of silently truncated.
	readBufSize = maxMessageSize + 1
	// addrCacheBits sets how many source addresses a listener socket keeps
	// ready as net.Addr values: 2^12 slots of 40 bytes, 160 KiB.
	addrCacheBits  = 12
	addrCacheSlots = 1 << addrCacheBits
)

// addrCache hands out one *net.UDPAddr per recent source, so that the
// datagrams of an established call share one address value instead of
// allocating one each (pion needs a net.Addr per datagram). It is
// direct-mapped: a source whose slot another source took gets a new value,
// as every datagram did before. Values handed out are shared and must not
// be modified; neither pion nor this package does.
//
// Not safe for concurrent use: its socket's ReadFrom holds readMu.
type addrCache struct {
	seed  uint64
	slots [addrCacheSlots]addrSlot
}

type addrSlot struct {
	ap   netip.AddrPort
	addr *net.UDPAddr
}

func newAddrCache() *addrCache {
	// The seed keeps a sender from choosing sources that evict a given
	// client; the worst that does is an allocation per datagram.
	return &addrCache{seed: rand.Uint64()}
}

// get returns a *net.UDPAddr for ap, in the form net.UDPConn.ReadFrom gives
// (4-byte IP from an IPv4 socket, 16-byte from an IPv6 one).
func (c *addrCache) get(ap netip.AddrPort) *net.UDPAddr {
	a := ap.Addr().As16()
	h := binary.LittleEndian.Uint64(a[:8]) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(a[8:]), 31) ^
		uint64(ap.Port())<<48 ^ c.seed
	h *= 0x9E3779B97F4A7C15 // Fibonacci hashing: the top bits pick the slot
	s := &c.slots[h>>(64-addrCacheBits)]
	if s.addr == nil || s.ap != ap {
		s.ap, s.addr = ap, net.UDPAddrFromAddrPort(ap)
	}
	return s.addr
}
