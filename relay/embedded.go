package relay

import "net/netip"

// IPv6 addresses that carry an IPv4 address.
//
// A packet the node sends to one of these forms can end up at the IPv4
// address it carries: the socket API sends IPv4-mapped addresses as IPv4, a
// sit tunnel sends IPv4-compatible ones over IPv4, a NAT64 on the path
// translates its prefixes, a 6to4 relay unwraps 2002::/16. So the peer
// policy and the node's own-address rule judge such a peer by the IPv4
// address as well (policy.go, self.go), and both ask embeddedIPv4 which one
// it is.
//
// The forms recognised, with where the IPv4 address sits:
//
//	::ffff:a.b.c.d             IPv4-mapped (RFC 4291 §2.5.5.2), last 32 bits
//	::a.b.c.d                  IPv4-compatible (RFC 4291 §2.5.5.1, deprecated), last 32 bits
//	64:ff9b::a.b.c.d           NAT64 well-known prefix (RFC 6052 §2.1), a /96: last 32 bits
//	64:ff9b:1:x:x:x:a.b.c.d    NAT64 local-use prefix (RFC 8215), read as a /96: last 32 bits
//	2002:aabb:ccdd::/48        6to4 (RFC 3056 §2), bits 16-47
//
// RFC 6052 §2.2 also lets a translator use a prefix of 32, 40, 48, 56 or 64
// bits, with the IPv4 address split around the reserved octet at bits
// 64-71. Which one a network uses inside 64:ff9b:1::/48 is local
// configuration the node cannot see, so it reads the local-use prefix with
// the /96 layout only. The default policy denies 64:ff9b:1::/48 (it is
// inside ::/3); an operator who allows it should allow only a /96 translator
// prefix. Network-specific NAT64 prefixes (RFC 6052 §2.3) cannot be
// recognised at all and need a --deny-peer of their own.

// embeddedIPv4 returns the IPv4 address carried by a in one of the forms
// above. An IPv4 address carries none. The IPv4-compatible form matches
// every address whose first 96 bits are zero, :: and ::1 included: callers
// that care look a up as itself first.
func embeddedIPv4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	switch {
	case a.Is4In6():
		return a.Unmap(), true
	case isZero(b[0:12]):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && isZero(b[4:12]):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0x00 && b[5] == 0x01:
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case b[0] == 0x20 && b[1] == 0x02:
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
