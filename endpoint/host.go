package endpoint

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
)

// DefaultRelayIP is the relay IP of a node given no --relay-ip: the first
// global unicast IPv4 address of the interface that carries the IPv4
// default route (from /proc/net/route), else of any up, non-loopback
// interface, else 127.0.0.1. Production nodes set --relay-ip.
func DefaultRelayIP() netip.Addr {
	ifs, _ := net.Interfaces()
	if name := defaultRouteInterface(); name != "" {
		for _, ifc := range ifs {
			if ifc.Name == name {
				if ip, ok := firstIPv4(ifc); ok {
					return ip
				}
			}
		}
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp != 0 && ifc.Flags&net.FlagLoopback == 0 {
			if ip, ok := firstIPv4(ifc); ok {
				return ip
			}
		}
	}
	return netip.MustParseAddr("127.0.0.1")
}

func firstIPv4(ifc net.Interface) (netip.Addr, bool) {
	addrs, _ := ifc.Addrs()
	for _, a := range addrs {
		if pn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(pn.IP); ok && ip.Unmap().Is4() && ip.IsGlobalUnicast() {
				return ip.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}

// defaultRouteInterface names the interface of the IPv4 default route; ""
// when there is none or /proc/net/route cannot be read.
func defaultRouteInterface() string {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return ""
	}
	defer f.Close()
	return routeTableDefault(f)
}

// routeTableDefault reads a /proc/net/route table (a header line, then
// whitespace-separated Iface, Destination in hex, ...) and names the
// interface of its first default (destination 00000000) route.
func routeTableDefault(r io.Reader) string {
	sc := bufio.NewScanner(r)
	for header := true; sc.Scan(); header = false {
		f := strings.Fields(sc.Text())
		if !header && len(f) > 2 && f[1] == "00000000" {
			return f[0]
		}
	}
	return ""
}

// LocalIPs lists every address of this host's interfaces, so the relay
// can keep clients off the node's own services.
func LocalIPs() []netip.Addr {
	addrs, _ := net.InterfaceAddrs()
	var out []netip.Addr
	for _, a := range addrs {
		if pn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(pn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// ParseIPs parses the values of the address flag --flagName (--relay-ip,
// --external-ip): specific addresses, at most one per family.
func ParseIPs(flagName string, vals []string) ([]netip.Addr, error) {
	var out []netip.Addr
	var has4, has6 bool
	for _, v := range vals {
		ip, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("--%s %q: not an IP address", flagName, v)
		}
		ip = ip.Unmap()
		if ip.IsUnspecified() {
			return nil, fmt.Errorf("--%s %q: must be a specific address", flagName, v)
		}
		if (ip.Is4() && has4) || (ip.Is6() && has6) {
			return nil, fmt.Errorf("--%s: at most one address per family", flagName)
		}
		has4, has6 = has4 || ip.Is4(), has6 || ip.Is6()
		out = append(out, ip)
	}
	return out, nil
}

// Bindable checks that relay sockets can bind to each --relay-ip: an
// address that is not on this host would otherwise give a node that
// reports ready and answers every Allocate with 508.
func Bindable(ips []netip.Addr) error {
	for _, ip := range ips {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return fmt.Errorf("--relay-ip %s: relay sockets cannot bind to it (is it an address of this host?): %w", ip, err)
		}
		_ = pc.Close()
	}
	return nil
}

// RelayIPs are the relay IPs of --relay-ip (vals), checked to be bindable,
// or DefaultRelayIP when none is given.
func RelayIPs(vals []string) ([]netip.Addr, error) {
	ips, err := ParseIPs("relay-ip", vals)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return []netip.Addr{DefaultRelayIP()}, nil
	}
	return ips, Bindable(ips)
}

// Loopback reports whether the listen address hostport (host:port) is
// reachable from this host only: its host is "localhost" or a loopback IP.
func Loopback(hostport string) (bool, error) {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false, err
	}
	ip, err := netip.ParseAddr(h)
	return h == "localhost" || (err == nil && ip.IsLoopback()), nil
}
