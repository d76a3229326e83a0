package relay

import (
	"net"
	"testing"
)

func TestClientSet(t *testing.T) {
	c := newClientSet()
	a := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	mapped := &net.UDPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 5000}
	if c.has(a) {
		t.Fatal("an empty set has an address")
	}
	c.add(a)
	if !c.has(a) || !c.has(mapped) {
		t.Fatal("an added address (or its IPv4-mapped form) is missing")
	}
	// Pion may report the old allocation's deletion after a new one on the
	// same 5-tuple was created: the address still holds one.
	c.add(a)
	c.remove(a)
	if !c.has(a) {
		t.Fatal("a re-created allocation was forgotten by the late deletion")
	}
	c.remove(a)
	if c.has(a) {
		t.Fatal("an address without an allocation is still there")
	}
	tcp := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	c.add(tcp)
	if c.has(tcp) {
		t.Fatal("a TCP address is not tracked")
	}
	// No address of many distinct ones is ever missed (counts are exact
	// for the addresses added; sharing a counter only lets others pass).
	var many []*net.UDPAddr
	for i := range 50_000 {
		u := &net.UDPAddr{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)), Port: 1000 + i%7}
		many = append(many, u)
		c.add(u)
	}
	for _, u := range many {
		if !c.has(u) {
			t.Fatalf("%v added but missing", u)
		}
	}
	if n := testing.AllocsPerRun(1000, func() { c.has(a) }); n != 0 {
		t.Fatalf("has allocates %v", n)
	}
}
