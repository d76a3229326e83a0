// Package ipforms writes an IPv4 address in every IPv6 form that carries
// it, for tests of the relay's peer policy, in relay itself and in the
// packages and binaries built on it. It is apart from relaytest, which
// imports relay, so that relay's own tests can import it.
package ipforms

import "net/netip"

// V4 writes an IPv4 address in every form that carries it, keyed by
// the form's name: "plain" (the IPv4 address itself), "mapped"
// (::ffff:a.b.c.d), "compatible" (::a.b.c.d), the NAT64 well-known prefix
// 64:ff9b::/96 ("nat64"), the NAT64 local-use prefix 64:ff9b:1::/48 with
// zero bits ("nat64 local-use") and with others
// ("nat64 local-use /96"), and 6to4's 2002:a.b.c.d::/48 as a bare prefix
// ("6to4") and with a host part ("6to4 host"). The relay's peer policy
// (relay/embedded.go) reads the IPv4 address out of each.
func V4(v4 netip.Addr) map[string]netip.Addr {
	b := v4.As4()
	form := func(prefix []byte, at int) netip.Addr {
		var a [16]byte
		copy(a[:], prefix)
		copy(a[at:], b[:])
		return netip.AddrFrom16(a)
	}
	return map[string]netip.Addr{
		"plain":               netip.AddrFrom4(b),
		"mapped":              form([]byte{10: 0xff, 11: 0xff}, 12),
		"compatible":          form(nil, 12),
		"nat64":               form([]byte{0x00, 0x64, 0xff, 0x9b}, 12),
		"nat64 local-use":     form([]byte{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 12),
		"nat64 local-use /96": form([]byte{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01, 0xab, 0xcd, 0, 1, 0, 2}, 12),
		"6to4":                form([]byte{0x20, 0x02}, 2),
		"6to4 host":           form([]byte{0x20, 0x02, 6: 0x12, 7: 0x34, 15: 0x01}, 2),
	}
}
