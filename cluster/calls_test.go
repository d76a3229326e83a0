package cluster

import (
	"net/netip"
	"testing"
	"time"
)

func TestCallUserRoundTrip(t *testing.T) {
	for _, tc := range []struct{ call, zone, node, user string }{
		{"call-1", "", "", "alice"},
		{"Room_7.a", "eu-west-1a", "relay-3.dc1", "bob@example.com"},
		{"x", "", "n1", "user~with~tildes:and:colons+plus"},
		{"x", "z", "", ""},
	} {
		id, err := CallUser(tc.call, tc.zone, tc.node, tc.user)
		if err != nil {
			t.Fatal(err)
		}
		for _, username := range []string{id, "1795565421:" + id} {
			call, zone, node, user, ok := ParseCallUser(username)
			if !ok || call != tc.call || zone != tc.zone || node != tc.node || user != tc.user {
				t.Errorf("%q: got %q %q %q %q %v", username, call, zone, node, user, ok)
			}
		}
	}
	for _, bad := range []struct{ call, zone, node string }{{"", "", ""}, {"a~b", "", ""}, {"a@b", "", ""}, {"ok", "z~", ""},
		{string(make([]byte, 65)), "", ""}, {"ok", "", "n+1"}} {
		if _, err := CallUser(bad.call, bad.zone, bad.node, "u"); err == nil {
			t.Errorf("CallUser(%q, %q, %q) accepted", bad.call, bad.zone, bad.node)
		}
	}
	for _, u := range []string{"alice", "1795565421:alice", "1795565421:c=nocall", "c=~u", "c=a b~u", "1:c=a@~u", "1:c=a+~u"} {
		if _, _, _, _, ok := ParseCallUser(u); ok {
			t.Errorf("ParseCallUser(%q) = ok", u)
		}
	}
}

func TestRedirected(t *testing.T) {
	now := time.Unix(1000, 0)
	r := NewRedirected(10*time.Second, 2, func() time.Time { return now })
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

func TestReservedID(t *testing.T) {
	id, err := CallUser("room", "", "", "alice")
	if err != nil || !ReservedID(id) {
		t.Fatalf("CallUser's id %q (%v) is not reserved", id, err)
	}
	for _, user := range []string{"alice", "", "C=room~x", " c=room"} {
		if ReservedID(user) {
			t.Errorf("%q reserved", user)
		}
	}
}
