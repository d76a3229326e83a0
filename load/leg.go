package load

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// leg is one TURN client: a socket to the server, a pion/turn client for the
// control messages, one UDP allocation, and a media sender and receiver.
type leg struct {
	r    *runner
	call uint32
	idx  uint8

	server     string        // host:port the leg allocated on
	redirected bool          // server is an ALTERNATE-SERVER
	allocTime  time.Duration // Allocate latency, 401 round trip included

	udp        *net.UDPConn   // the udp transport, else nil
	pc         net.PacketConn // what pion reads and writes (udp or a STUNConn)
	writer     *streamWriter  // stream transports: media goes through a queue
	serverAP   netip.AddrPort // udp only
	serverAddr net.Addr       // the address pion compares responses against
	client     *turn.Client
	relay      net.PacketConn // pion's relayed conn
	relayAP    netip.AddrPort
	peerAP     netip.AddrPort            // the other leg's relayed address
	channel    uint16                    // bound channel, or 0 for Send indications
	alternate  atomic.Pointer[alternate] // from a 300 answer to Allocate
	done       chan struct{}             // closed when the read loop ends
	closed     chan struct{}             // closed by close()

	// deallocating is set once the deallocating Refresh was sent;
	// deallocated is closed when the server answered it (UDP legs).
	deallocating atomic.Bool
	deallocated  chan struct{}
	deallocOnce  sync.Once

	// Sender state, owned by one worker.
	buf      []byte
	frameLen int
	payload  []byte // where the media header goes inside buf
	start    int64  // tick the leg started sending on
	phase    int64  // 0..999: spreads legs over a tick's worth of schedule
	nsent    uint64
	txid     [12]byte

	// Receiver state, owned by the read loop.
	jitter  Jitter
	highest uint64
	got     bool
	seen    [seenWindow / 64]uint64
}

// seenWindow is how many recent sequence numbers a leg remembers to tell a
// duplicate from a late packet.
const seenWindow = 1024

// quietLogger keeps pion's client silent: turnload reports errors itself.
var quietLogger = func() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	return f
}()

// dial opens the leg's connection to server and starts its read loop.
// tlsName is the name to verify a TLS server's certificate against: the
// configured ServerName wins over it unless altDomain (it is the
// ALTERNATE-DOMAIN of a redirect, which RFC 8489 §10 says to use); empty
// takes the host of server.
func (r *runner) dial(ctx context.Context, server, tlsName string, altDomain bool, call uint32, idx uint8, creds credentials) (*leg, error) {
	l := &leg{r: r, call: call, idx: idx, done: make(chan struct{}), closed: make(chan struct{}), deallocated: make(chan struct{})}
	switch r.cfg.Transport {
	case "udp":
		ua, err := net.ResolveUDPAddr("udp", server)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", server, err)
		}
		network := "udp4"
		if ua.IP.To4() == nil {
			network = "udp6"
		}
		c, err := net.ListenUDP(network, nil)
		if err != nil {
			return nil, err
		}
		_ = c.SetReadBuffer(1 << 20)
		l.udp, l.pc, l.serverAddr = c, c, ua
		l.serverAP = ua.AddrPort()
		l.serverAP = netip.AddrPortFrom(l.serverAP.Addr().Unmap(), l.serverAP.Port())
	default:
		d := net.Dialer{}
		var c net.Conn
		var err error
		if r.cfg.Transport == "tls" {
			tc := r.cfg.TLS
			if tc == nil {
				tc = &tls.Config{}
			}
			if (tc.ServerName == "" || altDomain) && !tc.InsecureSkipVerify {
				tc = tc.Clone()
				tc.ServerName = tlsName
				if tc.ServerName == "" {
					tc.ServerName, _, _ = net.SplitHostPort(server)
				}
			}
			c, err = (&tls.Dialer{NetDialer: &d, Config: tc}).DialContext(ctx, "tcp", server)
		} else {
			c, err = d.DialContext(ctx, "tcp", server)
		}
		if err != nil {
			return nil, err
		}
		sc := turn.NewSTUNConn(c)
		l.pc, l.serverAddr = sc, sc.RemoteAddr()
		l.writer = newStreamWriter(c, streamQueue(r.cfg.PPS), func() { r.countErr("send") })
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server,
		TURNServerAddr: server,
		Username:       creds.username,
		Password:       creds.password,
		Realm:          r.cfg.Realm,
		Software:       "turnload",
		Conn:           l.pc,
		LoggerFactory:  quietLogger,
	})
	if err != nil {
		if l.writer != nil {
			l.writer.close()
		}
		_ = l.pc.Close()
		return nil, err
	}
	l.client = client
	go l.readLoop()
	return l, nil
}

// allocate asks for the leg's relayed address.
func (l *leg) allocate(ctx context.Context) error {
	relay, err := l.client.AllocateWithContext(ctx)
	if err != nil {
		return err
	}
	l.relay = relay
	ua, ok := relay.LocalAddr().(*net.UDPAddr)
	if !ok {
		return fmt.Errorf("relayed address %v is not UDP", relay.LocalAddr())
	}
	ap := ua.AddrPort()
	l.relayAP = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return nil
}

// channeler is the part of pion's relayed conn that tells whether a
// channel is bound to a peer.
type channeler interface {
	FindChannelNumberByAddr(net.Addr) (uint16, bool)
	IsChannelActive(uint16) bool
}

var (
	errChannelBind = errors.New("channel binding did not complete")
	hello          = []byte("TLDh") // too short to be media: the receiver ignores it
)

// connect installs a permission for peer and, unless Send indications were
// asked for, binds a channel to it (pion binds on the first write).
func (l *leg) connect(ctx context.Context, peer netip.AddrPort) (stage string, err error) {
	l.peerAP = peer
	peerAddr := net.UDPAddrFromAddrPort(peer)
	if l.r.cfg.SendIndications {
		if err := l.client.CreatePermission(peerAddr); err != nil {
			return "permission", err
		}
		l.refreshPermission(peerAddr)
		return "", nil
	}
	if _, err := l.relay.WriteTo(hello, peerAddr); err != nil {
		return "permission", err
	}
	ch, ok := l.relay.(channeler)
	if !ok {
		return "channel_bind", errors.New("pion relayed conn does not expose channels")
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if n, ok := ch.FindChannelNumberByAddr(peerAddr); ok && ch.IsChannelActive(n) {
			l.channel = n
			return "", nil
		}
		select {
		case <-ctx.Done():
			return "channel_bind", fmt.Errorf("%w: %w", errChannelBind, ctx.Err())
		case <-tick.C:
		}
	}
}

// refreshPermission keeps a Send-indication leg's permission alive (pion
// refreshes only the permissions its own WriteTo created): every two
// minutes, well inside the five-minute permission lifetime, from a timer
// rather than a goroutine per leg.
func (l *leg) refreshPermission(peer net.Addr) {
	time.AfterFunc(2*time.Minute, func() {
		select {
		case <-l.closed:
			return
		default:
		}
		if err := l.client.CreatePermission(peer); err != nil {
			select {
			case <-l.closed: // closed meanwhile: not an error
				return
			default:
			}
			l.r.countErr("permission_refresh")
		}
		l.refreshPermission(peer)
	})
}

// prepare lays out the leg's send buffer once; send then only fills in the
// media header (and, for Send indications, the transaction id).
func (l *leg) prepare(size int) {
	stream := l.writer != nil
	if l.channel != 0 {
		l.frameLen = channelDataLen(size, stream)
		l.buf = make([]byte, l.frameLen)
		putChannelHeader(l.buf, l.channel, size, stream)
		l.payload = l.buf[chanDataHeader : chanDataHeader+size]
		return
	}
	l.frameLen = sendIndicationLen(size, l.peerAP)
	l.buf = make([]byte, l.frameLen)
	off := payloadOffsetSend(l.peerAP)
	l.payload = l.buf[off : off+size]
	binary.BigEndian.PutUint32(l.txid[0:4], uint32(l.call)<<1|uint32(l.idx))
	putSendIndication(l.buf, l.txid[:], l.peerAP, size)
}

// send sends the next media packet, stamped now. A packet the loader
// fails to hand to the kernel is counted as its own drop, not as sent.
func (l *leg) send(now time.Duration) {
	putMedia(l.payload, media{call: l.call, leg: l.idx, seq: l.nsent, sent: now})
	if l.sendRaw() {
		l.r.sent.Add(1)
	} else {
		l.r.loaderDrops.Add(1)
	}
}

// sendRaw frames and writes the payload already in place; false if the
// packet did not leave.
func (l *leg) sendRaw() bool {
	if l.channel == 0 {
		binary.BigEndian.PutUint64(l.txid[4:12], l.nsent)
		putSendIndication(l.buf, l.txid[:], l.peerAP, len(l.payload))
	}
	l.nsent++
	frame := l.buf[:l.frameLen]
	if l.udp != nil {
		if _, err := l.udp.WriteToUDPAddrPort(frame, l.serverAP); err != nil {
			l.r.countErr("send")
			return false
		}
		return true
	}
	if !l.writer.enqueue(frame) {
		l.r.countErr("send_queue_full")
		return false
	}
	return true
}

// readLoop reads everything the server sends: media is counted here,
// responses go to pion.
func (l *leg) readLoop() {
	defer close(l.done)
	// Media and TURN responses fit one MTU; a stream frame larger than
	// the buffer is reported by STUNConn and ends the leg.
	buf := make([]byte, 4096)
	for {
		var n int
		var err error
		if l.udp != nil {
			var from netip.AddrPort
			n, from, err = l.udp.ReadFromUDPAddrPort(buf)
			if err == nil && netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != l.serverAP {
				continue // not the server: ignore
			}
		} else {
			n, _, err = l.pc.ReadFrom(buf)
		}
		if err != nil {
			select {
			case <-l.closed:
			default:
				if !errors.Is(err, net.ErrClosed) {
					l.r.countErr("read")
				}
			}
			return
		}
		b := buf[:n]
		payload, kind := inboundData(b)
		switch kind {
		case frameData:
			l.onMedia(payload)
		case frameBroken:
			l.r.countErr("malformed_frame")
		default:
			l.noteAlternate(b)
			l.noteDeallocated(b)
			_, _ = l.client.HandleInbound(b, l.serverAddr)
		}
	}
}

// typeAllocateError is an Allocate error response (RFC 8656 section 7.2).
const typeAllocateError = 0x0113

// alternate is where a 300 Try Alternate sends a leg.
type alternate struct {
	server netip.AddrPort // ALTERNATE-SERVER
	domain string         // ALTERNATE-DOMAIN: the name to verify its TLS certificate against, if given
}

// noteAlternate remembers the ALTERNATE-SERVER (and ALTERNATE-DOMAIN) of a
// 300 Try Alternate answer to Allocate (RFC 8489 section 10), which pion's
// client does not follow, so that the leg's setup can allocate there instead.
func (l *leg) noteAlternate(b []byte) {
	if len(b) < stunHeaderLen || binary.BigEndian.Uint16(b[0:2]) != typeAllocateError {
		return
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return
	}
	var code stun.ErrorCodeAttribute
	var alt stun.AlternateServer
	if code.GetFrom(m) != nil || code.Code != stun.CodeTryAlternate || alt.GetFrom(m) != nil {
		return
	}
	ip, ok := netip.AddrFromSlice(alt.IP)
	if !ok || alt.Port <= 0 || alt.Port > 65535 {
		return
	}
	a := &alternate{server: netip.AddrPortFrom(ip.Unmap(), uint16(alt.Port))}
	if d, err := m.Get(stun.AttrAlternateDomain); err == nil {
		a.domain = string(d)
	}
	l.alternate.Store(a)
}

// Refresh responses (RFC 8656 section 7.3).
const (
	typeRefreshSuccess = 0x0104
	typeRefreshError   = 0x0114
)

// noteDeallocated notices the server's answer to the deallocating Refresh:
// a success, or 437 Allocation Mismatch (the allocation is gone already).
func (l *leg) noteDeallocated(b []byte) {
	if !l.deallocating.Load() || len(b) < stunHeaderLen {
		return
	}
	switch binary.BigEndian.Uint16(b[0:2]) {
	case typeRefreshSuccess:
	case typeRefreshError:
		m := &stun.Message{Raw: append([]byte(nil), b...)}
		var code stun.ErrorCodeAttribute
		if m.Decode() != nil || code.GetFrom(m) != nil || code.Code != stun.CodeAllocMismatch {
			return
		}
	default:
		return
	}
	l.deallocOnce.Do(func() { close(l.deallocated) })
}

// deallocate sends a UDP leg's deallocating Refresh (lifetime 0) through
// pion, which retransmits it until the server answers while the leg's
// socket stays open. A stream leg's allocation ends with its connection.
// It reports whether there is an answer to wait for on l.deallocated.
func (l *leg) deallocate() bool {
	if l.udp == nil || l.relay == nil {
		return false
	}
	l.deallocating.Store(true)
	return l.relay.Close() == nil
}

// release deallocates l, waiting up to deallocGrace for the server's
// answer, and closes it.
func (l *leg) release() {
	if l.deallocate() {
		t := time.NewTimer(deallocGrace)
		select {
		case <-l.deallocated:
		case <-t.C:
		}
		t.Stop()
	}
	l.close()
}

// onMedia accounts for one received payload.
func (l *leg) onMedia(p []byte) {
	if l.r.probeEcho != nil {
		l.r.probeEcho(p)
		return
	}
	now := l.r.now()
	m, ok := parseMedia(p)
	if !ok {
		return // the setup hello, or not ours
	}
	if m.call != l.call || m.leg == l.idx {
		l.r.countErr("misdelivered")
		return
	}
	if l.duplicate(m.seq) {
		l.r.dups.Add(1)
		return
	}
	l.r.received.Add(1)
	l.r.latency.Record(now - m.sent)
	l.jitter.Observe(m.sent, now)
}

// duplicate records seq and reports whether it was seen before. Packets
// more than seenWindow behind the highest one count as new.
func (l *leg) duplicate(seq uint64) bool {
	bit := func(s uint64) (int, uint64) { s %= seenWindow; return int(s / 64), 1 << (s % 64) }
	if !l.got || seq > l.highest {
		if l.got {
			if seq-l.highest >= seenWindow {
				clear(l.seen[:])
			} else {
				for s := l.highest + 1; s < seq; s++ {
					i, m := bit(s)
					l.seen[i] &^= m
				}
			}
		}
		l.highest, l.got = seq, true
		i, m := bit(seq)
		l.seen[i] |= m
		return false
	}
	if l.highest-seq >= seenWindow {
		return false
	}
	i, m := bit(seq)
	if l.seen[i]&m != 0 {
		return true
	}
	l.seen[i] |= m
	return false
}

// close deallocates (without waiting for the answer) and closes the socket.
func (l *leg) close() {
	select {
	case <-l.closed:
		return
	default:
		close(l.closed)
	}
	if l.writer != nil {
		// A stream first: pion's deallocating Refresh writes to the
		// connection synchronously and would block for ever on a server
		// that stopped reading. Closing a TCP or TLS control connection
		// ends its allocation anyway (RFC 8656 section 3.1).
		l.writer.close()
	}
	if l.relay != nil {
		_ = l.relay.Close()
	}
	l.client.Close()
	_ = l.pc.Close()
	<-l.done
}

// streamWriter sends a stream leg's media from a goroutine of its own, so a
// server that stops reading a TCP connection blocks that leg only, never
// the worker that schedules many legs. A full queue drops the packet.
type streamWriter struct {
	conn  net.Conn
	onErr func() // a write failed
	free  chan []byte
	out   chan []byte
	quit  chan struct{}
	done  chan struct{}
}

// streamQueue is how many frames a stream leg may have waiting: one second
// of its media, at least 8. A connection (or a loader starved of CPU) that
// stalls for longer drops packets; shorter stalls, which a busy machine
// has, only delay them, as a TCP sender's socket buffer would.
func streamQueue(pps int) int {
	return max(8, pps)
}

func newStreamWriter(c net.Conn, queue int, onErr func()) *streamWriter {
	w := &streamWriter{conn: c, onErr: onErr, free: make(chan []byte, queue), out: make(chan []byte, queue),
		quit: make(chan struct{}), done: make(chan struct{})}
	for range queue {
		w.free <- nil // sized by the first frame that uses it
	}
	go w.loop()
	return w
}

func (w *streamWriter) enqueue(frame []byte) bool {
	select {
	case b := <-w.free:
		w.out <- append(b[:0], frame...)
		return true
	default:
		return false
	}
}

func (w *streamWriter) loop() {
	defer close(w.done)
	for {
		select {
		case <-w.quit:
			return
		case b := <-w.out:
			if _, err := w.conn.Write(b); err != nil {
				select {
				case <-w.quit:
				default:
					w.onErr()
				}
			}
			w.free <- b
		}
	}
}

func (w *streamWriter) close() {
	close(w.quit)
	_ = w.conn.Close()
	<-w.done
}
