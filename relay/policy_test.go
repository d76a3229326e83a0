package relay

import (
	"net/netip"
	"testing"
)

func TestPolicyDefaults(t *testing.T) {
	p, err := NewPolicy(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	denied := []string{
		"0.0.0.0", "0.1.2.3", "10.0.0.1", "100.64.0.1", "127.0.0.1", "127.255.255.254",
		"169.254.169.254", "169.254.0.1", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.1",
		"192.88.99.1", "192.168.1.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "224.0.0.1",
		"239.255.255.250", "240.0.0.1", "255.255.255.255",
		"::", "::1", "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254", "::ffff:0.0.0.0",
		"::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::1", "64:ff9b:1::808:808", "100::1",
		"2001::1", "2001:db8::1", "2002:7f00:1::1", "2002:a00:1::1", "3fff::1", "fc00::1", "fd00:ec2::254",
		"fe80::1", "fec0::1", "ff02::1", "5f00::1", "4000::1", "8000::1",
	}
	for _, s := range denied {
		if p.AllowedAddr(netip.MustParseAddr(s)) {
			t.Errorf("%s allowed by default, want denied", s)
		}
	}
	allowed := []string{
		"1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.1", "172.32.0.1", "192.0.3.1", "198.20.0.1",
		"2606:4700::1111", "2a00:1450::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
	}
	for _, s := range allowed {
		if !p.AllowedAddr(netip.MustParseAddr(s)) {
			t.Errorf("%s denied by default, want allowed", s)
		}
	}
}

func TestPolicyMostSpecificWins(t *testing.T) {
	p, err := NewPolicy(
		[]string{"10.0.0.0/8", "127.0.0.1", "fd00::/8", "169.254.169.0/24"},
		[]string{"10.1.0.0/16", "8.8.8.0/24", "10.0.0.0/8", "169.254.169.254/32"},
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"10.2.3.4", false},        // allow and deny both /8: deny wins the tie
		{"10.1.2.3", false},        // deny /16 beats allow /8
		{"127.0.0.1", true},        // operator /32 beats default /8
		{"::ffff:127.0.0.1", true}, // mapped form follows the IPv4 rule
		{"127.0.0.2", false},
		{"8.8.8.8", false}, // operator deny of a public range
		{"8.8.4.4", true},
		{"fd00::1", true},          // operator /8 beats default fc00::/7
		{"fc00::1", false},         // still denied
		{"169.254.169.1", true},    // allow /24 beats default /16
		{"169.254.169.254", false}, // deny /32 beats allow /24
		{"64:ff9b::7f00:1", true},  // NAT64 of an allowed IPv4
	} {
		if got := p.AllowedAddr(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Allowed(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// TestPolicyLocalUseNAT64: the NAT64 local-use prefix (RFC 8215) is denied
// by default; once an operator allows it, the IPv4 address in its last 32
// bits must be allowed too, as for the well-known prefix.
func TestPolicyLocalUseNAT64(t *testing.T) {
	p, err := NewPolicy([]string{"64:ff9b:1::/48"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"64:ff9b:1::808:808", true},
		{"64:ff9b:1:abcd::808:808", true},
		{"64:ff9b:1::7f00:1", false},              // 127.0.0.1
		{"64:ff9b:1::a9fe:a9fe", false},           // 169.254.169.254
		{"64:ff9b:1:ffff:ffff:ffff:a00:1", false}, // 10.0.0.1
		{"64:ff9b:2::808:808", false},             // outside the prefix: ::/3
	} {
		if got := p.AllowedAddr(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Allowed(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

func TestPolicyBadCIDR(t *testing.T) {
	if _, err := NewPolicy([]string{"10.0.0.0/33"}, nil); err == nil {
		t.Fatal("want an error naming --allow-peer")
	} else if got := err.Error(); got[:12] != "--allow-peer" {
		t.Fatalf("error %q does not name the flag", got)
	}
	if _, err := NewPolicy(nil, []string{"nonsense"}); err == nil {
		t.Fatal("want an error naming --deny-peer")
	}
}
