// Package endpoint decides the addresses a node relays from and is reached
// on, and the ICE URLs that name them. It opens no sockets.
//
// The relay IPs are the --relay-ip flags, or found from the host's default
// route (DefaultRelayIP, host.go). The address clients reach a listener on
// is decided in one place, Addresses.Advertised: the --external-ip of the
// listener's family, else the listener's own IP when it is specific, else
// the --relay-ip of its family. This node's ICE URLs (Addresses.URLs,
// handed out by /v1/ice-servers), the listeners it gossips to the fleet
// (Addresses.Fill) and so the ALTERNATE-SERVER another member redirects to,
// and a member's URLs built from its gossip (MemberURLs), all follow it.
package endpoint

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/supernode/supernode/cluster"
)

// Addresses are a node's addresses as configured and as its listeners
// were bound.
type Addresses struct {
	// PublicHost (--public-host) is the name or IP put in this node's URLs
	// instead of the advertised address; empty uses the advertised one.
	PublicHost string
	// External (--external-ip) are the node's 1:1 NAT addresses, at most
	// one per family.
	External []netip.Addr
	// Relay are the addresses relay sockets bind to, at most one per family.
	Relay []netip.Addr
	// Listens are the actual local addresses (ip:port) of the listeners by
	// kind: "udp" (a UDP socket and a TCP listener on one port), "tls",
	// "dtls".
	Listens map[string][]string
}

// Advertised is the address clients reach the listener bound to listen
// (ip:port) on: the external IP of its family, else its own IP when it is
// specific, else the relay IP of its family; false when there is none.
// It is always an IP (ALTERNATE-SERVER carries one), so PublicHost does not
// enter into it.
func (a Addresses) Advertised(listen string) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return netip.AddrPort{}, false
	}
	ip := ap.Addr().Unmap()
	if e, ok := ofFamily(a.External, ip.Is6()); ok {
		return netip.AddrPortFrom(e, ap.Port()), true
	}
	if !ip.IsUnspecified() {
		return netip.AddrPortFrom(ip, ap.Port()), true
	}
	if r, ok := ofFamily(a.Relay, ip.Is6()); ok {
		return netip.AddrPortFrom(r, ap.Port()), true
	}
	return netip.AddrPort{}, false
}

func ofFamily(ips []netip.Addr, v6 bool) (netip.Addr, bool) {
	for _, ip := range ips {
		if ip.Is6() == v6 {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// hostPort is the host:port the URLs of the listener bound to listen carry.
func (a Addresses) hostPort(listen string) (string, error) {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	if a.PublicHost != "" {
		return net.JoinHostPort(a.PublicHost, port), nil
	}
	if ap, ok := a.Advertised(listen); ok {
		return ap.String(), nil
	}
	return "", fmt.Errorf("no address of the family of %s to advertise: set --public-host", listen)
}

// urlKinds are the listener kinds that have ICE URLs, in the order the
// URLs are listed (a DTLS listener has no URL scheme browsers take).
var urlKinds = []string{"udp", "tls"}

// URLs are this node's ICE URLs for /v1/ice-servers, one set per listener.
// A listener of a family with no address to advertise is left out, with a
// warning on log, rather than failing start-up.
func (a Addresses) URLs(log *slog.Logger) []string {
	var urls []string
	seen := map[string]bool{}
	for _, kind := range urlKinds {
		for _, l := range a.Listens[kind] {
			hp, err := a.hostPort(l)
			if err != nil {
				log.Warn("listener left out of /v1/ice-servers", "listen", l, "reason", err.Error())
				continue
			}
			for _, u := range ListenerURLs(kind, hp) {
				if !seen[u] {
					seen[u] = true
					urls = append(urls, u)
				}
			}
		}
	}
	return urls
}

// Host is the host (name or IP, no port or brackets) of this node's first
// ICE URL; "" when URLs has none.
func (a Addresses) Host() string {
	for _, kind := range urlKinds {
		for _, l := range a.Listens[kind] {
			if hp, err := a.hostPort(l); err == nil {
				host, _, _ := net.SplitHostPort(hp)
				return host
			}
		}
	}
	return ""
}

// Fill sets the address part of this node's gossiped metadata: the host of
// its URLs (so a call placed here by another member gets the URLs this node
// hands out itself), the advertised UDP/TCP listener of each family and
// port of each transport (the first listener of each), and its relay
// addresses, external ones first.
func (a Addresses) Fill(m *cluster.Meta) {
	m.Host = a.Host()
	for _, kind := range []string{"udp", "tls", "dtls"} {
		for _, l := range a.Listens[kind] {
			ap, ok := a.Advertised(l)
			if !ok {
				continue
			}
			port := map[string]*uint16{"udp": &m.Ports.UDP, "tls": &m.Ports.TLS, "dtls": &m.Ports.DTLS}[kind]
			if *port == 0 {
				*port = ap.Port()
			}
			listen := &m.Listen4
			if ap.Addr().Is6() {
				listen = &m.Listen6
			}
			if kind == "udp" && !listen.IsValid() {
				*listen = ap
			}
		}
	}
	m.Relay = append(append([]netip.Addr(nil), a.External...), a.Relay...)
}

// ListenerURLs are the ICE URLs of one listener at hostport: a UDP/TCP
// listener (kind udp) serves stun: and turn: over both transports, a TLS
// one turns:.
func ListenerURLs(kind, hostport string) []string {
	switch kind {
	case "udp":
		return []string{"stun:" + hostport, "turn:" + hostport + "?transport=udp", "turn:" + hostport + "?transport=tcp"}
	case "tls":
		return []string{"turns:" + hostport + "?transport=tcp"}
	}
	return nil
}

// MemberURLs are the ICE URLs of a fleet member, from its gossiped
// metadata, in the shape of URLs; nil when it gossips no host.
func MemberURLs(m cluster.Meta) []string {
	if m.Host == "" {
		return nil
	}
	var urls []string
	for _, kp := range []struct {
		kind string
		port uint16
	}{{"udp", m.Ports.UDP}, {"tls", m.Ports.TLS}} {
		if kp.port > 0 {
			urls = append(urls, ListenerURLs(kp.kind, net.JoinHostPort(m.Host, strconv.Itoa(int(kp.port))))...)
		}
	}
	return urls
}

// ValidHost reports whether h may be a --public-host: an IP address or a
// DNS host name (RFC 1123 labels of letters, digits and inner hyphens, at
// most 253 characters), without port or brackets.
func ValidHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// CertName is host when it is a DNS name (a --public-host, which the
// node's TLS certificate names): what a TLS or DTLS client checks that
// node's certificate against, sent as ALTERNATE-DOMAIN with a redirect
// there. "" for an IP address, which the client then checks as it checked
// the node that redirected it.
func CertName(host string) string {
	if _, err := netip.ParseAddr(host); err == nil || host == "" || len(host) > 253 {
		return ""
	}
	return host
}
