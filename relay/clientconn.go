package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/dtls/v3"

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
}

type injected struct {
	b    []byte
	addr net.Addr
}

func (c *clientPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		if c.nInj.Load() > 0 {
			if n, addr, ok := c.popInjected(b); ok {
				if c.l.inspect(b[:n], addr, c) {
					return n, addr, nil
				}
				continue
			}
		}
		n, addr, err := c.PacketConn.ReadFrom(b)
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
		if c.l.inspect(b[:n], addr, c) {
			return n, addr, nil
		}
	}
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
		c.l.srv.m.PacketsDropped.WithLabelValues(metrics.DropOverflow).Inc()
		return
	}
	c.inj = append(c.inj, injected{b: append([]byte(nil), b...), addr: addr})
	c.nInj.Add(1)
	c.injMu.Unlock()
	_ = c.PacketConn.SetReadDeadline(time.Unix(1, 0))
}

func (c *clientPacketConn) reply(b []byte, to net.Addr) error {
	c.l.observeResponse(b)
	_, err := c.PacketConn.WriteTo(b, to)
	return err
}

func (c *clientPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.l.observeResponse(b)
	if c.g != nil {
		c.g.noteReservation(c, b)
	}
	return c.PacketConn.WriteTo(b, addr)
}

// clientListener wraps a TCP, TLS or DTLS listener. Pion stops serving a
// listener on the first Accept error, so temporary errors (EMFILE, a failed
// handshake) are retried here and only a closed listener is reported.
type clientListener struct {
	net.Listener
	l *listener
}

func (cl *clientListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		c, err := cl.Listener.Accept()
		if err == nil {
			ip, ok := cl.l.srv.conns.acquire(c.RemoteAddr())
			if !ok {
				cl.l.srv.m.ConnectionsClosed.WithLabelValues(cl.l.transport, "limit").Inc()
				_ = c.Close()
				continue
			}
			sc := newClientStreamConn(c, cl.l)
			sc.ip = ip
			return sc, nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		// A connection flood can make every Accept fail (EMFILE).
		if cl.l.srv.logs.allow(cl.l.srv.log, "", slog.LevelDebug, "accept failed, retrying") {
			cl.l.srv.log.Debug("accept failed, retrying", "transport", cl.l.transport, "err", err)
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, time.Second)
	}
}

// clientStreamConn wraps one TCP/TLS/DTLS client connection. It cuts the
// byte stream into STUN messages and ChannelData frames itself so that each
// one can be checked like a UDP datagram, enforces the first-message and
// idle timeouts, and bounds writes to a client that stops reading. After an
// RFC 6062 ConnectionBind succeeds the connection carries raw peer data and
// is passed through untouched.
type clientStreamConn struct {
	net.Conn
	l *listener
	// readMu serialises Read: after an RFC 6062 data connection ends, pion's
	// read loop reads again while its copy goroutine may still be returning
	// from a Read of its own.
	readMu      sync.Mutex
	firstBy     time.Time // deadline for the first complete message
	gotFirst    bool
	passthrough atomic.Bool
	in          []byte // bytes read but not yet cut into frames
	out         []byte // frames ready to hand to pion
	scratch     []byte
	closeReason string
	handshaken  bool
	allocated   atomic.Bool // an Allocate succeeded on this connection
	ip          netip.Addr  // counted in Server.conns until Close
	closeOnce   sync.Once
}

// Close closes the connection and frees its slot in the per-IP limit.
func (c *clientStreamConn) Close() error {
	c.closeOnce.Do(func() { c.l.srv.conns.release(c.ip) })
	return c.Conn.Close()
}

// handshake completes a DTLS handshake within the first-message timeout.
// A DTLS conn ignores read deadlines while it handshakes, so without this a
// client that sends one ClientHello and goes quiet would hold a connection
// and its goroutines forever. (TLS honours the read deadline set by Read.)
func (c *clientStreamConn) handshake() error {
	dc, ok := c.Conn.(*dtls.Conn)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithDeadline(context.Background(), c.firstBy)
	defer cancel()
	if err := dc.HandshakeContext(ctx); err != nil {
		if ctx.Err() != nil {
			c.closeReason = "first_message_timeout"
		} else {
			c.closeReason = "malformed"
		}
		c.countClose()
		_ = c.Conn.Close()
		return err
	}
	return nil
}

func newClientStreamConn(c net.Conn, l *listener) *clientStreamConn {
	return &clientStreamConn{
		Conn:    c,
		l:       l,
		firstBy: time.Now().Add(l.srv.cfg.FirstMessageTimeout),
		scratch: make([]byte, 4096),
	}
}

// preAllocationIdle is the idle timeout of a client connection that has no
// allocation yet.
const preAllocationIdle = 30 * time.Second

var errFrame = errors.New("relay: malformed or oversized frame on stream")

// frameLen returns the length of the frame at the start of b, 0 if more
// bytes are needed, or an error for a frame that can never be valid.
func frameLen(b []byte) (int, error) {
	if len(b) < chanHeaderSize {
		return 0, nil
	}
	var n int
	switch b[0] >> 6 {
	case 0:
		n = stunHeaderSize + int(binary.BigEndian.Uint16(b[2:4]))
	case 1:
		// Over TCP, ChannelData is padded to a multiple of 4 (RFC 8656 §12.5).
		n = chanHeaderSize + (int(binary.BigEndian.Uint16(b[2:4]))+3)&^3
	default:
		return 0, errFrame
	}
	if n > maxMessageSize {
		return 0, errFrame
	}
	if len(b) < n {
		return 0, nil
	}
	return n, nil
}

func (c *clientStreamConn) Read(p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if !c.handshaken {
		c.handshaken = true
		if err := c.handshake(); err != nil {
			return 0, err
		}
	}
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.passthrough.Load() {
			if len(c.in) > 0 {
				n := copy(p, c.in)
				c.in = c.in[n:]
				return n, nil
			}
			_ = c.Conn.SetReadDeadline(time.Now().Add(c.l.srv.cfg.IdleTimeout))
			n, err := c.Conn.Read(p)
			c.noteErr(err)
			return n, err
		}
		n, err := frameLen(c.in)
		if err != nil {
			if len(c.in) >= 4 && c.in[0]>>6 <= 1 {
				c.l.dropOversized.Inc()
				c.closeReason = "oversized"
			} else {
				c.l.dropMalformed.Inc()
				c.closeReason = "malformed"
			}
			c.countClose()
			return 0, err
		}
		if n > 0 {
			frame := c.in[:n]
			c.gotFirst = true
			if c.l.inspect(frame, c.Conn.RemoteAddr(), c) {
				c.out = append(c.out[:0], frame...)
			}
			c.in = c.in[n:]
			if len(c.in) == 0 {
				c.in = c.in[:0:0]
			}
			continue
		}
		deadline := c.firstBy
		switch {
		case c.allocated.Load():
			deadline = time.Now().Add(c.l.srv.cfg.IdleTimeout)
		case c.gotFirst:
			// Until it has an allocation a connection gets little idle time,
			// so unauthenticated clients cannot hold sockets for long.
			deadline = time.Now().Add(min(c.l.srv.cfg.IdleTimeout, preAllocationIdle))
		}
		_ = c.Conn.SetReadDeadline(deadline)
		m, err := c.Conn.Read(c.scratch)
		c.in = append(c.in, c.scratch[:m]...)
		if err != nil {
			c.noteErr(err)
			return 0, err
		}
	}
}

func (c *clientStreamConn) noteErr(err error) {
	if err == nil || c.closeReason != "" {
		return
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		if c.gotFirst {
			c.closeReason = "idle_timeout"
		} else {
			c.closeReason = "first_message_timeout"
		}
	case errors.Is(err, io.EOF):
		c.closeReason = "peer_closed"
	case errors.Is(err, syscall.ECONNRESET):
		// Gone without a goodbye: the client, or a NAT or firewall on
		// the way that forgot the connection.
		c.closeReason = "peer_reset"
	default:
		return
	}
	c.countClose()
}

// countClose counts the connection as closed for closeReason. Its slot in
// the per-IP limit is freed first (it is done with, Close or not), so
// whoever sees the count can connect again at once.
func (c *clientStreamConn) countClose() {
	c.closeOnce.Do(func() { c.l.srv.conns.release(c.ip) })
	c.l.srv.m.ConnectionsClosed.WithLabelValues(c.l.transport, c.closeReason).Inc()
}

func (c *clientStreamConn) reply(b []byte, _ net.Addr) error {
	c.l.observeResponse(b)
	_, err := c.write(b)
	return err
}

func (c *clientStreamConn) Write(b []byte) (int, error) {
	if !c.passthrough.Load() {
		switch c.l.observeResponse(b) {
		case respConnectionBound:
			c.passthrough.Store(true)
		case respAllocated:
			c.allocated.Store(true)
		}
	}
	return c.write(b)
}

func (c *clientStreamConn) write(b []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.l.srv.cfg.WriteTimeout))
	return c.Conn.Write(b)
}
