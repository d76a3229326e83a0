package relay

import (
	"fmt"
	"net/netip"
)

// defaultDenied are the IANA special-purpose and non-global ranges a peer
// may not be in unless the operator allows it (DESIGN.md decision 5).
var defaultDenied = []string{
	// IPv4 (IANA IPv4 Special-Purpose Address Registry, RFC 6890 and later).
	"0.0.0.0/8",       // "this network", includes 0.0.0.0
	"10.0.0.0/8",      // private
	"100.64.0.0/10",   // CGNAT shared address space
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link-local, includes 169.254.169.254 metadata
	"172.16.0.0/12",   // private
	"192.0.0.0/24",    // IETF protocol assignments
	"192.0.2.0/24",    // TEST-NET-1
	"192.88.99.0/24",  // deprecated 6to4 relay anycast
	"192.168.0.0/16",  // private
	"198.18.0.0/15",   // benchmarking
	"198.51.100.0/24", // TEST-NET-2
	"203.0.113.0/24",  // TEST-NET-3
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, includes 255.255.255.255
	// IPv6: only 2000::/3 is global unicast; the rest is refused wholesale
	// (::, ::1, IPv4-compatible, discard, ULA, link-local, multicast...).
	"::/3",
	"4000::/2",
	"8000::/1",
	"2001::/23",     // IETF protocol assignments (Teredo, ORCHID, benchmarking)
	"2001:db8::/32", // documentation
	"3fff::/20",     // documentation
}

// defaultAllowed are carve-outs inside denied ranges whose embedded IPv4
// address is checked instead (NAT64 well-known prefix, RFC 6052). The NAT64
// local-use prefix 64:ff9b:1::/48 (RFC 8215) stays denied: where its IPv4
// address sits depends on the translator's prefix length, which only the
// operator knows (see embedded.go); an --allow-peer opens it, and its
// embedded IPv4 address is then checked with the /96 layout.
var defaultAllowed = []string{"64:ff9b::/96"}

type rule struct {
	prefix   netip.Prefix
	allow    bool
	operator bool // set by --allow-peer/--deny-peer; beats a default of equal length
}

// Policy decides which peer addresses a client may reach through the relay.
// The most specific matching rule wins; at equal length an operator rule
// beats a default, and a deny beats an allow. An address no rule matches is
// allowed. Addresses with an embedded IPv4 address (IPv4-mapped,
// IPv4-compatible, NAT64, 6to4: embeddedIPv4) are allowed only if the
// embedded IPv4 address is allowed too.
type Policy struct {
	rules []rule
}

// NewPolicy builds a policy from the defaults and the operator's CIDRs.
func NewPolicy(allow, deny []string) (*Policy, error) {
	p := &Policy{}
	add := func(cidrs []string, allowRule, operator bool, flag string) error {
		for _, c := range cidrs {
			pfx, err := parseCIDR(c)
			if err != nil {
				return fmt.Errorf("%s %q: %w", flag, c, err)
			}
			p.rules = append(p.rules, rule{prefix: pfx, allow: allowRule, operator: operator})
		}
		return nil
	}
	if err := add(defaultDenied, false, false, "default"); err != nil {
		return nil, err
	}
	if err := add(defaultAllowed, true, false, "default"); err != nil {
		return nil, err
	}
	if err := add(allow, true, true, "--allow-peer"); err != nil {
		return nil, err
	}
	if err := add(deny, false, true, "--deny-peer"); err != nil {
		return nil, err
	}
	return p, nil
}

// parseCIDR accepts a CIDR or a bare address (a /32 or /128).
func parseCIDR(s string) (netip.Prefix, error) {
	if pfx, err := netip.ParsePrefix(s); err == nil {
		if pfx.Addr().Is4In6() {
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
		}
		return pfx.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("relay: not a CIDR or IP address")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// OperatorAllowsExactly reports whether an operator's --allow-peer names a
// itself (a /32 or /128), not merely a range containing it.
func (p *Policy) OperatorAllowsExactly(a netip.Addr) bool {
	a = a.Unmap()
	for _, r := range p.rules {
		if r.operator && r.allow && r.prefix.Bits() == a.BitLen() && r.prefix.Addr() == a {
			return p.decide(a)
		}
	}
	return false
}

// decide returns the verdict of the most specific rule matching a.
func (p *Policy) decide(a netip.Addr) bool {
	best := -1
	var verdict = true
	var bestOp bool
	for _, r := range p.rules {
		if !r.prefix.Contains(a) {
			continue
		}
		b := r.prefix.Bits()
		switch {
		case b > best:
		case b == best && r.operator && !bestOp:
		case b == best && r.operator == bestOp && !r.allow:
		default:
			continue
		}
		best, verdict, bestOp = b, r.allow, r.operator
	}
	return verdict
}

// AllowedAddr is Allowed for a netip.Addr.
func (p *Policy) AllowedAddr(a netip.Addr) bool {
	a = a.WithZone("")
	if a.Is4In6() {
		return p.decide(a.Unmap())
	}
	if !p.decide(a) {
		return false
	}
	if v4, ok := embeddedIPv4(a); ok && !p.decide(v4) {
		return false
	}
	return true
}
