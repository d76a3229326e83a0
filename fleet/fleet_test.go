package fleet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/endpoint"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/relay"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// member is one node of a test fleet: a real relay on a loopback UDP
// socket and its membership.
type member struct {
	f     *Fleet
	m     *metrics.Metrics
	relay *relay.Server
	udp   netip.AddrPort // the relay's client-facing listener
	urls  []string
}

// startMember starts a relay and its membership; join is the gossip
// address of a member to join ("" starts a fleet), gossip "" a fleet of
// one. addrs are the addresses advertised; without a UDP listener, the
// relay's own socket is advertised, and without relay IPs, 127.0.0.1.
func startMember(t *testing.T, id, gossip, join string, addrs endpoint.Addresses) *member {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	policy, err := relay.NewPolicy(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mb := &member{m: metrics.New("test"), udp: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
	mb.relay, err = relay.New(relay.Config{Listeners: []relay.Listener{{Transport: "udp", PacketConn: pc}}, Realm: "test",
		Credentials: allocation.NewStore("test", allocation.Credentials{Secrets: []string{"s"}}, nil),
		Table:       allocation.NewTable(allocation.TableConfig{}), Policy: policy, Metrics: mb.m,
		RelayIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mb.relay.Close(); _ = pc.Close() })
	if addrs.Listens == nil {
		addrs.Listens = map[string][]string{}
	}
	if _, ok := addrs.Listens["udp"]; !ok {
		addrs.Listens["udp"] = []string{mb.udp.String()}
	}
	if addrs.Relay == nil {
		addrs.Relay = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	cfg := Config{NodeID: id, Gossip: gossip, Zone: "z1", Capacity: 1, Version: "test", RelayPorts: [2]int{49152, 65535}, Metrics: mb.m}
	if join != "" {
		cfg.Join = []string{join}
	}
	mb.f = New(cfg)
	mb.urls = addrs.URLs(slog.New(slog.DiscardHandler))
	if err := mb.f.Start(mb.relay, addrs, mb.urls); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mb.f.Close)
	return mb
}

// startFleet starts n members on loopback and waits until each sees all.
func startFleet(t *testing.T, n int, addrs func(i int) endpoint.Addresses) []*member {
	t.Helper()
	var ms []*member
	for i := range n {
		join := ""
		if i > 0 {
			join = ms[0].f.Cluster().Addr()
		}
		var a endpoint.Addresses
		if addrs != nil {
			a = addrs(i)
		}
		ms = append(ms, startMember(t, fmt.Sprintf("node-%d", i), "127.0.0.1:0", join, a))
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		all := true
		for _, mb := range ms {
			all = all && len(mb.f.Members()) == n
		}
		if all {
			return ms
		}
		if time.Now().After(deadline) {
			t.Fatalf("members did not see each other in 30s")
		}
	}
}

// callOn is a call id that f places on member id.
func callOn(t *testing.T, f *Fleet, id string) string {
	t.Helper()
	for i := range 1000 {
		call := fmt.Sprintf("call-%d", i)
		if o, _ := f.Cluster().Owner(call, ""); o.ID == id {
			return call
		}
	}
	t.Fatalf("no call placed on %s in 1000 tries", id)
	return ""
}

func callUser(t *testing.T, call, node string) string {
	t.Helper()
	id, err := cluster.CallUser(call, "", node, "alice")
	if err != nil {
		t.Fatal(err)
	}
	return "1900000000:" + id
}

func client(port int) net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port} }

func TestRedirect(t *testing.T) {
	ms := startFleet(t, 2, nil)
	a, b := ms[0], ms[1]
	there, here := callOn(t, a.f, "node-1"), callOn(t, a.f, "node-0")
	for _, tc := range []struct {
		name     string
		user     string
		redirect bool
	}{
		{"not a call", "1900000000:alice", false},
		{"a static user", "alice", false},
		{"placed on the other member", callUser(t, here, "node-1"), true},
		{"placed here", callUser(t, there, "node-0"), false},
		{"placed on a member that is gone", callUser(t, there, "node-9"), false},
		{"not placed, owned by the other member", callUser(t, there, ""), true},
		{"not placed, owned here", callUser(t, here, ""), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(a.m.Redirects)
			alt, ok := a.f.Redirect(tc.user, client(40000), "udp")
			if ok != tc.redirect {
				t.Fatalf("redirect %v (%+v), want %v", ok, alt, tc.redirect)
			}
			if !ok {
				return
			}
			if alt.Server != b.udp || alt.Domain != "" {
				t.Fatalf("alternate %+v, want node-1's %v and no domain (its host is an IP)", alt, b.udp)
			}
			if got := testutil.ToFloat64(a.m.Redirects) - before; got != 1 {
				t.Fatalf("redirects counted %v, want 1", got)
			}
			// The same client sent back (a member whose view differs) is
			// served here; another client of the call is still redirected.
			if _, ok := a.f.Redirect(tc.user, client(40000), "udp"); ok {
				t.Fatal("the same client redirected twice")
			}
			if _, ok := a.f.Redirect(tc.user, client(40001), "tcp"); !ok {
				t.Fatal("the call's other leg was not redirected")
			}
		})
	}
	// Families and transports the owner has no listener for.
	user := callUser(t, there, "node-1")
	if alt, ok := a.f.Redirect(user, &net.UDPAddr{IP: net.IPv6loopback, Port: 40002}, "udp"); ok {
		t.Fatalf("IPv6 client sent to %v: node-1 has no IPv6 listener", alt)
	}
	if alt, ok := a.f.Redirect(user, client(40003), "tls"); ok {
		t.Fatalf("TLS client sent to %v: node-1 has no TLS listener", alt)
	}
	if _, ok := a.f.Redirect(user, &net.UnixAddr{Name: "@x", Net: "unix"}, "udp"); ok {
		t.Fatal("a client without an IP address redirected")
	}
}

func TestRedirectWhileDraining(t *testing.T) {
	ms := startFleet(t, 2, nil)
	a, b := ms[0], ms[1]
	here := callOn(t, a.f, "node-0")
	a.f.Drain(false)
	if !a.relay.Draining() || !a.f.meta(a.f.state.Load()).Draining {
		t.Fatal("the drain is not in the gossip")
	}
	// Drain, don't drop: calls placed here, or not placed, go to the
	// member placement picks without this node.
	for _, user := range []string{callUser(t, here, "node-0"), callUser(t, here, "")} {
		if alt, ok := a.f.Redirect(user, client(40010), "udp"); !ok || alt.Server != b.udp {
			t.Fatalf("%s while draining: %+v %v, want node-1", user, alt, ok)
		}
	}
	if err := a.f.Undrain(); err != nil {
		t.Fatal(err)
	}
	if a.relay.Draining() || a.f.meta(a.f.state.Load()).Draining {
		t.Fatal("the cancelled drain is still in the gossip")
	}
	if _, ok := a.f.Redirect(callUser(t, here, "node-0"), client(40011), "udp"); ok {
		t.Fatal("redirected after Undrain")
	}

	// A draining member is not redirected to: the call is served here.
	b.f.Drain(false)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m, ok := a.f.Cluster().Member("node-1"); ok && m.Meta.Draining {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node-0 did not hear of node-1's drain")
		}
	}
	there := callOn(t, a.f, "node-0") // every call is node-0's now
	if alt, ok := a.f.Redirect(callUser(t, there, "node-1"), client(40012), "udp"); ok {
		t.Fatalf("redirected to a draining member: %+v", alt)
	}
}

// TestRedirectPerTransport: a client is sent to the owner's listener for
// its transport, with the owner's --public-host as the name its TLS or
// DTLS certificate is checked against.
func TestRedirectPerTransport(t *testing.T) {
	ms := startFleet(t, 2, func(i int) endpoint.Addresses {
		a := endpoint.Addresses{Listens: map[string][]string{
			"tls": {fmt.Sprintf("127.0.0.1:%d", 5349+i)}, "dtls": {fmt.Sprintf("127.0.0.1:%d", 6349+i)}}}
		if i == 1 {
			a.PublicHost = "b.fleet.test"
		}
		return a
	})
	a, b := ms[0], ms[1]
	user := callUser(t, callOn(t, a.f, "node-1"), "node-1")
	for transport, port := range map[string]uint16{"tls": 5350, "dtls": 6350, "tcp": b.udp.Port()} {
		alt, ok := a.f.Redirect(user, client(int(41000+port)), transport)
		if want := netip.AddrPortFrom(b.udp.Addr(), port); !ok || alt.Server != want || alt.Domain != "b.fleet.test" {
			t.Errorf("%s: %+v %v, want %v and domain b.fleet.test", transport, alt, ok, want)
		}
	}
	// Placed the other way, the owner's host is an IP: no domain.
	user = callUser(t, callOn(t, b.f, "node-0"), "node-0")
	if alt, ok := b.f.Redirect(user, client(42000), "tls"); !ok || alt.Domain != "" || alt.Server.Port() != 5349 {
		t.Errorf("to node-0: %+v %v", alt, ok)
	}
}

func TestAlternateFor(t *testing.T) {
	m := cluster.Meta{Listen4: netip.MustParseAddrPort("192.0.2.1:3478"), Listen6: netip.MustParseAddrPort("[2001:db8::1]:3478"),
		Ports: cluster.Ports{UDP: 3478, TLS: 5349}}
	for _, tc := range []struct {
		transport string
		v6        bool
		want      string
	}{
		{"udp", false, "192.0.2.1:3478"},
		{"tcp", true, "[2001:db8::1]:3478"},
		{"tls", false, "192.0.2.1:5349"},
		{"tls", true, "[2001:db8::1]:5349"},
		{"dtls", false, ""},
		{"sctp", false, ""},
	} {
		got, ok := alternateFor(m, tc.transport, tc.v6)
		if (tc.want == "") == ok || (ok && got.String() != tc.want) {
			t.Errorf("%s v6=%v: %v %v, want %q", tc.transport, tc.v6, got, ok, tc.want)
		}
	}
	if _, ok := alternateFor(cluster.Meta{Listen4: m.Listen4}, "udp", true); ok {
		t.Error("an IPv6 client sent to an IPv4-only member")
	}
}

func TestPlace(t *testing.T) {
	ms := startFleet(t, 2, nil)
	a, b := ms[0], ms[1]
	placements := func(result metrics.PlacementResult) float64 { return testutil.ToFloat64(a.m.Placements.For(result)) }
	there, here := callOn(t, a.f, "node-1"), callOn(t, a.f, "node-0")

	urls, id, err := a.f.Place(there, "", "alice")
	if err != nil || !reflect.DeepEqual(urls, b.urls) {
		t.Fatalf("a call of node-1: %q %v, want node-1's %q", urls, err, b.urls)
	}
	if call, _, node, user, ok := cluster.ParseCallUser(id); !ok || call != there || node != "node-1" || user != "alice" {
		t.Fatalf("id %q does not name the call and node-1", id)
	}
	if urls, id, err = a.f.Place(here, "z1", "alice"); err != nil || !reflect.DeepEqual(urls, a.urls) {
		t.Fatalf("a call of node-0: %q %v", urls, err)
	}
	if _, zone, node, _, _ := cluster.ParseCallUser(id); zone != "z1" || node != "node-0" {
		t.Fatalf("id %q does not name zone z1 and node-0", id)
	}
	// Without a call the user id is placed as one, and minted as it is.
	if _, id, _ = a.f.Place("", "", "bob"); id != "bob" {
		t.Fatalf("id without a call %q", id)
	}
	remote, local := placements(metrics.PlacementRemote), placements(metrics.PlacementLocal)
	if remote < 1 || local < 1 || remote+local != 3 {
		t.Fatalf("placements remote %v, local %v", remote, local)
	}
	if _, _, err := a.f.Place("bad~call", "", "alice"); err == nil {
		t.Fatal("a bad call id placed")
	}
}

func TestPlaceFallback(t *testing.T) {
	// node-1 has no listener clients reach (an IPv6 wildcard, and only an
	// IPv4 relay address): there is no URL to hand out for it.
	ms := startFleet(t, 2, func(i int) endpoint.Addresses {
		if i == 1 {
			return endpoint.Addresses{Listens: map[string][]string{"udp": {"[::]:3478"}}}
		}
		return endpoint.Addresses{}
	})
	a := ms[0]
	there := callOn(t, a.f, "node-1")
	urls, id, err := a.f.Place(there, "", "alice")
	if err != nil || !reflect.DeepEqual(urls, a.urls) {
		t.Fatalf("fallback: %q %v, want node-0's own %q", urls, err, a.urls)
	}
	if _, _, node, _, _ := cluster.ParseCallUser(id); node != "node-0" {
		t.Fatalf("fallback id %q does not name node-0", id)
	}
	if got := testutil.ToFloat64(a.m.Placements.For(metrics.PlacementFallback)); got != 1 {
		t.Fatalf("fallback placements %v", got)
	}
}

func TestFleetOfOne(t *testing.T) {
	a := startMember(t, "solo", "", "", endpoint.Addresses{})
	if a.f.Clustered() || a.f.Cluster() != nil {
		t.Fatal("a fleet of one gossips")
	}
	if _, ok := a.f.Redirect(callUser(t, "room", "elsewhere"), client(40020), "udp"); ok {
		t.Fatal("a fleet of one redirected")
	}
	urls, id, err := a.f.Place("room", "", "alice")
	if err != nil || !reflect.DeepEqual(urls, a.urls) {
		t.Fatalf("Place: %q %v", urls, err)
	}
	if call, _, node, user, ok := cluster.ParseCallUser(id); !ok || call != "room" || node != "" || user != "alice" {
		t.Fatalf("id %q: want the call, no node", id)
	}
	if _, id, _ := a.f.Place("", "", "alice"); id != "alice" {
		t.Fatalf("id without a call %q", id)
	}
	if got := testutil.ToFloat64(a.m.Placements.For(metrics.PlacementLocal)); got != 0 {
		t.Fatalf("a fleet of one counted %v placements", got)
	}
	a.f.Drain(false)
	ms := a.f.Members()
	if len(ms) != 1 || ms[0].ID != "solo" || !ms[0].Self || !ms[0].Meta.Draining || ms[0].Meta.Host != "127.0.0.1" ||
		ms[0].Meta.Zone != "z1" || ms[0].Meta.Version != "test" {
		t.Fatalf("members %+v", ms)
	}
	if err := a.f.Undrain(); err != nil {
		t.Fatal(err)
	}
	if a.f.Members()[0].Meta.Draining {
		t.Fatal("still draining after Undrain")
	}
}

func TestReport(t *testing.T) {
	a := startMember(t, "solo", "", "", endpoint.Addresses{})
	nodes := []cluster.Node{
		{ID: "a", Self: true, Meta: cluster.Meta{Allocations: 1}},
		{ID: "b", Meta: cluster.Meta{Allocations: 3, Relay: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, RelayPorts: [2]int{1000, 2000}}},
		{ID: "c", Meta: cluster.Meta{Draining: true}},
	}
	a.f.report(a.relay, nodes)
	for state, want := range map[metrics.MemberState]float64{metrics.MemberAlive: 2, metrics.MemberDraining: 1} {
		if got := testutil.ToFloat64(a.m.FleetMembers.For(state)); got != want {
			t.Errorf("members %s %v, want %v", state, got, want)
		}
	}
	if got := testutil.ToFloat64(a.m.FleetLoadShare); got != 0.25 {
		t.Errorf("load share %v, want 0.25", got)
	}
	a.f.report(a.relay, []cluster.Node{{ID: "a", Self: true}})
	if got := testutil.ToFloat64(a.m.FleetLoadShare); got != 1 {
		t.Errorf("load share of an idle fleet %v, want 1", got)
	}
}

func TestBitRate(t *testing.T) {
	if got := bitRate(1250, 500*time.Millisecond); got != 20000 {
		t.Fatalf("1250 bytes in 0.5s: %d bit/s, want 20000", got)
	}
}

// A drain SIGTERM started (final) ends in an exit: the admin API cannot
// cancel it, and trying changes nothing. One the API started can be.
func TestFinalDrainCannotBeCancelled(t *testing.T) {
	ms := startFleet(t, 2, nil)
	a, b := ms[0], ms[1]
	a.f.Drain(false)
	a.f.Drain(true) // SIGTERM during an API drain makes it final
	if err := a.f.Undrain(); !errors.Is(err, ErrFinalDrain) {
		t.Fatalf("Undrain of a final drain: %v, want ErrFinalDrain", err)
	}
	if !a.relay.Draining() || !a.f.Draining() || !a.f.meta(a.f.state.Load()).Draining {
		t.Fatal("a refused Undrain cancelled the drain")
	}
	// Another member's API drain is its own, and can be cancelled.
	b.f.Drain(false)
	if err := b.f.Undrain(); err != nil || b.relay.Draining() || b.f.Draining() {
		t.Fatalf("Undrain: %v; relay draining %v, gossiped %v", err, b.relay.Draining(), b.f.Draining())
	}
	// A cancel that lands while the fleet is being told wins: the relay
	// never starts refusing. A final drain in the same window cannot be
	// cancelled: the relay refuses.
	b.f.startDrain(false)
	if err := b.f.Undrain(); err != nil {
		t.Fatal(err)
	}
	b.f.refuseNew()
	if b.relay.Draining() || b.f.Draining() {
		t.Fatalf("a drain cancelled while the fleet was told: relay draining %v, gossiped %v", b.relay.Draining(), b.f.Draining())
	}
	b.f.startDrain(true)
	if err := b.f.Undrain(); !errors.Is(err, ErrFinalDrain) {
		t.Fatalf("Undrain during a final drain's announcement: %v", err)
	}
	b.f.refuseNew()
	if !b.relay.Draining() || !b.f.Draining() {
		t.Fatalf("final drain: relay draining %v, gossiped %v", b.relay.Draining(), b.f.Draining())
	}
}
