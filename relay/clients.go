package relay

import (
	"encoding/binary"
	"hash/maphash"
	"net"
	"sync/atomic"
)

// clientSet remembers which client transport addresses hold an allocation
// on one UDP listener socket. ChannelData and indications are only
// meaningful from them, so anything else is dropped on the read loop before
// pion looks for an allocation, formats an error and logs it: a flood of
// ChannelData for unbound channels costs a hash and an atomic load per
// datagram.
//
// It is a counting filter: a fixed table of counters indexed by a keyed
// hash of the address, incremented when an allocation is created and
// decremented when it is deleted. Reads take no lock. Counts make it exact
// for the addresses that do hold an allocation (no false "no"), and make it
// right when pion reports a deletion after a new allocation on the same
// 5-tuple was created. Two addresses may share a counter; a datagram from
// one without an allocation then goes on to pion, which drops it as it did
// before — with 10,000 allocations on one socket, about one address in six.
type clientSet struct {
	seed   maphash.Seed
	counts [clientSetSize]atomic.Int32
}

// clientSetSize is the number of counters per UDP listener socket (256 KiB).
const clientSetSize = 1 << 16

func newClientSet() *clientSet { return &clientSet{seed: maphash.MakeSeed()} }

// slot returns a's counter, or nil for an address that is not UDP.
func (c *clientSet) slot(a net.Addr) *atomic.Int32 {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return nil
	}
	ap := ua.AddrPort()
	var k [18]byte
	ip := ap.Addr().Unmap().As16()
	copy(k[:16], ip[:])
	binary.BigEndian.PutUint16(k[16:], ap.Port())
	return &c.counts[maphash.Bytes(c.seed, k[:])&(clientSetSize-1)]
}

func (c *clientSet) add(a net.Addr) {
	if s := c.slot(a); s != nil {
		s.Add(1)
	}
}

func (c *clientSet) remove(a net.Addr) {
	if s := c.slot(a); s != nil {
		s.Add(-1)
	}
}

// has reports whether a may hold an allocation; it allocates nothing.
func (c *clientSet) has(a net.Addr) bool {
	s := c.slot(a)
	return s != nil && s.Load() > 0
}
