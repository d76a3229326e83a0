package relay

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/supernode/supernode/metrics"
)

// clientPacketConn wraps a UDP listener socket: every datagram from a client
// is checked and counted before pion sees it, and every response pion sends
// is counted by method and result.
type clientPacketConn struct {
	net.PacketConn
	l *listener
	g *udpGroup // the SO_REUSEPORT sockets sharing this socket's address

	// Datagrams another socket of the group received for a client whose
	// allocation lives here (see udpGroup).
	injMu sync.Mutex
	inj   []injected
	nInj  atomic.Int32

	rm reqMemo

	// readMu serialises ReadFrom (pion calls it from one goroutine) and
	// guards the read state below, set up by the first ReadFrom.
	readMu sync.Mutex
	rdInit bool
	rd     *batchReader // nil: not a *net.UDPConn, read with PacketConn.ReadFrom
	addrs  *addrCache
	closed atomic.Bool // Close was called: buffered datagrams are dropped
}

func (c *clientPacketConn) memo() *reqMemo { return &c.rm }

type injected struct {
	b    []byte
	addr net.Addr
}

// ReadFrom returns the next datagram that passes inspection: one handed
// over by another socket of the group, or one read from the socket, which
// is read a batch at a time (see batchReader). Returned addresses may be
// shared between datagrams (see addrCache).
func (c *clientPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if !c.rdInit {
		c.rdInit = true
		if c.rd = newBatchReader(c.PacketConn); c.rd != nil {
			c.addrs = newAddrCache()
		}
	}
	for {
		if c.nInj.Load() > 0 {
			if n, addr, ok := c.popInjected(b); ok {
				if msg, pass := c.l.inspect(b[:n], addr, c); pass {
					if msg != nil {
						n = copy(b, msg)
					}
					return n, addr, nil
				}
				continue
			}
		}
		n, addr, err := c.readSocket(b)
		if err != nil {
			// Pion sets no deadline on listener sockets: an expired deadline is
			// always a wake-up from inject, even when a later inject has
			// already been drained.
			if errors.Is(err, os.ErrDeadlineExceeded) {
				_ = c.PacketConn.SetReadDeadline(time.Time{})
				continue
			}
			return n, addr, err
		}
		if n >= len(b) || n > maxMessageSize {
			c.l.dropOversized.Inc()
			continue
		}
		if c.g != nil && c.g.steer(c, b[:n], addr) {
			continue
		}
		if msg, pass := c.l.inspect(b[:n], addr, c); pass {
			if msg != nil {
				n = copy(b, msg)
			}
			return n, addr, nil
		}
	}
}

// readSocket reads the next datagram from the socket into b. Its length
// may exceed len(b) when it did not fit.
func (c *clientPacketConn) readSocket(b []byte) (int, net.Addr, error) {
	if c.rd == nil {
		return c.PacketConn.ReadFrom(b)
	}
	if c.closed.Load() {
		c.rd.drop() // and the read below reports the socket closed
	}
	n, ap, err := c.rd.read(b)
	if err != nil {
		return 0, nil, err
	}
	return n, c.addrs.get(ap), nil
}

// Close closes the socket. Datagrams still buffered in a batch are
// dropped: the next ReadFrom reports the socket closed.
func (c *clientPacketConn) Close() error {
	c.closed.Store(true)
	return c.PacketConn.Close()
}

func (c *clientPacketConn) popInjected(b []byte) (int, net.Addr, bool) {
	c.injMu.Lock()
	defer c.injMu.Unlock()
	if len(c.inj) == 0 {
		return 0, nil, false
	}
	p := c.inj[0]
	c.inj[0] = injected{}
	c.inj = c.inj[1:]
	c.nInj.Add(-1)
	return copy(b, p.b), p.addr, true
}

// maxInjected bounds the queue of datagrams handed over from other sockets.
const maxInjected = 1024

// inject hands this socket a datagram another socket received, and wakes
// its read loop by expiring the read deadline.
func (c *clientPacketConn) inject(b []byte, addr net.Addr) {
	c.injMu.Lock()
	if len(c.inj) >= maxInjected {
		c.injMu.Unlock()
		c.l.srv.m.PacketsDropped.For(metrics.DropOverflow).Inc()
		return
	}
	c.inj = append(c.inj, injected{b: append([]byte(nil), b...), addr: addr})
	c.nInj.Add(1)
	c.injMu.Unlock()
	_ = c.PacketConn.SetReadDeadline(time.Unix(1, 0))
}

func (c *clientPacketConn) reply(b []byte, to net.Addr) error {
	c.l.observeResponse(b, readOutHeader(b))
	_, err := c.PacketConn.WriteTo(b, to)
	return err
}

func (c *clientPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	orig := len(b)
	h := readOutHeader(b)
	b = c.l.finishResponse(b, h, addr, &c.rm)
	c.l.observeResponse(b, h)
	if c.g != nil {
		c.g.noteReservation(c, b, h)
	}
	n, err := c.PacketConn.WriteTo(b, addr)
	if err == nil {
		n = orig // pion wrote its own message, whatever it became
	}
	return n, err
}
