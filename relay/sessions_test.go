package relay

import (
	"testing"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/cluster"
)

func TestFilterMatch(t *testing.T) {
	callID, err := cluster.CallUser("room-7", "eu", "node-1", "alice")
	if err != nil {
		t.Fatal(err)
	}
	plain := allocation.Entry{UserID: "alice", Transport: "udp"}
	placed := allocation.Entry{UserID: callID, Transport: "tls"}
	for _, tc := range []struct {
		name string
		f    Filter
		e    allocation.Entry
		want bool
	}{
		{"empty matches all", Filter{}, plain, true},
		{"user", Filter{User: "alice"}, plain, true},
		{"other user", Filter{User: "bob"}, plain, false},
		{"user part of a placed call", Filter{User: "alice"}, placed, true},
		{"whole id of a placed call", Filter{User: callID}, placed, true},
		{"call", Filter{Call: "room-7"}, placed, true},
		{"other call", Filter{Call: "room-8"}, placed, false},
		{"call on a plain id", Filter{Call: "room-7"}, plain, false},
		{"transport", Filter{Transport: "tls"}, placed, true},
		{"other transport", Filter{Transport: "udp"}, placed, false},
		{"all of them", Filter{User: "alice", Call: "room-7", Transport: "tls"}, placed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.match(tc.e); got != tc.want {
				t.Fatalf("%+v matches %+v: %v, want %v", tc.f, tc.e, got, tc.want)
			}
		})
	}
	if u, c := splitUser(callID); u != "alice" || c != "room-7" {
		t.Fatalf("splitUser(%q) = %q, %q", callID, u, c)
	}
	for _, tr := range []string{"udp", "tcp", "tls", "dtls"} {
		if !ValidTransport(tr) {
			t.Errorf("ValidTransport(%q) = false", tr)
		}
	}
	for _, tr := range []string{"", "UDP", "sctp"} {
		if ValidTransport(tr) {
			t.Errorf("ValidTransport(%q) = true", tr)
		}
	}
}
