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

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/metrics"
)

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
			ip, refused := cl.l.srv.conns.acquire(c.RemoteAddr())
			if refused != "" {
				cl.l.srv.m.ConnectionsClosed.For(cl.l.transport, refused).Inc()
				_ = c.Close()
				continue
			}
			return newClientStreamConn(c, cl.l, ip), nil
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
// one can be checked like a UDP datagram, enforces the first-message, auth
// and idle timeouts, and bounds writes to a client that stops reading. After
// an RFC 6062 ConnectionBind succeeds the connection carries raw peer data
// and is passed through untouched.
//
// Until an Allocate or a ConnectionBind on it succeeds the connection is
// pending: it holds a slot in Server.conns and must get there by authBy,
// however busy it keeps the socket. Afterwards only the idle timeout
// applies. When its allocation ends (Refresh with lifetime 0, expiry) while
// the connection stays open, it is pending again: it takes a slot back (or
// is closed when the caps are full) and gets a new auth deadline, so
// allocating and deleting cannot turn connections into uncounted ones.
type clientStreamConn struct {
	net.Conn
	l *listener
	// readMu serialises Read: after an RFC 6062 data connection ends, pion's
	// read loop reads again while its copy goroutine may still be returning
	// from a Read of its own.
	readMu      sync.Mutex
	firstBy     time.Time     // deadline for the first complete message
	authBy      atomic.Int64  // deadline for an allocation (or ConnectionBind), Unix ns
	gen         atomic.Uint32 // bumped when the deadline that applies changes
	closed      atomic.Bool
	gotFirst    bool
	timeoutWhy  metrics.CloseReason // close reason if the read deadline last set expires
	passthrough atomic.Bool
	in          []byte // bytes read but not yet cut into frames
	out         []byte // frames ready to hand to pion
	scratch     []byte
	closeReason metrics.CloseReason
	handshaken  bool
	allocated   atomic.Bool // an Allocate succeeded on this connection
	ip          netip.Addr  // its per-IP slot in Server.conns
	pending     atomic.Bool // holds a slot in Server.conns
	key         allocation.Key
	rm          reqMemo
}

func (c *clientStreamConn) memo() *reqMemo { return &c.rm }

// Close closes the connection and frees its pending slot if it still
// holds one.
func (c *clientStreamConn) Close() error {
	c.done()
	return c.Conn.Close()
}

// done marks the connection finished: it leaves Server.streams and gives
// back its pending slot if it holds one.
func (c *clientStreamConn) done() {
	c.closed.Store(true)
	c.l.srv.streams.Delete(c.key)
	c.releaseSlot()
}

// allocationEnded makes the connection pending again when its allocation
// is deleted while it stays open. It runs on pion's goroutine of the
// deletion; the reader is woken to apply the new deadline.
func (c *clientStreamConn) allocationEnded() {
	if c.passthrough.Load() || c.closed.Load() || !c.allocated.CompareAndSwap(true, false) {
		return
	}
	ip, refused := c.l.srv.conns.acquire(c.Conn.RemoteAddr())
	if refused != "" {
		c.closed.Store(true)
		c.l.srv.m.ConnectionsClosed.For(c.l.transport, refused).Inc()
		_ = c.Conn.Close()
		return
	}
	c.ip = ip
	c.authBy.Store(time.Now().Add(c.l.srv.cfg.AuthTimeout).UnixNano())
	c.pending.Store(true)
	if c.closed.Load() {
		c.releaseSlot() // Close ran meanwhile and found no slot to free
		return
	}
	c.gen.Add(1)
	_ = c.Conn.SetReadDeadline(time.Now())
}

// releaseSlot gives the connection's pending slot back, the first time it
// is called: when it gets an allocation, is bound, or is done with.
func (c *clientStreamConn) releaseSlot() {
	if c.pending.CompareAndSwap(true, false) {
		c.l.srv.conns.release(c.ip)
	}
}

// handshake completes a DTLS handshake within the first-message and auth
// timeouts. A DTLS conn ignores read deadlines while it handshakes, so
// without this a client that sends one ClientHello and goes quiet would
// hold a connection and its goroutines forever. (TLS honours the read
// deadline set by Read.)
func (c *clientStreamConn) handshake() error {
	dc, ok := c.Conn.(*dtls.Conn)
	if !ok {
		return nil
	}
	deadline, why := c.firstBy, metrics.CloseFirstMessageTimeout
	if authBy := time.Unix(0, c.authBy.Load()); authBy.Before(deadline) {
		deadline, why = authBy, metrics.CloseAuthTimeout
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := dc.HandshakeContext(ctx); err != nil {
		if ctx.Err() != nil {
			c.closeReason = why
		} else {
			c.closeReason = metrics.CloseMalformed
		}
		c.countClose()
		_ = c.Conn.Close()
		return err
	}
	return nil
}

// newClientStreamConn wraps c, accepted just now, which holds the pending
// slot acquired for ip.
func newClientStreamConn(c net.Conn, l *listener, ip netip.Addr) *clientStreamConn {
	now := time.Now()
	sc := &clientStreamConn{
		Conn:    c,
		l:       l,
		firstBy: now.Add(l.srv.cfg.FirstMessageTimeout),
		scratch: make([]byte, 4096),
		ip:      ip,
		key:     l.key(c.RemoteAddr()),
	}
	sc.authBy.Store(now.Add(l.srv.cfg.AuthTimeout).UnixNano())
	sc.pending.Store(true)
	return sc
}

// preAllocationIdle is the idle timeout of a client connection that has no
// allocation yet (within its AuthTimeout).
const preAllocationIdle = 30 * time.Second

// readDeadline returns the deadline for the next read from the socket and
// the close reason if it expires.
func (c *clientStreamConn) readDeadline(now time.Time) (time.Time, metrics.CloseReason) {
	if c.allocated.Load() {
		return now.Add(c.l.srv.cfg.IdleTimeout), metrics.CloseIdleTimeout
	}
	deadline, why := c.firstBy, metrics.CloseFirstMessageTimeout
	if c.gotFirst {
		// Until it has an allocation a connection gets little idle time,
		// so unauthenticated clients cannot hold sockets for long.
		deadline, why = now.Add(min(c.l.srv.cfg.IdleTimeout, preAllocationIdle)), metrics.CloseIdleTimeout
	}
	// Absolute: what the client sends does not move it.
	if authBy := time.Unix(0, c.authBy.Load()); authBy.Before(deadline) {
		deadline, why = authBy, metrics.CloseAuthTimeout
	}
	return deadline, why
}

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
			c.timeoutWhy = metrics.CloseIdleTimeout
			_ = c.Conn.SetReadDeadline(time.Now().Add(c.l.srv.cfg.IdleTimeout))
			n, err := c.Conn.Read(p)
			c.noteErr(err)
			return n, err
		}
		n, err := frameLen(c.in)
		if err != nil {
			if len(c.in) >= 4 && c.in[0]>>6 <= 1 {
				c.l.dropOversized.Inc()
				c.closeReason = metrics.CloseOversized
			} else {
				c.l.dropMalformed.Inc()
				c.closeReason = metrics.CloseMalformed
			}
			c.countClose()
			return 0, err
		}
		if n > 0 {
			frame := c.in[:n]
			c.gotFirst = true
			if msg, pass := c.l.inspect(frame, c.Conn.RemoteAddr(), c); pass {
				if msg == nil {
					msg = frame
				}
				c.out = append(c.out[:0], msg...)
			}
			c.in = c.in[n:]
			if len(c.in) == 0 {
				c.in = c.in[:0:0]
			}
			continue
		}
		gen := c.gen.Load()
		deadline, why := c.readDeadline(time.Now())
		c.timeoutWhy = why
		_ = c.Conn.SetReadDeadline(deadline)
		m, err := c.Conn.Read(c.scratch)
		c.in = append(c.in, c.scratch[:m]...)
		if err != nil {
			// The deadline that applies changed while this read waited (an
			// Allocate or ConnectionBind answered, or the allocation ended),
			// or allocationEnded woke the read before its deadline: read
			// again with the deadline that applies now. (A reader that saw
			// the change before the wake-up came sees no change, only a
			// deadline not yet passed.) A read timeout leaves TCP, TLS and
			// DTLS connections usable.
			if deadlineExceeded(err) && (c.gen.Load() != gen || time.Now().Before(deadline)) {
				continue
			}
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
	case deadlineExceeded(err):
		c.closeReason = c.timeoutWhy
	case errors.Is(err, io.EOF):
		c.closeReason = metrics.ClosePeerClosed
	case errors.Is(err, syscall.ECONNRESET):
		// Gone without a goodbye: the client, or a NAT or firewall on
		// the way that forgot the connection.
		c.closeReason = metrics.ClosePeerReset
	default:
		return
	}
	c.countClose()
}

// deadlineExceeded reports whether a read failed on its read deadline:
// os.ErrDeadlineExceeded from TCP and TLS, an error wrapping
// context.DeadlineExceeded from DTLS.
func deadlineExceeded(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)
}

// countClose counts the connection as closed for closeReason. Its pending
// slot, if it still holds one, is freed first (it is done with, Close or
// not), so whoever sees the count can connect again at once.
func (c *clientStreamConn) countClose() {
	c.done()
	c.l.srv.m.ConnectionsClosed.For(c.l.transport, c.closeReason).Inc()
}

func (c *clientStreamConn) reply(b []byte, _ net.Addr) error {
	c.l.observeResponse(b, readOutHeader(b))
	_, err := c.write(b)
	return err
}

func (c *clientStreamConn) Write(b []byte) (int, error) {
	if c.passthrough.Load() {
		return c.write(b)
	}
	orig := len(b)
	h := readOutHeader(b)
	b = c.l.finishResponse(b, h, c.Conn.RemoteAddr(), &c.rm)
	c.l.observeResponse(b, h)
	switch h.kind {
	case respConnectionBound:
		// An RFC 6062 data connection authenticates with its
		// ConnectionBind; pion bounds how long the peer side waits.
		c.passthrough.Store(true)
		c.releaseSlot()
		c.gen.Add(1)
	case respAllocated:
		c.allocated.Store(true)
		c.releaseSlot()
		c.l.srv.streams.Store(c.key, c)
		c.gen.Add(1)
	}
	n, err := c.write(b)
	if err == nil {
		n = orig // pion wrote its own message, whatever it became
	}
	return n, err
}

func (c *clientStreamConn) write(b []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.l.srv.cfg.WriteTimeout))
	return c.Conn.Write(b)
}
