package relay

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// bucket is a token bucket in bytes, refilled at rate bytes per second, with
// room for half a second of traffic (at least one full-size packet).
type bucket struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(bitsPerSecond int64) *bucket {
	if bitsPerSecond <= 0 {
		return nil
	}
	rate := float64(bitsPerSecond) / 8
	burst := max(rate/2, 2*maxMessageSize)
	return &bucket{rate: rate, burst: burst, tokens: burst, last: time.Now()}
}

// allow takes n bytes from the bucket if they are there.
func (b *bucket) allow(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// relayPacketConn wraps one UDP allocation's relay socket: it counts traffic
// in both directions as it flows, applies --max-bps per direction, and keeps
// clients off the node's own non-relay ports.
type relayPacketConn struct {
	net.PacketConn
	l       *listener
	port    int
	ports   *portSet  // the node's live relay ports of this socket's family
	pool    *portPool // where port goes back on Close; nil in packet-path tests
	relay   net.Addr  // the relayed address, as advertised
	permits *permits  // nil: every peer (tests of the packet path only)
	in, out *bucket
	closed  atomic.Bool
}

func (l *listener) wrapRelayPacketConn(pc net.PacketConn, port int) *relayPacketConn {
	return &relayPacketConn{PacketConn: pc, l: l, port: port, in: newBucket(l.srv.cfg.MaxBPS), out: newBucket(l.srv.cfg.MaxBPS)}
}

// Close frees the port in the node's relay-port set and gives it back to
// the pool, after the socket is closed so the next bind of it succeeds.
func (c *relayPacketConn) Close() error {
	err := c.PacketConn.Close()
	if !c.closed.Swap(true) {
		if c.ports != nil {
			c.ports.remove(c.port)
		}
		if c.pool != nil {
			c.pool.release(c.port)
		}
		if c.permits != nil {
			c.l.srv.unregisterPermits(c.relay, c.permits)
		}
	}
	return err
}

// ReadFrom carries peer -> client traffic.
func (c *relayPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, addr, err
		}
		if c.permits != nil && !c.permitted(addr) {
			c.l.dropNoPerm.Inc() // pion would drop it too, after the count
			continue
		}
		if c.in != nil && !c.in.allow(n) {
			c.l.dropRate.Inc()
			continue
		}
		c.l.p2cPackets.Inc()
		c.l.p2cBytes.Add(float64(n))
		if c.permits != nil {
			c.permits.stats.toClient(n)
		}
		if c.l.srv.fleet.Load() != nil && c.fleetAddr(addr) {
			c.l.crossIn.Add(float64(n))
		}
		return n, addr, nil
	}
}

func (c *relayPacketConn) permitted(addr net.Addr) bool {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return false
	}
	a, ok := netip.AddrFromSlice(ua.IP)
	return ok && c.permits.has(a.Unmap())
}

// WriteTo carries client -> peer traffic. Dropped packets report success so
// that pion does not treat a policy drop as a socket failure.
func (c *relayPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	// RFC 8656 §12: data to a peer needs a live permission for it, on a
	// channel as in a Send indication (pion checks the latter only); the
	// kernel path holds the same rule.
	if c.permits != nil && !c.permitted(addr) {
		c.l.dropNoPerm.Inc()
		return len(b), nil
	}
	if ua, ok := addr.(*net.UDPAddr); ok {
		switch c.l.srv.selfPortVerdict(ua.IP, ua.Port, false) {
		case portDenied:
			c.l.dropSelf.Inc()
			return len(b), nil
		case portGone:
			c.l.dropGone.Inc()
			return len(b), nil
		}
	}
	if c.out != nil && !c.out.allow(len(b)) {
		c.l.dropRate.Inc()
		return len(b), nil
	}
	n, err := c.PacketConn.WriteTo(b, addr)
	if err == nil {
		c.l.c2pPackets.Inc()
		c.l.c2pBytes.Add(float64(n))
		if c.permits != nil {
			c.permits.stats.toPeer(n)
		}
		if c.l.srv.fleet.Load() != nil && c.fleetAddr(addr) {
			c.l.crossOut.Add(float64(n))
		}
	}
	return n, err
}

// fleetAddr reports whether addr is on another fleet member's relay address.
func (c *relayPacketConn) fleetAddr(addr net.Addr) bool {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return false
	}
	a, ok := netip.AddrFromSlice(ua.IP)
	if !ok || !c.l.srv.fleetPeer(a) {
		return false
	}
	// A member sharing this node's relay IP: this node's own live ports
	// are not cross-host.
	if x, self := c.l.srv.selfLookup(a); self && x.relay && c.l.srv.ports.live(false, x.addr.Is6(), ua.Port) {
		return false
	}
	return true
}

// relayListener wraps an RFC 6062 TCP allocation's listening socket.
type relayListener struct {
	net.Listener
	l       *listener
	port    int
	ports   *portSet
	pool    *portPool
	relay   net.Addr
	permits *permits // for the permissions gauge only
	closed  atomic.Bool
}

// Close frees the port in the node's relay-port set and gives it back to
// the pool.
func (rl *relayListener) Close() error {
	// Close first: with SO_REUSEPORT a new allocation could otherwise bind
	// the port while this listener still accepts on it.
	err := rl.Listener.Close()
	if !rl.closed.Swap(true) {
		rl.ports.remove(rl.port)
		rl.pool.release(rl.port)
		rl.l.srv.unregisterPermits(rl.relay, rl.permits)
	}
	return err
}

// Accept retries temporary errors (EMFILE and the like): pion deletes the
// whole allocation on any Accept error.
func (rl *relayListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		c, err := rl.Listener.Accept()
		if err == nil {
			return rl.l.wrapRelayConn(c, rl.permits), nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, time.Second)
	}
}

// relayConn wraps one RFC 6062 peer data connection and counts its bytes,
// on the node's counters and its allocation's (p; nil when unknown).
type relayConn struct {
	net.Conn
	l *listener
	p *permits
}

func (l *listener) wrapRelayConn(c net.Conn, p *permits) net.Conn {
	return &relayConn{Conn: c, l: l, p: p}
}

func (c *relayConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.l.p2cPackets.Inc()
		c.l.p2cBytes.Add(float64(n))
		if c.p != nil {
			c.p.stats.toClient(n)
		}
	}
	return n, err
}

func (c *relayConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.l.c2pPackets.Inc()
		c.l.c2pBytes.Add(float64(n))
		if c.p != nil {
			c.p.stats.toPeer(n)
		}
	}
	return n, err
}
