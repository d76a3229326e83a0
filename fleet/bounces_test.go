package fleet

import (
	"net/netip"
	"testing"
	"time"
)

func TestBounces(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newBounces(10*time.Second, 2, func() time.Time { return now })
	a, b := netip.MustParseAddrPort("192.0.2.1:5000"), netip.MustParseAddrPort("[::ffff:192.0.2.1]:5000")
	if r.Seen("u", a) {
		t.Fatal("seen before noted")
	}
	r.Note("u", a)
	if !r.Seen("u", b) { // the mapped form is the same client
		t.Fatal("not seen after note")
	}
	if r.Seen("v", a) || r.Seen("u", netip.MustParseAddrPort("192.0.2.2:5000")) || r.Seen("u", netip.MustParseAddrPort("192.0.2.1:5001")) {
		t.Fatal("other user, address or port (the call's other leg) seen")
	}
	now = now.Add(11 * time.Second)
	if r.Seen("u", a) {
		t.Fatal("seen after ttl")
	}
	r.Note("x", a)
	r.Note("y", a)
	r.Note("z", a) // over max: the oldest goes
	if len(r.at) != 2 || r.Seen("x", a) || !r.Seen("z", a) {
		t.Fatalf("bounded memory: %v", r.at)
	}
}
