package relay

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/metrics"
)

// The stream connection's timeouts (first message, idle, auth; see
// clientStreamConn) are socket read deadlines. These tests run them in a
// testing/synctest bubble over in-memory connections (net.Pipe, whose
// deadlines are the bubble's timers), so a deadline of minutes passes at
// once and the moment a connection is closed is exact. A bubble cannot
// wait on real sockets, and an allocation opens one (its relay socket), so
// the states an allocation brings are driven by hand: the test writes the
// Allocate or ConnectionBind success that pion would, and calls
// allocationEnded as the deletion event does. cmd/supernode's tests check
// that the flags reach the relay, on real sockets.

// pipeListener is a net.Listener whose connections are net.Pipe ends,
// addressed as TCP from 127.0.0.1.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	port  int                 // the next client port
	dtls  []dtls.ServerOption // set: the server's end is a DTLS server
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{}), port: 40000}
}

func (p *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

func (p *pipeListener) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

func (p *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478} }

// dial connects a new client and returns its end, closed when the test
// ends.
func (p *pipeListener) dial(t *testing.T) net.Conn {
	t.Helper()
	p.port++
	client := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p.port}
	s, c := net.Pipe()
	var server net.Conn = addrConn{Conn: s, local: p.Addr(), remote: client}
	if p.dtls != nil {
		dc, err := dtls.ServerWithOptions(pipePacketConn{server}, client, p.dtls...)
		if err != nil {
			t.Fatal(err)
		}
		server = dc
	}
	p.conns <- server
	t.Cleanup(func() { _ = c.Close() })
	return addrConn{Conn: c, local: client, remote: p.Addr()}
}

// pipePacketConn carries DTLS datagrams over a pipe end: one Write, one
// datagram.
type pipePacketConn struct{ net.Conn }

func (p pipePacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, err := p.Read(b)
	return n, p.RemoteAddr(), err
}

func (p pipePacketConn) WriteTo(b []byte, _ net.Addr) (int, error) { return p.Write(b) }

// deafPacketConn sends but never hears: a DTLS client behind it sends its
// ClientHello and cannot go on with the handshake.
type deafPacketConn struct{ pipePacketConn }

func (d deafPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		if _, err := d.Read(b); err != nil {
			return 0, nil, err
		}
	}
}

// dtlsClient completes a DTLS handshake over c.
func dtlsClient(t *testing.T, c net.Conn) net.Conn {
	t.Helper()
	dc, err := dtls.ClientWithOptions(pipePacketConn{c}, c.RemoteAddr(), dtls.WithInsecureSkipVerify(true))
	if err != nil {
		t.Fatal(err)
	}
	if err := dc.HandshakeContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dc
}

// stallDTLS starts a DTLS handshake over c and goes deaf.
func stallDTLS(t *testing.T, c net.Conn) net.Conn {
	t.Helper()
	dc, err := dtls.ClientWithOptions(deafPacketConn{pipePacketConn{c}}, c.RemoteAddr(), dtls.WithInsecureSkipVerify(true))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = dc.HandshakeContext(context.Background()) }) // ends when the server closes c
	t.Cleanup(func() { _ = dc.Close(); wg.Wait() })
	return c
}

// addrConn gives a pipe end the addresses of a TCP connection.
type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (a addrConn) LocalAddr() net.Addr  { return a.local }
func (a addrConn) RemoteAddr() net.Addr { return a.remote }

// testCert is a self-signed certificate made for one test.
func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// timeoutServer is a relay.Server with pion behind TCP, TLS and DTLS listeners of
// in-memory connections. Call it inside a bubble.
type timeoutServer struct {
	srv            *Server
	m              *metrics.Metrics
	tcp, tls, dtls *pipeListener
}

func startTimeoutServer(t *testing.T, first, idle, auth time.Duration) *timeoutServer {
	t.Helper()
	p, err := NewPolicy(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := &timeoutServer{m: metrics.New("test"), tcp: newPipeListener(), tls: newPipeListener(), dtls: newPipeListener()}
	cert := testCert(t)
	ts.dtls.dtls = []dtls.ServerOption{dtls.WithCertificates(cert), dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret)}
	ts.srv, err = New(Config{
		Listeners: []Listener{
			{Transport: "tcp", Listener: ts.tcp},
			{Transport: "tls", Listener: tls.NewListener(ts.tls, &tls.Config{Certificates: []tls.Certificate{cert}})},
			{Transport: "dtls", Listener: ts.dtls},
		},
		Realm:       "timeouts",
		Credentials: allocation.NewStore("timeouts", allocation.Credentials{Users: map[string]string{"alice": "pw"}}, nil),
		Table:       allocation.NewTable(allocation.TableConfig{}),
		Policy:      p,
		Metrics:     ts.m,
		RelayIPs:    []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		IdleTimeout: idle, FirstMessageTimeout: first, AuthTimeout: auth,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.srv.Close() })
	return ts
}

func (ts *timeoutServer) closed(transport metrics.Transport, reason metrics.CloseReason) float64 {
	return testutil.ToFloat64(ts.m.ConnectionsClosed.For(transport, reason))
}

// watchClose reads (and discards) what the server sends on c until it
// closes c, and reports the bubble's time then.
func watchClose(c net.Conn) <-chan time.Time {
	at := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, err := c.Read(buf); err != nil {
				at <- time.Now()
				return
			}
		}
	}()
	return at
}

// trickle writes write(i) to c every 100 ms, at most 100 times, until a
// write fails (the server closed c) or the test ends.
func trickle(t *testing.T, c net.Conn, write func(i int) []byte) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 100 {
			if _, err := c.Write(write(i)); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	t.Cleanup(func() { close(done); wg.Wait() })
}

// slowHeader is a Binding request header announcing 400 bytes of
// attributes, a byte at a time: it stays an unfinished frame for 42 s.
func slowHeader(i int) []byte {
	h := make([]byte, stunHeaderSize)
	binary.BigEndian.PutUint16(h[0:], 0x0001)
	binary.BigEndian.PutUint16(h[2:], 400)
	binary.BigEndian.PutUint32(h[4:], 0x2112a442) // magic cookie
	if i < len(h) {
		return h[i : i+1]
	}
	return []byte{0}
}

func bindingRequest(int) []byte { return stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw }

// tlsClient completes a TLS handshake over c.
func tlsClient(t *testing.T, c net.Conn) net.Conn {
	t.Helper()
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test's own certificate
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc
}

// TestStreamTimeouts: a TCP or TLS client connection is closed at the
// first-message timeout if no complete message (TLS handshake included)
// arrived by then, however the client trickles bytes; at the pre-allocation
// idle timeout after its last message; at the auth timeout after accept if
// it holds no allocation, however busy it keeps the socket (trickled bytes
// of a frame that never completes, complete Binding requests). Each close
// is counted with its reason and gives its pending slot back.
func TestStreamTimeouts(t *testing.T) {
	const (
		first = 300 * time.Millisecond
		idle  = 600 * time.Millisecond
		auth  = time.Second
	)
	// What a client does after it connects; each returns the connection
	// to watch.
	quiet := func(_ *testing.T, c net.Conn) net.Conn { return c }
	bindOnce := func(t *testing.T, c net.Conn) net.Conn {
		if _, err := c.Write(bindingRequest(0)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	keepBusy := func(write func(i int) []byte) func(*testing.T, net.Conn) net.Conn {
		return func(t *testing.T, c net.Conn) net.Conn {
			trickle(t, c, write)
			return c
		}
	}
	for _, tc := range []struct {
		name              string
		transport         metrics.Transport
		reason            metrics.CloseReason
		first, idle, auth time.Duration // zero: the default
		act               func(t *testing.T, c net.Conn) net.Conn
		want              time.Duration // from the dial to the close
	}{
		{"stalled", metrics.TransportTCP, metrics.CloseFirstMessageTimeout, first, idle, 0, quiet, first},
		{"slow header", metrics.TransportTCP, metrics.CloseFirstMessageTimeout, first, idle, 0, func(_ *testing.T, c net.Conn) net.Conn {
			go func() {
				for _, b := range []byte{0x00, 0x01, 0x00} {
					_, _ = c.Write([]byte{b})
					time.Sleep(50 * time.Millisecond)
				}
			}()
			return c
		}, first},
		{"no TLS handshake", metrics.TransportTLS, metrics.CloseFirstMessageTimeout, first, idle, 0, quiet, first},
		// Without an allocation the idle timeout is at most 30 s.
		{"idle after binding", metrics.TransportTCP, metrics.CloseIdleTimeout, first, idle, 0, bindOnce, idle},
		{"idle after binding, long idle timeout", metrics.TransportTCP, metrics.CloseIdleTimeout, first, time.Hour, time.Hour, bindOnce, preAllocationIdle},
		// Before the first complete message: a trickle of one.
		{"trickled header", metrics.TransportTCP, metrics.CloseAuthTimeout, 0, 0, auth, keepBusy(slowHeader), auth},
		// After one: each byte used to re-arm the idle deadline.
		{"binding then trickle", metrics.TransportTCP, metrics.CloseAuthTimeout, 0, 0, auth, keepBusy(func(i int) []byte {
			if i == 0 {
				return bindingRequest(i)
			}
			return slowHeader(i - 1)
		}), auth},
		{"binding loop", metrics.TransportTCP, metrics.CloseAuthTimeout, 0, 0, auth, keepBusy(bindingRequest), auth},
		{"binding loop", metrics.TransportTLS, metrics.CloseAuthTimeout, 0, 0, auth, func(t *testing.T, c net.Conn) net.Conn {
			return keepBusy(bindingRequest)(t, tlsClient(t, c))
		}, auth},
		// A DTLS conn ignores read deadlines while it handshakes: the
		// handshake has the first-message and auth deadlines, whichever
		// comes first.
		{"stalled handshake, first-message deadline first", metrics.TransportDTLS, metrics.CloseFirstMessageTimeout, first, idle, 0, stallDTLS, first},
		{"stalled handshake, auth deadline first", metrics.TransportDTLS, metrics.CloseAuthTimeout, 0, 0, auth, stallDTLS, auth},
		{"binding loop", metrics.TransportDTLS, metrics.CloseAuthTimeout, 0, 0, auth, func(t *testing.T, c net.Conn) net.Conn {
			return keepBusy(bindingRequest)(t, dtlsClient(t, c))
		}, auth},
	} {
		t.Run(string(tc.transport)+" "+tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ts := startTimeoutServer(t, tc.first, tc.idle, tc.auth)
				ln := map[metrics.Transport]*pipeListener{metrics.TransportTCP: ts.tcp, metrics.TransportTLS: ts.tls, metrics.TransportDTLS: ts.dtls}[tc.transport]
				start := time.Now()
				c := tc.act(t, ln.dial(t))
				closedAt := <-watchClose(c)
				if got := closedAt.Sub(start); got != tc.want {
					t.Fatalf("closed %v after the dial, want %v", got, tc.want)
				}
				synctest.Wait()
				if got := ts.closed(tc.transport, tc.reason); got != 1 {
					t.Fatalf("connections_closed{%s,%s} = %v, want 1", tc.transport, tc.reason, got)
				}
				if p := testutil.ToFloat64(ts.m.ConnectionsPending); p != 0 {
					t.Fatalf("pending connections %v after the close, want 0", p)
				}
			})
		})
	}
}

// answer writes the success response to a method that pion would write on
// c, as it does after an Allocate or a ConnectionBind succeeds.
func answer(t *testing.T, c *clientStreamConn, method stun.Method) {
	t.Helper()
	m := stun.MustBuild(stun.TransactionID, stun.NewType(method, stun.ClassSuccessResponse))
	if _, err := c.Write(m.Raw); err != nil {
		t.Fatal(err)
	}
}

// acceptStream is the relay's side of a client connection on the Server's
// TCP listener as pion holds it: it reads until the read fails and then
// closes the connection, as pion's read loop does.
func (ts *timeoutServer) acceptStream(t *testing.T) (client net.Conn, sc *clientStreamConn) {
	t.Helper()
	s, c := net.Pipe()
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
	l := ts.srv.listeners[0]
	ip, refused := ts.srv.conns.acquire(remote)
	if refused != "" {
		t.Fatalf("slot refused: %s", refused)
	}
	sc = newClientStreamConn(addrConn{Conn: s, local: ts.tcp.Addr(), remote: remote}, l, ip)
	go func() {
		buf := make([]byte, maxMessageSize)
		for {
			if _, err := sc.Read(buf); err != nil {
				_ = sc.Close()
				return
			}
		}
	}()
	t.Cleanup(func() { _ = c.Close() })
	return c, sc
}

// TestStreamTimeoutsAfterAllocation: once an Allocate (or an RFC 6062
// ConnectionBind) on a connection succeeds, the auth timeout no longer
// applies and the idle timeout rules; when the allocation ends while the
// connection stays open it is pending again, with a new auth deadline
// that a busy client does not move.
func TestStreamTimeoutsAfterAllocation(t *testing.T) {
	const (
		auth = time.Second
		idle = 10 * time.Minute
	)
	for _, method := range []stun.Method{stun.MethodAllocate, stun.MethodConnectionBind} {
		t.Run(method.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ts := startTimeoutServer(t, 0, idle, auth)
				start := time.Now()
				c, sc := ts.acceptStream(t)
				closed := watchClose(c)
				if _, err := c.Write(bindingRequest(0)); err != nil {
					t.Fatal(err)
				}
				// The relay waits in its next read, with the auth deadline,
				// when the success is written: it reads on with the idle
				// timeout from that deadline on.
				synctest.Wait()
				answer(t, sc, method)
				last := start.Add(auth)
				if p := testutil.ToFloat64(ts.m.ConnectionsPending); p != 0 {
					t.Fatalf("pending connections %v after the %s success, want 0", p, method)
				}
				time.Sleep(2500 * time.Millisecond) // well past the auth deadline
				synctest.Wait()
				if len(closed) != 0 || ts.closed(metrics.TransportTCP, metrics.CloseAuthTimeout) != 0 {
					t.Fatalf("connection closed past the auth deadline after a %s success", method)
				}
				if p := testutil.ToFloat64(ts.m.ConnectionsPending); p != 0 {
					t.Fatalf("pending connections %v with the allocation held, want 0", p)
				}
				if method == stun.MethodConnectionBind {
					// Raw peer data now: whatever the client sends reaches pion.
					if _, err := c.Write([]byte("still relaying")); err != nil {
						t.Fatalf("write on the data connection after the auth deadline: %v", err)
					}
					last = time.Now()
				}
				// Quiet from here: closed at the idle timeout, counted idle.
				if got := (<-closed).Sub(last); got != idle {
					t.Fatalf("closed %v after its read deadline was last set, want the idle timeout %v", got, idle)
				}
				synctest.Wait()
				if ts.closed(metrics.TransportTCP, metrics.CloseIdleTimeout) != 1 || ts.closed(metrics.TransportTCP, metrics.CloseAuthTimeout) != 0 {
					t.Fatalf("closed idle %v, auth %v times; want idle once", ts.closed(metrics.TransportTCP, metrics.CloseIdleTimeout), ts.closed(metrics.TransportTCP, metrics.CloseAuthTimeout))
				}
			})
		})
	}

	// The allocation ends (Refresh with lifetime 0, expiry) with the
	// connection open: it takes a pending slot back and gets auth from now,
	// however busy the client keeps it.
	t.Run("pending again", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ts := startTimeoutServer(t, 0, idle, auth)
			c, sc := ts.acceptStream(t)
			closed := watchClose(c)
			if _, err := c.Write(bindingRequest(0)); err != nil {
				t.Fatal(err)
			}
			answer(t, sc, stun.MethodAllocate)
			time.Sleep(time.Minute)
			ended := time.Now()
			sc.allocationEnded()
			if p := testutil.ToFloat64(ts.m.ConnectionsPending); p != 1 {
				t.Fatalf("pending connections %v after the allocation ended, want 1", p)
			}
			trickle(t, c, bindingRequest)
			if got := (<-closed).Sub(ended); got != auth {
				t.Fatalf("closed %v after the allocation ended, want the auth timeout %v", got, auth)
			}
			synctest.Wait()
			if got := ts.closed(metrics.TransportTCP, metrics.CloseAuthTimeout); got != 1 {
				t.Fatalf("connections_closed{tcp,auth_timeout} = %v, want 1", got)
			}
			if p := testutil.ToFloat64(ts.m.ConnectionsPending); p != 0 {
				t.Fatalf("pending connections %v after the close, want 0", p)
			}
		})
	})
}

// TestStreamReadWokenEarly: allocationEnded wakes the relay's waiting read
// (a read deadline of now) so that it takes up the new deadline. A reader
// that had already seen the change (it re-armed between the deadline
// change and the wake-up) must not take that wake-up for its deadline
// passing: the connection stays open until the deadline that applies.
// The wake-up is given here without a change behind it, as such a reader
// sees it.
func TestStreamReadWokenEarly(t *testing.T) {
	const auth = 20 * time.Second // before the 30 s idle limit of a connection without an allocation
	synctest.Test(t, func(t *testing.T) {
		ts := startTimeoutServer(t, 0, 10*time.Minute, auth)
		start := time.Now()
		c, sc := ts.acceptStream(t)
		closed := watchClose(c)
		if _, err := c.Write(bindingRequest(0)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the relay waits in its next read, until start+auth
		time.Sleep(time.Second)
		_ = sc.Conn.SetReadDeadline(time.Now()) // the wake-up
		synctest.Wait()
		if len(closed) != 0 {
			t.Fatal("a wake-up closed the connection before its deadline")
		}
		if got := (<-closed).Sub(start); got != auth {
			t.Fatalf("closed %v after accept, want the auth timeout %v", got, auth)
		}
		synctest.Wait()
		if ts.closed(metrics.TransportTCP, metrics.CloseAuthTimeout) != 1 || ts.closed(metrics.TransportTCP, metrics.CloseIdleTimeout) != 0 {
			t.Fatalf("closed auth %v, idle %v times; want auth once", ts.closed(metrics.TransportTCP, metrics.CloseAuthTimeout), ts.closed(metrics.TransportTCP, metrics.CloseIdleTimeout))
		}
	})
}
