package endpoint

import (
	"bytes"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/supernode/supernode/cluster"
)

var (
	addr     = netip.MustParseAddr
	ext4     = addr("203.0.113.7")
	ext6     = addr("2001:db8::7")
	relay4   = addr("10.0.0.5")
	relay6   = addr("fd00::5")
	noneAddr = netip.AddrPort{}
)

func TestAdvertised(t *testing.T) {
	for _, tc := range []struct {
		name      string
		a         Addresses
		listen    string
		want      netip.AddrPort
		advertise bool
	}{
		{"external beats a specific listen IP", Addresses{External: []netip.Addr{ext4}}, "10.0.0.9:3478",
			netip.MustParseAddrPort("203.0.113.7:3478"), true},
		{"external of the listener's family only", Addresses{External: []netip.Addr{ext6}}, "10.0.0.9:3478",
			netip.MustParseAddrPort("10.0.0.9:3478"), true},
		{"specific listen IP", Addresses{Relay: []netip.Addr{relay4}}, "127.0.0.1:3478",
			netip.MustParseAddrPort("127.0.0.1:3478"), true},
		{"IPv4-mapped listen IP unmapped", Addresses{}, "[::ffff:127.0.0.1]:3478",
			netip.MustParseAddrPort("127.0.0.1:3478"), true},
		{"wildcard: relay IP of the family", Addresses{Relay: []netip.Addr{relay4, relay6}}, "[::]:3479",
			netip.MustParseAddrPort("[fd00::5]:3479"), true},
		{"wildcard: external before relay", Addresses{External: []netip.Addr{ext4}, Relay: []netip.Addr{relay4}}, "0.0.0.0:3478",
			netip.MustParseAddrPort("203.0.113.7:3478"), true},
		{"wildcard with nothing of its family", Addresses{Relay: []netip.Addr{relay4}}, "[::]:3478", noneAddr, false},
		{"public host is not an IP, not used", Addresses{PublicHost: "turn.example", Relay: []netip.Addr{relay4}}, "0.0.0.0:3478",
			netip.MustParseAddrPort("10.0.0.5:3478"), true},
		{"not an address", Addresses{Relay: []netip.Addr{relay4}}, "nonsense", noneAddr, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.a.Advertised(tc.listen)
			if got != tc.want || ok != tc.advertise {
				t.Fatalf("Advertised(%q) = %v, %v; want %v, %v", tc.listen, got, ok, tc.want, tc.advertise)
			}
		})
	}
}

func TestURLs(t *testing.T) {
	a := Addresses{Relay: []netip.Addr{relay4}, Listens: map[string][]string{
		"udp":  {"0.0.0.0:3478", "[::]:3478", "127.0.0.1:3478"},
		"tls":  {"0.0.0.0:5349"},
		"dtls": {"0.0.0.0:5350"},
	}}
	var logs bytes.Buffer
	got := a.URLs(slog.New(slog.NewTextHandler(&logs, nil)))
	want := []string{"stun:10.0.0.5:3478", "turn:10.0.0.5:3478?transport=udp", "turn:10.0.0.5:3478?transport=tcp",
		"stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp",
		"turns:10.0.0.5:5349?transport=tcp"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("URLs:\n got %q\nwant %q", got, want)
	}
	// The IPv6 wildcard has no IPv6 address to advertise: left out, said.
	if !strings.Contains(logs.String(), "listener left out of /v1/ice-servers") || !strings.Contains(logs.String(), "[::]:3478") ||
		!strings.Contains(logs.String(), "set --public-host") {
		t.Fatalf("log: %s", logs.String())
	}
	if h := a.Host(); h != "10.0.0.5" {
		t.Fatalf("Host %q", h)
	}

	// --public-host names every listener, in either family; duplicates go.
	a.PublicHost = "turn.example"
	got = a.URLs(slog.New(slog.DiscardHandler))
	want = []string{"stun:turn.example:3478", "turn:turn.example:3478?transport=udp", "turn:turn.example:3478?transport=tcp",
		"turns:turn.example:5349?transport=tcp"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("URLs with --public-host:\n got %q\nwant %q", got, want)
	}
	if h := a.Host(); h != "turn.example" {
		t.Fatalf("Host %q", h)
	}

	// IPv6 hosts are bracketed in URLs, bare in Host.
	a = Addresses{Listens: map[string][]string{"tls": {"[::1]:5349"}}}
	if got := a.URLs(slog.New(slog.DiscardHandler)); !reflect.DeepEqual(got, []string{"turns:[::1]:5349?transport=tcp"}) {
		t.Fatalf("IPv6 URLs %q", got)
	}
	if h := a.Host(); h != "::1" {
		t.Fatalf("Host %q", h)
	}
	if h := (Addresses{}).Host(); h != "" {
		t.Fatalf("Host of nothing %q", h)
	}
}

func TestFill(t *testing.T) {
	a := Addresses{External: []netip.Addr{ext4}, Relay: []netip.Addr{relay4, relay6}, Listens: map[string][]string{
		"udp":  {"0.0.0.0:3478", "[::]:3479", "0.0.0.0:3480"},
		"tls":  {"0.0.0.0:5349", "0.0.0.0:5351"},
		"dtls": {"[::]:5350"},
	}}
	m := cluster.Meta{Zone: "kept"}
	a.Fill(&m)
	want := cluster.Meta{Zone: "kept", Host: "203.0.113.7",
		Listen4: netip.MustParseAddrPort("203.0.113.7:3478"), Listen6: netip.MustParseAddrPort("[fd00::5]:3479"),
		Ports: cluster.Ports{UDP: 3478, TLS: 5349, DTLS: 5350}, Relay: []netip.Addr{ext4, relay4, relay6}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("Fill:\n got %+v\nwant %+v", m, want)
	}
	// The node's URLs and what it gossips agree: a member builds the same
	// URLs from the metadata as the node hands out itself.
	a = Addresses{Relay: []netip.Addr{relay4}, Listens: map[string][]string{"udp": {"0.0.0.0:3478"}, "tls": {"0.0.0.0:5349"}}}
	m = cluster.Meta{}
	a.Fill(&m)
	if own, member := a.URLs(slog.New(slog.DiscardHandler)), MemberURLs(m); !reflect.DeepEqual(own, member) {
		t.Fatalf("own URLs %q, a member's view of them %q", own, member)
	}
}

func TestMemberURLs(t *testing.T) {
	if got := MemberURLs(cluster.Meta{Ports: cluster.Ports{UDP: 3478}}); got != nil {
		t.Fatalf("a member without a host: %q", got)
	}
	got := MemberURLs(cluster.Meta{Host: "2001:db8::1", Ports: cluster.Ports{TLS: 443, DTLS: 444}})
	if want := []string{"turns:[2001:db8::1]:443?transport=tcp"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestCertName(t *testing.T) {
	for host, want := range map[string]string{
		"turn.example": "turn.example", "127.0.0.1": "", "::1": "", "": "", strings.Repeat("a", 254): "",
	} {
		if got := CertName(host); got != want {
			t.Errorf("CertName(%q) = %q, want %q", host, got, want)
		}
	}
}

func TestValidHost(t *testing.T) {
	for h, want := range map[string]bool{
		"turn.example.com": true, "turn.example.com.": true, "a-b.c": true, "192.0.2.1": true, "2001:db8::1": true,
		"turn.example.com:443": false, "[2001:db8::1]": false, "bad_name.example": false, "-a.example": false,
		"a..b": false, "": false, strings.Repeat("a", 64) + ".example": false, strings.Repeat("a.", 127) + "ab": false,
	} {
		if got := ValidHost(h); got != want {
			t.Errorf("ValidHost(%q) = %v, want %v", h, got, want)
		}
	}
}
