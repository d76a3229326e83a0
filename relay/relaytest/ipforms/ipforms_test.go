package ipforms

import (
	"net/netip"
	"testing"
)

func TestV4(t *testing.T) {
	want := map[string]string{
		"plain":               "192.0.2.33",
		"mapped":              "::ffff:192.0.2.33",
		"compatible":          "::c000:221",
		"nat64":               "64:ff9b::c000:221",
		"nat64 local-use":     "64:ff9b:1::c000:221",
		"nat64 local-use /96": "64:ff9b:1:abcd:1:2:c000:221",
		"6to4":                "2002:c000:221::",
		"6to4 host":           "2002:c000:221:1234::1",
	}
	got := V4(netip.MustParseAddr("192.0.2.33"))
	if len(got) != len(want) {
		t.Errorf("%d forms, want %d: %v", len(got), len(want), got)
	}
	for name, w := range want {
		if a := got[name]; a != netip.MustParseAddr(w) {
			t.Errorf("%s: %s, want %s", name, a, w)
		}
	}
}
