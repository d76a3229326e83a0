package relay

import (
	"net"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/supernode/supernode/metrics"
)

func TestConnLimit(t *testing.T) {
	a := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1000}
	a6 := &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 1001} // the same IP, v4-mapped
	b := &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1002}
	other := &net.UnixAddr{Name: "x", Net: "unix"} // no IP: node-wide cap only
	ipA := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		name              string
		perIP, maxPending int
		addrs             []net.Addr
		want              []metrics.CloseReason // refusal per acquire, "" for accepted
	}{
		{"unlimited", 0, 0, []net.Addr{a, a, a, b, other}, []metrics.CloseReason{"", "", "", "", ""}},
		{"per ip", 2, 0, []net.Addr{a, a6, a, b, b, b}, []metrics.CloseReason{"", "", metrics.CloseLimit, "", "", metrics.CloseLimit}},
		{"node-wide", 0, 3, []net.Addr{a, b, other, a, b}, []metrics.CloseReason{"", "", "", metrics.ClosePendingLimit, metrics.ClosePendingLimit}},
		{"per ip first", 1, 1, []net.Addr{a, a, b}, []metrics.CloseReason{"", metrics.CloseLimit, metrics.ClosePendingLimit}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pending"})
			c := newConnLimit(tc.perIP, tc.maxPending, g)
			var held []netip.Addr
			for i, addr := range tc.addrs {
				ip, refused := c.acquire(addr)
				if refused != tc.want[i] {
					t.Fatalf("acquire %d (%v): refused %q, want %q", i, addr, refused, tc.want[i])
				}
				if refused == "" {
					held = append(held, ip)
				}
			}
			if _, n := c.counts(ipA); n != len(held) || promToFloat(g) != float64(len(held)) {
				t.Fatalf("pending %d, gauge %v, want %d", n, promToFloat(g), len(held))
			}
			for _, ip := range held {
				c.release(ip)
			}
			if perIP, n := c.counts(ipA); perIP != 0 || n != 0 || len(c.byIP) != 0 || promToFloat(g) != 0 {
				t.Fatalf("after releasing all: per-IP %d, pending %d, map %v, gauge %v", perIP, n, c.byIP, promToFloat(g))
			}
			// Every slot is free again.
			for i, addr := range tc.addrs {
				if _, refused := c.acquire(addr); refused != tc.want[i] {
					t.Fatalf("again, acquire %d: refused %q, want %q", i, refused, tc.want[i])
				}
			}
		})
	}
}

// TestConnLimitGroupsIPv6By64: the per-IP cap counts an IPv6 /64 as one
// source (a host holds a whole /64), as the per-source budget does.
func TestConnLimitGroupsIPv6By64(t *testing.T) {
	c := newConnLimit(2, 0, prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}))
	for i, a := range []string{"[2001:db8:1:2::1]:5000", "[2001:db8:1:2::ffff]:5000", "[2001:db8:1:2:aaaa::1]:5000"} {
		addr, err := net.ResolveTCPAddr("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		_, refused := c.acquire(addr)
		if want := i >= 2; (refused != "") != want {
			t.Fatalf("connection %d from the same /64: refused %q, want refused %v", i, refused, want)
		}
	}
	other, _ := net.ResolveTCPAddr("tcp", "[2001:db8:1:3::1]:5000")
	if _, refused := c.acquire(other); refused != "" {
		t.Fatalf("another /64 refused: %s", refused)
	}
}
