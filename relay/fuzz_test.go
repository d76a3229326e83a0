package relay

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/metrics"
)

// discardReplier records the error codes of responses the inspector sends.
type discardReplier struct {
	n     int
	codes []int
	last  []byte
	rm    reqMemo
}

func (d *discardReplier) memo() *reqMemo { return &d.rm }

func (d *discardReplier) reply(b []byte, _ net.Addr) error {
	d.n++
	d.codes = append(d.codes, errorCode(b))
	d.last = append([]byte(nil), b...)
	return nil
}

// newInspectListener builds the per-socket state the inspector runs with,
// without any socket.
func newInspectListener(t testing.TB, draining bool) *listener {
	p, err := NewPolicy(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		cfg: Config{
			Realm: "fuzz",
			Credentials: allocation.NewStore("fuzz", allocation.Credentials{
				Users: map[string]string{"alice": "pw"}, Secrets: []string{"s1", "s2"},
			}, nil),
			Table:   allocation.NewTable(allocation.TableConfig{}),
			Policy:  p,
			MinPort: 49152, MaxPort: 65535,
			MaxPermissions: 3, MaxChannels: 2, MaxRequestPeers: 2,
			Now: time.Now,
		},
		m:        metrics.New("test"),
		nonces:   testNonces,
		records:  map[string]*record{},
		byClient: map[allocation.Key]*record{},
	}
	s.log = slog.New(slog.DiscardHandler)
	s.logs = newLogLimiter(s.m.LogSuppressed)
	s.addrs.relay4 = netip.MustParseAddr("127.0.0.1")
	s.draining.Store(draining)
	return s.newListener(0, "udp")
}

// testNonces is shared by every inspect listener of a test, so that one
// seed message (with one nonce) is valid on all of them.
var testNonces = newNonces(10*time.Minute, time.Now)

// seedMessages are the fuzz seeds: authenticated requests from 127.0.0.1
// (with a nonce valid for it), a Binding, ChannelData and garbage.
func seedMessages(t testing.TB) [][]byte {
	nonce := testNonces.issue(netip.MustParseAddr("127.0.0.1"))
	key := longTermKeyForTest("alice", "fuzz", "pw")
	var out [][]byte
	build := func(setters ...stun.Setter) {
		m, err := stun.Build(setters...)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Raw)
	}
	peer := &stun.XORMappedAddress{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	peerAttr := stun.RawAttribute{Type: stun.AttrXORPeerAddress}
	tmp, _ := stun.Build(stun.TransactionID, stun.BindingRequest, peer)
	if v, err := tmp.Get(stun.AttrXORMappedAddress); err == nil {
		peerAttr.Value = v
	}
	for _, method := range []stun.Method{stun.MethodAllocate, stun.MethodCreatePermission, stun.MethodChannelBind, stun.MethodConnect} {
		build(stun.TransactionID, stun.NewType(method, stun.ClassRequest), &peerAttr,
			stun.NewUsername("alice"), stun.NewRealm("fuzz"), stun.NewNonce(nonce), stun.MessageIntegrity(key))
	}
	build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	cd := make([]byte, 8)
	binary.BigEndian.PutUint16(cd[0:], 0x4001)
	binary.BigEndian.PutUint16(cd[2:], 4)
	out = append(out, cd, []byte{0xff, 0xff, 0xff, 0xff}, make([]byte, 20))
	return out
}

func longTermKeyForTest(u, r, p string) []byte {
	return stun.NewLongTermIntegrity(u, r, p)
}

// FuzzInspect feeds arbitrary client bytes through the header checks, the
// peer-policy and drain paths, and the stream framer: none may panic.
func FuzzInspect(f *testing.F) {
	for _, s := range seedMessages(f) {
		f.Add(s, false)
		f.Add(s, true)
	}
	normal, draining := newInspectListener(f, false), newInspectListener(f, true)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	f.Fuzz(func(t *testing.T, b []byte, drain bool) {
		l := normal
		if drain {
			l = draining
		}
		r := &discardReplier{}
		_, _ = l.inspect(b, src, r)
		if n, err := frameLen(b); err == nil && n > len(b) {
			t.Fatalf("frameLen %d > input %d", n, len(b))
		}
		_ = errorCode(append(make([]byte, 0, len(b)), b...))
		if len(b) > 0 {
			_, _ = decodeXORAddr(b, [stun.TransactionIDSize]byte{})
		}
		if got := testingToFloat(l); got != 0 {
			t.Fatalf("inspect panicked %v times on %x", got, b)
		}
	})
}

func TestInspectDeniedPeerGets403(t *testing.T) {
	udp := newInspectListener(t, false)
	tcp := udp.srv.newListener(1, "tcp") // RFC 6062 Connect needs a stream
	msgs := seedMessages(t)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	cases := []struct {
		method string
		l      *listener
		msg    []byte
	}{{"create_permission", udp, msgs[1]}, {"channel_bind", udp, msgs[2]}, {"connect", tcp, msgs[3]}}
	for _, tc := range cases {
		r := &discardReplier{}
		if _, pass := tc.l.inspect(tc.msg, src, r); pass || r.n != 1 || r.codes[0] != 437 {
			t.Errorf("%s without an allocation: pass=%v codes=%v, want consumed with one 437", tc.method, pass, r.codes)
		}
	}
	for _, l := range []*listener{udp, tcp} {
		l.srv.cfg.Table.Commit(l.key(src), "alice", string(l.transport), nil)
	}
	for _, tc := range cases {
		r := &discardReplier{}
		if _, pass := tc.l.inspect(tc.msg, src, r); pass || r.n != 1 || r.codes[0] != 403 {
			t.Errorf("%s to 127.0.0.1: pass=%v codes=%v, want consumed with one 403", tc.method, pass, r.codes)
		}
	}
	// Over UDP, RFC 6062 Connect is refused outright.
	r := &discardReplier{}
	if _, pass := udp.inspect(msgs[3], src, r); pass || r.n != 1 || r.codes[0] != 400 {
		t.Errorf("connect over udp: pass=%v codes=%v, want one 400", pass, r.codes)
	}
	l := udp
	// Allocate is not a peer request: it goes to pion.
	if _, pass := l.inspect(msgs[0], src, &discardReplier{}); !pass {
		t.Error("Allocate was consumed by the inspector")
	}
	// While draining, a new authenticated Allocate is refused here.
	d := newInspectListener(t, true)
	r = &discardReplier{}
	if _, pass := d.inspect(msgs[0], src, r); pass || r.n != 1 || r.codes[0] != 508 {
		// msgs[0] carries valid credentials, so it is refused here, signed.
		t.Errorf("draining node: codes %v, want one 508 for a new Allocate", r.codes)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name       string
		b          []byte
		isSTUN, ok bool
	}{
		{"short", []byte{0, 1}, false, false},
		{"binding", mustBuild(t, stun.TransactionID, stun.BindingRequest), true, true},
		{"bad cookie", func() []byte { b := mustBuild(t, stun.TransactionID, stun.BindingRequest); b[4] = 0; return b }(), true, false},
		{"length lies", func() []byte { b := mustBuild(t, stun.TransactionID, stun.BindingRequest); b[3] = 8; return b }(), true, false},
		{"channel data", []byte{0x40, 0x00, 0x00, 0x02, 1, 2}, false, true},
		{"channel data too long", []byte{0x40, 0x00, 0x00, 0x09, 1, 2}, false, false},
		{"RFC 5766 channel", []byte{0x5f, 0x11, 0x00, 0x00}, false, true},
		{"garbage", []byte{0xde, 0xad, 0xbe, 0xef, 0, 0}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isSTUN, ok := classify(tc.b)
			if isSTUN != tc.isSTUN || ok != tc.ok {
				t.Fatalf("classify = (%v, %v), want (%v, %v)", isSTUN, ok, tc.isSTUN, tc.ok)
			}
		})
	}
}

func mustBuild(t *testing.T, setters ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func testingToFloat(l *listener) float64 {
	return promToFloat(l.srv.m.HandlerPanics)
}
