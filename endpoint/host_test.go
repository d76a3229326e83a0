package endpoint

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestRouteTableDefault(t *testing.T) {
	const table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n" +
		"eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"eth1\t00000000\t0101000A\t0003\t0\t0\t200\t00000000\t0\t0\t0\n"
	if got := routeTableDefault(strings.NewReader(table)); got != "eth0" {
		t.Fatalf("default route interface %q, want eth0", got)
	}
	noDefault := "Iface\tDestination\n00000000\tx\nlo\t0000007F\n"
	if got := routeTableDefault(strings.NewReader(noDefault)); got != "" {
		t.Fatalf("no default route: %q", got)
	}
}

func TestDefaultRelayIP(t *testing.T) {
	// Whatever this host has, the default is one IPv4 address of it, or
	// loopback: an address relay sockets can bind to.
	ip := DefaultRelayIP()
	if !ip.Is4() {
		t.Fatalf("default relay IP %v is not IPv4", ip)
	}
	if !ip.IsLoopback() {
		found := false
		for _, l := range LocalIPs() {
			found = found || l == ip
		}
		if !found {
			t.Fatalf("default relay IP %v is not among this host's %v", ip, LocalIPs())
		}
	}
	if err := Bindable([]netip.Addr{ip}); err != nil {
		t.Fatal(err)
	}
}

func TestParseIPs(t *testing.T) {
	got, err := ParseIPs("relay-ip", []string{"::ffff:127.0.0.1", "::1"})
	if err != nil || !reflect.DeepEqual(got, []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, tc := range []struct {
		vals []string
		want string
	}{
		{[]string{"nonsense"}, `--external-ip "nonsense": not an IP address`},
		{[]string{"0.0.0.0"}, `--external-ip "0.0.0.0": must be a specific address`},
		{[]string{"::"}, `--external-ip "::": must be a specific address`},
		{[]string{"192.0.2.1", "192.0.2.2"}, "--external-ip: at most one address per family"},
	} {
		if _, err := ParseIPs("external-ip", tc.vals); err == nil || err.Error() != tc.want {
			t.Errorf("ParseIPs(%q): %v, want %s", tc.vals, err, tc.want)
		}
	}
}

func TestRelayIPs(t *testing.T) {
	if got, err := RelayIPs(nil); err != nil || len(got) != 1 || got[0] != DefaultRelayIP() {
		t.Fatalf("no --relay-ip: %v, %v", got, err)
	}
	if got, err := RelayIPs([]string{"127.0.0.1"}); err != nil || got[0] != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("--relay-ip 127.0.0.1: %v, %v", got, err)
	}
	// TEST-NET-1 is on no host's interface.
	if _, err := RelayIPs([]string{"192.0.2.1"}); err == nil || !strings.Contains(err.Error(), "--relay-ip 192.0.2.1: relay sockets cannot bind to it") {
		t.Fatalf("unbindable --relay-ip: %v", err)
	}
}

func TestLoopback(t *testing.T) {
	for hp, want := range map[string]bool{
		"127.0.0.1:9641": true, "127.0.0.2:0": true, "[::1]:80": true, "localhost:9641": true,
		"0.0.0.0:9641": false, "[::]:1": false, "192.0.2.1:80": false, "example.com:80": false, ":9641": false,
	} {
		if got, err := Loopback(hp); err != nil || got != want {
			t.Errorf("Loopback(%q) = %v, %v; want %v", hp, got, err, want)
		}
	}
	if _, err := Loopback("127.0.0.1"); err == nil {
		t.Error("an address without a port accepted")
	}
}
