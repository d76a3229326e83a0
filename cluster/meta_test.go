package cluster

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
)

// oldWire is metadata as the first release gossiped it (map-shaped
// listeners and ports, relay addresses as strings): members of a fleet
// being upgraded one node at a time read each other's.
const oldWire = `{"z":"eu","h":"turn.example","l":{"4":"192.0.2.1:3478","6":"[2001:db8::1]:3478"},` +
	`"p":{"dtls":5349,"tls":5349,"udp":3478},"r":["192.0.2.1","2001:db8::1"],"rp":[49152,65535],` +
	`"c":2,"a":7,"b":1000,"d":true,"v":"dev"}`

var oldWireMeta = Meta{Zone: "eu", Host: "turn.example",
	Listen4: netip.MustParseAddrPort("192.0.2.1:3478"), Listen6: netip.MustParseAddrPort("[2001:db8::1]:3478"),
	Ports:      Ports{UDP: 3478, TLS: 5349, DTLS: 5349},
	Relay:      []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
	RelayPorts: [2]int{49152, 65535}, Capacity: 2, Allocations: 7, BitsPerSecond: 1000, Draining: true, Version: "dev"}

func TestMetaWireForm(t *testing.T) {
	b, err := json.Marshal(oldWireMeta)
	if err != nil || string(b) != oldWire {
		t.Fatalf("encoded %s (%v)\nwant    %s", b, err, oldWire)
	}
	var m Meta
	if err := json.Unmarshal([]byte(oldWire), &m); err != nil || !reflect.DeepEqual(m, oldWireMeta) {
		t.Fatalf("decoded %+v (%v)\nwant    %+v", m, err, oldWireMeta)
	}
	// A node with nothing to advertise sends what the first release sent.
	if b, _ := json.Marshal(Meta{Host: "h"}); string(b) != `{"h":"h","rp":[0,0],"a":0}` {
		t.Fatalf("empty metadata encoded as %s", b)
	}
}

func TestMetaBadValuesLeftOut(t *testing.T) {
	var m Meta
	err := json.Unmarshal([]byte(`{"h":"x","l":{"4":"nonsense","6":"[::1]:1"},"p":{"udp":70000,"tls":-1,"dtls":9},"r":["x","10.0.0.1"],"a":1}`), &m)
	if err != nil {
		t.Fatal(err)
	}
	want := Meta{Host: "x", Listen6: netip.MustParseAddrPort("[::1]:1"), Ports: Ports{DTLS: 9},
		Relay: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Allocations: 1}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("decoded %+v, want %+v", m, want)
	}
	if m.Listen(true) != want.Listen6 || m.Listen(false).IsValid() {
		t.Fatalf("Listen: %v %v", m.Listen(false), m.Listen(true))
	}
}
