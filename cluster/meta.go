package cluster

import (
	"encoding/json"
	"net/netip"
)

// Meta is what a node gossips about itself, decoded once per change (see
// setMember). On the wire it is short-keyed JSON that must fit memberlist's
// 512 bytes of node metadata, in the form every earlier release sent, so a
// fleet can be upgraded one node at a time (see metaWire).
type Meta struct {
	// Zone is the node's failure domain.
	Zone string
	// Host is the name or address clients reach the node's listeners on:
	// the host of the node's own ICE URLs (--public-host, else the
	// advertised address of its first listener).
	Host string
	// Listen4 and Listen6 are the node's client-facing UDP/TCP listener in
	// each address family, as clients reach it (for ALTERNATE-SERVER); the
	// zero AddrPort when it has none in that family.
	Listen4, Listen6 netip.AddrPort
	// Ports are the node's advertised listener ports by transport.
	Ports Ports
	// Relay are the node's relay addresses (external where set): peers in
	// the fleet may send to them even when they are private.
	Relay []netip.Addr
	// RelayPorts is the node's relay port range, inclusive.
	RelayPorts [2]int
	// Capacity is the node's weight for placement; zero counts as 1.
	Capacity float64
	// Allocations is the node's current allocation count (its load).
	Allocations int
	// BitsPerSecond is the node's recent relayed bit rate.
	BitsPerSecond int64
	// Draining is set from the start of a drain on: no new calls.
	Draining bool
	// Version is the node's build.
	Version string
}

// Ports are a node's advertised listener ports; zero is none.
type Ports struct {
	// UDP is the port of the UDP listener, which also serves TCP.
	UDP uint16
	// TLS and DTLS are the ports of the TLS and DTLS listeners.
	TLS, DTLS uint16
}

// Listen is the node's UDP/TCP listener in the IPv6 (v6) or IPv4 family.
func (m Meta) Listen(v6 bool) netip.AddrPort {
	if v6 {
		return m.Listen6
	}
	return m.Listen4
}

// metaWire is Meta as gossiped: the keys and value forms of the first
// release ("l" maps "4"/"6" to ip:port, "p" maps a transport to its port).
type metaWire struct {
	Zone          string            `json:"z,omitempty"`
	Host          string            `json:"h"`
	Listen        map[string]string `json:"l,omitempty"`
	Ports         map[string]int    `json:"p,omitempty"`
	Relay         []string          `json:"r,omitempty"`
	RelayPorts    [2]int            `json:"rp,omitempty"`
	Capacity      float64           `json:"c,omitempty"`
	Allocations   int               `json:"a"`
	BitsPerSecond int64             `json:"b,omitempty"`
	Draining      bool              `json:"d,omitempty"`
	Version       string            `json:"v,omitempty"`
}

// MarshalJSON encodes m in its wire form.
func (m Meta) MarshalJSON() ([]byte, error) {
	w := metaWire{Zone: m.Zone, Host: m.Host, RelayPorts: m.RelayPorts, Capacity: m.Capacity,
		Allocations: m.Allocations, BitsPerSecond: m.BitsPerSecond, Draining: m.Draining, Version: m.Version}
	for fam, ap := range map[string]netip.AddrPort{"4": m.Listen4, "6": m.Listen6} {
		if ap.IsValid() {
			if w.Listen == nil {
				w.Listen = map[string]string{}
			}
			w.Listen[fam] = ap.String()
		}
	}
	for kind, p := range map[string]uint16{"udp": m.Ports.UDP, "tls": m.Ports.TLS, "dtls": m.Ports.DTLS} {
		if p != 0 {
			if w.Ports == nil {
				w.Ports = map[string]int{}
			}
			w.Ports[kind] = int(p)
		}
	}
	for _, ip := range m.Relay {
		w.Relay = append(w.Relay, ip.String())
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes the wire form. An address or port that does not
// parse is left out rather than failing the whole member: the member is
// then only not offered for what needs that value (a redirect in that
// family, a fleet peer address).
func (m *Meta) UnmarshalJSON(b []byte) error {
	var w metaWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*m = Meta{Zone: w.Zone, Host: w.Host, RelayPorts: w.RelayPorts, Capacity: w.Capacity,
		Allocations: w.Allocations, BitsPerSecond: w.BitsPerSecond, Draining: w.Draining, Version: w.Version}
	m.Listen4, _ = netip.ParseAddrPort(w.Listen["4"])
	m.Listen6, _ = netip.ParseAddrPort(w.Listen["6"])
	port := func(kind string) uint16 {
		p, ok := w.Ports[kind]
		if !ok || p <= 0 || p > 65535 {
			return 0
		}
		return uint16(p)
	}
	m.Ports = Ports{UDP: port("udp"), TLS: port("tls"), DTLS: port("dtls")}
	for _, r := range w.Relay {
		if ip, err := netip.ParseAddr(r); err == nil {
			m.Relay = append(m.Relay, ip)
		}
	}
	return nil
}
