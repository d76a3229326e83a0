package relay

import (
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/supernode/supernode/metrics"
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
	byIP    map[[16]byte]int // by sourceKey: an IPv4 address or an IPv6 /64
	pending int
}

func newConnLimit(maxPerIP, maxPending int, gauge prometheus.Gauge) connLimit {
	return connLimit{maxPerIP: maxPerIP, maxPending: maxPending, gauge: gauge, byIP: map[[16]byte]int{}}
}

// acquire takes a pending slot for a connection from addr. The per-IP cap
// counts sources as the per-source budget does (sourceKey): an IPv6 host
// holds a whole /64. On success the caller holds one slot until it calls
// release with the returned IP (the zero Addr for an address without one,
// which only the node-wide cap counts). On failure refused is the close
// reason: metrics.CloseLimit for the per-IP cap, metrics.ClosePendingLimit
// for the node-wide one.
func (c *connLimit) acquire(addr net.Addr) (ip netip.Addr, refused metrics.CloseReason) {
	ip = sourceIP(addr)
	k := sourceKey(ip)
	c.mu.Lock()
	defer c.mu.Unlock()
	if ip.IsValid() && c.maxPerIP > 0 && c.byIP[k] >= c.maxPerIP {
		return netip.Addr{}, metrics.CloseLimit
	}
	if c.maxPending > 0 && c.pending >= c.maxPending {
		return netip.Addr{}, metrics.ClosePendingLimit
	}
	if ip.IsValid() {
		c.byIP[k]++
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
		k := sourceKey(ip)
		if c.byIP[k] <= 1 {
			delete(c.byIP, k)
		} else {
			c.byIP[k]--
		}
	}
	c.pending--
	c.gauge.Dec()
}

// counts returns the slots held by ip and node-wide (for tests).
func (c *connLimit) counts(ip netip.Addr) (perIP, pending int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byIP[sourceKey(ip)], c.pending
}
