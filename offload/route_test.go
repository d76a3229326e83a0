package offload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Routes: the Go side resolves each binding's two routes at Bind time
// (lookupRoute) and the program acts on what it stored. These tests check
// both halves against the test namespace's route table.

// TestLookupRoute: what lookupRoute reads from the table for each kind of
// destination.
func TestLookupRoute(t *testing.T) {
	ns := newTestNetns(t)
	local := routeInfo{}
	cases := []struct {
		src, dst string
		want     routeInfo
		err      error  // an errno the lookup wraps
		errText  string // or text its error has
		note     string
	}{
		{"192.0.2.2", "192.0.2.200", routeInfo{uint32(ns.d0), 9000}, nil, "", "on-link, device MTU"},
		{"2001:db8::2", "2001:db8::200", routeInfo{uint32(ns.d0), 9000}, nil, "", "on-link v6"},
		{"", "192.0.2.200", routeInfo{uint32(ns.d0), 9000}, nil, "", "wildcard source"},
		{"192.0.2.2", "192.0.2.3", local, nil, "", "own address"},
		{"2001:db8::2", "2001:db8::3", local, nil, "", "own address v6"},
		{"127.0.0.2", "127.0.0.1", local, nil, "", "loopback"},
		{"::1", "::1", local, nil, "", "loopback v6"},
		{"192.0.2.2", "203.0.113.5", routeInfo{uint32(ns.d0), 576}, nil, "", "locked route MTU"},
		{"192.0.2.2", "203.0.114.5", routeInfo{uint32(ns.d0), 576}, nil, "", "unlocked route MTU"},
		{"2001:db8::2", "2001:db8:f::5", routeInfo{uint32(ns.d0), 1280}, nil, "", "locked route MTU v6"},
		{"2001:db8::2", "2001:db8:c::5", routeInfo{uint32(ns.d0), 1300}, nil, "", "unlocked route MTU v6"},
		{"192.0.2.2", "198.18.0.5", routeInfo{uint32(ns.m0), 1280}, nil, "", "small device MTU"},
		{"2001:db8::2", "2001:db8:e::5", routeInfo{uint32(ns.m0), 1280}, nil, "", "small device MTU v6"},
		{"192.0.2.2", "198.18.1.5", routeInfo{uint32(ns.m0), 1280}, nil, "", "route MTU above the device's"},
		{"192.0.2.2", "198.51.100.5", routeInfo{}, unix.EHOSTUNREACH, "", "unreachable"},
		{"2001:db8::2", "2001:db8:dead::5", routeInfo{}, unix.EHOSTUNREACH, "", "unreachable v6"},
		{"192.0.2.2", "198.51.101.5", routeInfo{}, unix.EINVAL, "", "blackhole"},
		{"192.0.2.2", "198.51.102.5", routeInfo{}, unix.EACCES, "", "prohibit"},
		{"192.0.2.2", "100.64.0.1", routeInfo{}, unix.ENETUNREACH, "", "no route"},
		{"2001:db8::2", "2001:db8:9::1", routeInfo{}, unix.ENETUNREACH, "", "no route v6"},
		{"192.0.2.2", "192.0.2.255", routeInfo{}, nil, "is not unicast", "broadcast"},
		{"192.0.2.99", "192.0.2.200", routeInfo{}, unix.ENETUNREACH, "", "source not ours"},
	}
	for _, c := range cases {
		t.Run(c.note, func(t *testing.T) {
			var src netip.Addr
			if c.src != "" {
				src = netip.MustParseAddr(c.src)
			}
			var got routeInfo
			var err error
			ns.do(t, func() { got, err = lookupRoute(src, netip.MustParseAddr(c.dst)) })
			switch {
			case c.err != nil:
				if !errors.Is(err, c.err) {
					t.Errorf("lookupRoute(%s, %s) = %+v, %v; want %v", c.src, c.dst, got, err, c.err)
				}
			case c.errText != "":
				if err == nil || !strings.Contains(err.Error(), c.errText) {
					t.Errorf("lookupRoute(%s, %s) = %+v, %v; want an error with %q", c.src, c.dst, got, err, c.errText)
				}
			case err != nil || got != c.want:
				t.Errorf("lookupRoute(%s, %s) = %+v, %v; want %+v", c.src, c.dst, got, err, c.want)
			}
		})
	}
}

// TestRouteMetricMTU: RTA_METRICS as the kernel nests it, and input that
// is cut or lies about its lengths.
func TestRouteMetricMTU(t *testing.T) {
	attr := func(typ uint16, v []byte, declared int) []byte {
		b := make([]byte, 4, 8+len(v))
		binary.NativeEndian.PutUint16(b[0:], uint16(declared))
		binary.NativeEndian.PutUint16(b[2:], typ)
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	u32 := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	lock := attr(unix.RTAX_LOCK, u32(1<<unix.RTAX_MTU), 8)
	mtu := attr(unix.RTAX_MTU, u32(576), 8)
	for _, c := range []struct {
		name string
		b    []byte
		want uint32
	}{
		{"empty", nil, 0},
		{"mtu alone", mtu, 576},
		{"after the lock bits", append(append([]byte{}, lock...), mtu...), 576},
		{"after an odd-length attribute", append(attr(99, []byte{1, 2, 3}, 7), mtu...), 576},
		{"none", lock, 0},
		{"mtu cut short", attr(unix.RTAX_MTU, []byte{1, 2}, 6), 0},
		{"length past the end", attr(unix.RTAX_MTU, u32(576), 12), 0},
		{"length below a header", append(attr(1, nil, 2), mtu...), 0},
		{"three bytes", []byte{8, 0, 2}, 0},
	} {
		if got := routeMetricMTU(c.b); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}

// TestLocalDestination: an entry whose destination is this host (ifindex
// 0) is delivered locally when the packet arrived on loopback, where the
// host's own packets arrive, and is left to user space (counted
// pass_route) when the same packet arrives on another interface: a packet
// from one of the host's own addresses would be a martian there.
func TestLocalDestination(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			h := newHarness(t)
			// Everything on d0's addresses, all of them this host's.
			local := Binding{Alloc: 50, Client: ap("192.0.2.1:5050"), Server: ap("192.0.2.1:3478"),
				Relay: ap("192.0.2.2:50050"), Peer: ap("192.0.2.3:6050"), Channel: 0x4050}
			// A remote client whose peer is on this host.
			localPeer := Binding{Alloc: 51, Client: ap("192.0.2.151:5051"), Server: ap("192.0.2.1:3478"),
				Relay: ap("192.0.2.2:50051"), Peer: ap("192.0.2.3:6051"), Channel: 0x4051}
			if v6 {
				local = Binding{Alloc: 50, Client: ap("[2001:db8::1]:5050"), Server: ap("[2001:db8::1]:3478"),
					Relay: ap("[2001:db8::2]:50050"), Peer: ap("[2001:db8::3]:6050"), Channel: 0x4050}
				localPeer = Binding{Alloc: 51, Client: ap("[2001:db8::151]:5051"), Server: ap("[2001:db8::1]:3478"),
					Relay: ap("[2001:db8::2]:50051"), Peer: ap("[2001:db8::3]:6051"), Channel: 0x4051}
			}
			h.addBind(local, localPeer)
			data := testData(21, 4)
			lo := func(f frame) frame { f.mac = [6]byte{}; return f }
			d0 := func(f frame) frame { f.mac = d0MAC; return f }

			c := clientFrame(local, rawChannelData(local.Channel, len(data), data, 3))
			p := peerFrame(local, data)
			h.expectPassed(d0(c).bytes(), h.ns.d0, Counters{PassRoute: 1})
			h.expectPassed(d0(p).bytes(), h.ns.d0, Counters{PassRoute: 1})
			before := h.o.Counters()
			h.expectRelayed(lo(c).bytes(), 1, actOK, toPeer(local, lo(c), data).bytes())
			h.expectRelayed(lo(p).bytes(), 1, actOK, toClient(local, local.Server.Addr(), lo(p), data).bytes())
			h.expectCounters(before, Counters{ToPeerPackets: 1, ToPeerBytes: 21, ToClientPackets: 1, ToClientBytes: 21})

			// The remote client's ChannelData arrives on d0: up. Its
			// local peer's datagram arrives on loopback and goes out d0.
			c = clientFrame(localPeer, rawChannelData(localPeer.Channel, len(data), data, 3))
			h.expectPassed(c.bytes(), h.ns.d0, Counters{PassRoute: 1})
			p = lo(peerFrame(localPeer, data))
			h.expectRelayed(p.bytes(), 1, actRedirect, toClient(localPeer, localPeer.Server.Addr(), p, data).bytes())
		})
	}
}

// TestRouteMTU: the route's MTU, as Bind read it (a route's mtu metric,
// locked or not; else the device's; the smaller of the two), bounds the
// IP packet that leaves: one just within is relayed, one byte over is left
// to user space, counted pass_mtu.
func TestRouteMTU(t *testing.T) {
	h := newHarness(t)
	type dir int
	const (
		c2p dir = iota
		p2c
		onePass
	)
	peer := func(id uint32, p string) Binding {
		b := remote4
		if netip.MustParseAddrPort(p).Addr().Is6() {
			b = remote6
		}
		b.Alloc, b.Channel, b.Peer = id, 0x4000+uint16(id), ap(p)
		b.Relay = netip.AddrPortFrom(b.Relay.Addr(), 50000+uint16(id))
		return b
	}
	client := func(id uint32, c string) Binding {
		b := peer(id, "192.0.2.200:6000")
		if netip.MustParseAddrPort(c).Addr().Is6() {
			b = peer(id, "[2001:db8::200]:6000")
		}
		b.Client = ap(c)
		return b
	}
	// One pass toward a client behind m0.
	opA, opB := onePassPair(false)
	opB.Client = ap("198.18.0.8:5011")
	h.addBind(opA, opB)
	cases := []struct {
		name string
		b    Binding
		d    dir
		max  int // the most data that fits
	}{
		{"locked route MTU 576", peer(60, "203.0.113.5:6000"), c2p, 576 - 28},
		{"unlocked route MTU 576", peer(61, "203.0.114.5:6000"), c2p, 576 - 28},
		{"locked route MTU 1280 v6", peer(62, "[2001:db8:f::5]:6000"), c2p, 1280 - 48},
		{"unlocked route MTU 1300 v6", peer(63, "[2001:db8:c::5]:6000"), c2p, 1300 - 48},
		{"device MTU 1280", peer(64, "198.18.0.5:6000"), c2p, 1280 - 28},
		{"device MTU 1280 v6", peer(65, "[2001:db8:e::5]:6000"), c2p, 1280 - 48},
		{"route MTU above the device's", peer(66, "198.18.1.5:6000"), c2p, 1280 - 28},
		// Toward a client: 4 bytes of header and the data padded to 4.
		{"device MTU toward a client", client(67, "198.18.0.7:5000"), p2c, 1280 - 28 - 4},
		{"device MTU toward a client v6", client(68, "[2001:db8:e::7]:5000"), p2c, 1280 - 48 - 4},
		{"route MTU toward a client", client(69, "203.0.113.7:5000"), p2c, 576 - 28 - 4},
		{"one pass, device MTU", opA, onePass, 1280 - 28 - 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			if c.d != onePass {
				h.addBind(c.b)
			}
			for _, n := range []int{c.max, c.max + 1} {
				data := testData(n, 1)
				var in, want frame
				switch c.d {
				case c2p:
					in = clientFrame(c.b, rawChannelData(c.b.Channel, n, data, 0))
					want = toPeer(c.b, in, data)
				case p2c:
					in = peerFrame(c.b, data)
					want = toClient(c.b, c.b.Server.Addr(), in, data)
				case onePass:
					in = clientFrame(opA, rawChannelData(opA.Channel, n, data, 0))
					want = toClient(opB, opB.Server.Addr(), in, data)
				}
				if n == c.max {
					h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, want.bytes())
				} else {
					h.expectPassed(in.bytes(), h.ns.d0, Counters{PassMTU: 1})
				}
			}
		})
	}
}

// TestBindUnroutable: a binding one of whose routes the table does not
// give as unicast (unreachable, blackhole, prohibit, no route at all,
// broadcast) is refused by Bind with ErrNoRoute (an ErrUnoffloadable): nothing is
// installed, and its packets go up untouched and uncounted (they match no
// entry). User space then relays them, or its send fails, as the route
// says.
func TestBindUnroutable(t *testing.T) {
	h := newHarness(t)
	b := remote4
	h.alloc(b.Alloc, 0)
	for _, c := range []struct {
		name   string
		mutate func(*Binding)
	}{
		{"unreachable peer", func(b *Binding) { b.Peer = ap("198.51.100.5:6000") }},
		{"blackhole peer", func(b *Binding) { b.Peer = ap("198.51.101.5:6000") }},
		{"prohibited peer", func(b *Binding) { b.Peer = ap("198.51.102.5:6000") }},
		{"no route to the peer", func(b *Binding) { b.Peer = ap("100.64.0.1:6000") }},
		{"broadcast peer", func(b *Binding) { b.Peer = ap("192.0.2.255:6000") }},
		{"unreachable client", func(b *Binding) { b.Client = ap("198.51.100.6:5000") }},
		{"unreachable peer v6", func(b *Binding) {
			*b = remote6
			b.Alloc = remote4.Alloc
			b.Peer = ap("[2001:db8:dead::5]:6000")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			x := b
			c.mutate(&x)
			if err := h.tryBind(x); !errors.Is(err, ErrNoRoute) || !errors.Is(err, ErrUnoffloadable) {
				t.Errorf("Bind: %v, want ErrNoRoute, an ErrUnoffloadable", err)
			}
			if n := h.o.Bindings(); n != 0 {
				t.Errorf("%d bindings installed", n)
			}
			m, err := h.o.MapEntries()
			if err != nil {
				t.Fatal(err)
			}
			if m["channels"] != 0 || m["peers"] != 0 {
				t.Errorf("map entries %v, want no channels or peers", m)
			}
			data := testData(8, 0)
			h.expectPassed(clientFrame(x, rawChannelData(x.Channel, 8, data, 0)).bytes(), h.ns.d0, Counters{})
			h.expectPassed(peerFrame(x, data).bytes(), h.ns.d0, Counters{})
		})
	}
}
