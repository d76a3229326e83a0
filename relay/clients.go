package relay

import (
	"net"
	"net/netip"
	"sync"
)

// clientSet is the set of client transport addresses that hold an
// allocation on one UDP listener socket. ChannelData and indications are
// only meaningful from them, so anything else is dropped on the read loop
// before pion looks for an allocation, formats an error and logs it — a
// flood of ChannelData for unbound channels costs a map lookup per datagram.
//
// It counts rather than flags: pion may report an allocation's deletion
// after a new allocation on the same 5-tuple was created.
type clientSet struct {
	mu sync.RWMutex
	n  map[netip.AddrPort]int
}

func newClientSet() *clientSet { return &clientSet{n: map[netip.AddrPort]int{}} }

func udpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

func (c *clientSet) add(a net.Addr) {
	if ap, ok := udpAddrPort(a); ok {
		c.mu.Lock()
		c.n[ap]++
		c.mu.Unlock()
	}
}

func (c *clientSet) remove(a net.Addr) {
	if ap, ok := udpAddrPort(a); ok {
		c.mu.Lock()
		if c.n[ap] <= 1 {
			delete(c.n, ap)
		} else {
			c.n[ap]--
		}
		c.mu.Unlock()
	}
}

// has reports whether a holds an allocation; it allocates nothing.
func (c *clientSet) has(a net.Addr) bool {
	ap, ok := udpAddrPort(a)
	if !ok {
		return false
	}
	c.mu.RLock()
	_, ok = c.n[ap]
	c.mu.RUnlock()
	return ok
}
