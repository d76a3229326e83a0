package relay

import (
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// connLimit bounds TCP/TLS/DTLS client connections that hold no allocation
// yet ("pending"): per source IP, so one host cannot exhaust the node's
// file descriptors and memory, and node-wide, so many hosts together cannot
// either. A connection gives its slot back as soon as it holds an
// allocation (or is bound as an RFC 6062 data connection): the caps are on
// what unauthenticated clients can hold, not on how many calls one NAT
// carries.
type connLimit struct {
	maxPerIP   int // 0: unlimited
	maxPending int // 0: unlimited
	gauge      prometheus.Gauge

	mu      sync.Mutex
	byIP    map[netip.Addr]int
	pending int
}

func newConnLimit(maxPerIP, maxPending int, gauge prometheus.Gauge) connLimit {
	return connLimit{maxPerIP: maxPerIP, maxPending: maxPending, gauge: gauge, byIP: map[netip.Addr]int{}}
}

// Why acquire refused a connection: its close reason.
const (
	refusedPerIP   = "limit"
	refusedPending = "pending_limit"
)

// acquire takes a pending slot for a connection from addr. On success the
// caller holds one slot until it calls release with the returned IP (the
// zero Addr for an address without one, which only the node-wide cap
// counts). On failure refused is the close reason.
func (c *connLimit) acquire(addr net.Addr) (ip netip.Addr, refused string) {
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		ip = a.AddrPort().Addr().Unmap()
	}
	if ip.Is6() {
		// A host holds a whole /64: count it as one source, as the
		// per-source budget does.
		ip = netip.PrefixFrom(ip.WithZone(""), 64).Masked().Addr()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ip.IsValid() && c.maxPerIP > 0 && c.byIP[ip] >= c.maxPerIP {
		return netip.Addr{}, refusedPerIP
	}
	if c.maxPending > 0 && c.pending >= c.maxPending {
		return netip.Addr{}, refusedPending
	}
	if ip.IsValid() {
		c.byIP[ip]++
	}
	c.pending++
	c.gauge.Inc()
	return ip, ""
}

// release gives back one slot taken by acquire. Each successful acquire
// must be matched by exactly one release.
func (c *connLimit) release(ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ip.IsValid() {
		if c.byIP[ip] <= 1 {
			delete(c.byIP, ip)
		} else {
			c.byIP[ip]--
		}
	}
	c.pending--
	c.gauge.Dec()
}

// counts returns the slots held by ip and node-wide (for tests).
func (c *connLimit) counts(ip netip.Addr) (perIP, pending int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byIP[ip], c.pending
}
