package relay

import (
	"net"
	"net/netip"
	"sync"
)

// connLimit bounds concurrent TCP/TLS/DTLS client connections per source IP,
// so one host cannot exhaust the node's file descriptors and memory.
type connLimit struct {
	max  int // 0: unlimited
	mu   sync.Mutex
	byIP map[netip.Addr]int
}

// acquire takes a slot for the connection from addr.
func (c *connLimit) acquire(addr net.Addr) (netip.Addr, bool) {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		ip = a.AddrPort().Addr().Unmap()
	default:
		return ip, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max > 0 && c.byIP[ip] >= c.max {
		return netip.Addr{}, false
	}
	c.byIP[ip]++
	return ip, true
}

func (c *connLimit) release(ip netip.Addr) {
	if !ip.IsValid() {
		return
	}
	c.mu.Lock()
	if c.byIP[ip] <= 1 {
		delete(c.byIP, ip)
	} else {
		c.byIP[ip]--
	}
	c.mu.Unlock()
}
