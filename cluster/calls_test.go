package cluster

import "testing"

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
