package relay

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// relayPacketConn wraps one UDP allocation's relay socket: per datagram it
// checks the peer (one judgePeer), spends --max-bps tokens and counts the
// traffic in both directions as it flows, on the node's counters and the
// allocation's record. It reads and writes through the net.UDPConn calls
// that allocate nothing.
type relayPacketConn struct {
	net.PacketConn
	uc     *net.UDPConn // PacketConn when it is one (always, outside tests)
	l      *listener
	port   int
	ports  *portSet  // the node's live relay ports of this socket's family
	pool   *portPool // where port goes back on Close; nil in packet-path tests
	relay  net.Addr  // the relayed address, as advertised
	rec    *record
	peers  peerAddrs // read by ReadFrom only (pion's one reader)
	closed atomic.Bool
}

func (l *listener) wrapRelayPacketConn(pc net.PacketConn, port int, rec *record) *relayPacketConn {
	uc, _ := pc.(*net.UDPConn)
	return &relayPacketConn{PacketConn: pc, uc: uc, l: l, port: port, rec: rec}
}

// Close frees the port in the node's relay-port set and gives it back to
// the pool, after the socket is closed so the next bind of it succeeds.
func (c *relayPacketConn) Close() error {
	if c.closed.Swap(true) {
		// Closed already: Server.Close closes every relay socket itself,
		// and pion closes an allocation's again when it deletes it.
		return nil
	}
	err := c.PacketConn.Close()
	if c.ports != nil {
		c.ports.remove(c.port)
	}
	if c.pool != nil {
		c.pool.release(c.port)
	}
	c.l.srv.unregisterRecord(c.relay, c.rec)
	return err
}

// ReadFrom carries peer -> client traffic: it returns the next datagram
// from a peer with a permission, within the limit. The address returned
// may be shared with earlier datagrams of the same peer (see peerAddrs).
func (c *relayPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, ap, err := c.read(b)
		if err != nil {
			return n, nil, err
		}
		// Pion drops a datagram from a peer without a permission too, but
		// only after it was counted and its tokens spent.
		if !c.rec.has(ap.Addr().Unmap()) {
			c.l.dropNoPerm.Inc()
			continue
		}
		if !c.rec.toClient.allow(n) {
			c.l.dropRate.Inc()
			continue
		}
		c.l.p2cPackets.Inc()
		c.l.p2cBytes.Add(float64(n))
		c.rec.stats.toClient(n)
		if c.l.srv.fleet.Load() != nil && c.l.srv.judgePeer(ap, false).crossHost {
			c.l.crossIn.Add(float64(n))
		}
		return n, c.peers.get(ap), nil
	}
}

// read is ReadFrom of the socket without the address allocation.
func (c *relayPacketConn) read(b []byte) (int, netip.AddrPort, error) {
	if c.uc != nil {
		return c.uc.ReadFromUDPAddrPort(b)
	}
	n, addr, err := c.PacketConn.ReadFrom(b)
	if err != nil {
		return n, netip.AddrPort{}, err
	}
	ap, _ := addrPortOf(addr)
	return n, ap, nil
}

// WriteTo carries client -> peer traffic. Dropped packets report success so
// that pion does not treat a policy drop as a socket failure.
func (c *relayPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		c.l.dropNoPerm.Inc()
		return len(b), nil
	}
	ap := ua.AddrPort()
	// RFC 8656 §12: data to a peer needs a live permission for it, on a
	// channel as in a Send indication (pion checks the latter only); the
	// kernel path holds the same rule.
	if !c.rec.has(ap.Addr().Unmap()) {
		c.l.dropNoPerm.Inc()
		return len(b), nil
	}
	d := c.l.srv.judgePeer(ap, false)
	switch d.port {
	case portDenied:
		c.l.dropSelf.Inc()
		return len(b), nil
	case portGone:
		c.l.dropGone.Inc()
		return len(b), nil
	}
	if !c.rec.toPeer.allow(len(b)) {
		c.l.dropRate.Inc()
		return len(b), nil
	}
	n, err := c.PacketConn.WriteTo(b, ua)
	if err == nil {
		c.l.c2pPackets.Inc()
		c.l.c2pBytes.Add(float64(n))
		c.rec.stats.toPeer(n)
		if d.crossHost {
			c.l.crossOut.Add(float64(n))
		}
	}
	return n, err
}

// peerAddrs hands out one *net.UDPAddr per recent peer of a relay socket,
// so that a call's datagrams from its peer share one address value instead
// of allocating one each (pion needs a net.Addr per datagram). An
// allocation talks to a handful of peers (a candidate or two per remote
// ICE agent), so a few slots replaced in turn do. Values handed out are
// shared and must not be modified; pion only reads them.
type peerAddrs struct {
	aps   [peerAddrSlots]netip.AddrPort
	addrs [peerAddrSlots]*net.UDPAddr
	next  int
}

// peerAddrSlots is how many peer addresses a relay socket keeps (40 bytes
// each).
const peerAddrSlots = 4

func (p *peerAddrs) get(ap netip.AddrPort) *net.UDPAddr {
	for i := range p.aps {
		if p.addrs[i] != nil && p.aps[i] == ap {
			return p.addrs[i]
		}
	}
	i := p.next
	p.next = (p.next + 1) % peerAddrSlots
	p.aps[i], p.addrs[i] = ap, net.UDPAddrFromAddrPort(ap)
	return p.addrs[i]
}

// relayListener wraps an RFC 6062 TCP allocation's listening socket.
type relayListener struct {
	net.Listener
	l      *listener
	port   int
	ports  *portSet
	pool   *portPool
	relay  net.Addr
	rec    *record // the allocation's record: permissions, RFC 6062 counters, Kill
	closed atomic.Bool
}

// Close frees the port in the node's relay-port set and gives it back to
// the pool.
func (rl *relayListener) Close() error {
	if rl.closed.Swap(true) {
		return nil // closed already (see relayPacketConn.Close)
	}
	// Close first: with SO_REUSEPORT a new allocation could otherwise bind
	// the port while this listener still accepts on it.
	err := rl.Listener.Close()
	rl.ports.remove(rl.port)
	rl.pool.release(rl.port)
	rl.l.srv.unregisterRecord(rl.relay, rl.rec)
	return err
}

// Accept retries temporary errors (EMFILE and the like): pion deletes the
// whole allocation on any Accept error.
func (rl *relayListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		c, err := rl.Listener.Accept()
		if err == nil {
			return rl.l.wrapRelayConn(c, rl.rec), nil
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
	p *record
}

func (l *listener) wrapRelayConn(c net.Conn, p *record) net.Conn {
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
