package main

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/relay"
)

// fleet is this node's membership in a fleet, when --cluster-listen is set.
type fleet struct {
	c          *cluster.Cluster
	redirected *cluster.Redirected
	meta       cluster.Meta // the static part of this node's metadata
}

// startFleet joins the fleet after the relay is up (its metadata reads the
// relay's load and drain state).
func (n *node) startFleet(relayIPs, externalIPs []netip.Addr) error {
	o := n.o
	if o.clusterAddr == "" {
		return nil
	}
	var key []byte
	if o.clusterKey != "" {
		k, err := base64.StdEncoding.DecodeString(o.clusterKey)
		if err != nil {
			return fmt.Errorf("--cluster-key: want base64: %w", err)
		}
		key = k
	}
	static := cluster.Meta{Zone: o.zone, Capacity: o.capacity, Version: version, RelayPorts: [2]int{o.minPort, o.maxPort},
		Listen: map[string]string{}, Ports: map[string]int{}}
	// The address clients reach a listener on, chosen as for this node's
	// own ICE URLs (iceURLs): the external IP of the family, else the
	// listen IP, else the relay IP. ALTERNATE-SERVER needs an IP, so
	// --public-host (a name) is not used here.
	advertised := func(listen string) (netip.AddrPort, bool) {
		ap, err := netip.ParseAddrPort(listen)
		if err != nil {
			return netip.AddrPort{}, false
		}
		ip := ap.Addr().Unmap()
		for _, e := range externalIPs {
			if e.Is6() == ip.Is6() {
				return netip.AddrPortFrom(e, ap.Port()), true
			}
		}
		if !ip.IsUnspecified() {
			return netip.AddrPortFrom(ip, ap.Port()), true
		}
		for _, e := range relayIPs {
			if e.Is6() == ip.Is6() {
				return netip.AddrPortFrom(e, ap.Port()), true
			}
		}
		return netip.AddrPort{}, false
	}
	for _, kind := range []string{"udp", "tls", "dtls"} {
		for _, l := range n.listens[kind] {
			ap, ok := advertised(l)
			if !ok {
				continue
			}
			if static.Ports[kind] == 0 {
				static.Ports[kind] = int(ap.Port())
			}
			fam := "4"
			if ap.Addr().Is6() {
				fam = "6"
			}
			if _, seen := static.Listen[fam]; kind == "udp" && !seen {
				static.Listen[fam] = ap.String()
			}
		}
	}
	// Host is what this node's own URLs carry, so that a call placed here
	// by another member gets the same URLs as one placed by this node.
	static.Host = hostOfURL(n.urls[0])
	for _, list := range [][]netip.Addr{externalIPs, relayIPs} {
		for _, ip := range list {
			static.Relay = append(static.Relay, ip.String())
		}
	}
	f := &fleet{meta: static, redirected: cluster.NewRedirected(time.Minute, 100000, nil)}
	c, err := cluster.New(cluster.Config{
		NodeID: o.nodeID,
		Listen: o.clusterAddr,
		Join:   o.join,
		Key:    key,
		Meta: func() cluster.Meta {
			m := f.meta
			m.Allocations = n.relay.AllocationCount()
			m.Draining = n.leaving.Load() || n.relay.Draining()
			m.BitsPerSecond = n.bps.Load()
			return m
		},
		MemberLost: func(string) { n.m.FleetMembersLost.Inc() },
		Logger:     n.log,
	})
	if err != nil {
		return err
	}
	f.c = c
	n.fleet.Store(f)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		n.watchFleet(f, stop)
	}()
	// The watcher reads the kernel path's counters: close stops it before
	// it closes the kernel path.
	n.stopFleet = func() { close(stop); <-done }
	n.closers = append(n.closers, closerFunc(func() error { c.Leave(time.Second); return nil }))
	n.log.Info("fleet member", "node_id", o.nodeID, "gossip", c.Addr(), "members", len(c.Nodes()))
	return nil
}

// redirectHook is the relay's Redirect for a fleet member, nil otherwise.
func redirectHook(o *options, n *node) func(string, net.Addr, string) (relay.Alternate, bool) {
	if o.clusterAddr == "" {
		return nil
	}
	return n.redirect
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// redirect is relay.Config.Redirect: an Allocate whose credentials name a
// call placed on another live, non-draining member is sent there, unless
// this node sent the same client away recently (views of the fleet differ
// for a moment during changes; serving beats bouncing). Credentials that
// name the call but no node (minted elsewhere) are placed now.
func (n *node) redirect(user string, src net.Addr, transport string) (relay.Alternate, bool) {
	f := n.fleet.Load()
	if f == nil {
		return relay.Alternate{}, false
	}
	call, zone, placed, _, ok := cluster.ParseCallUser(user)
	if !ok {
		return relay.Alternate{}, false
	}
	from := addrPortOf(src)
	ip := from.Addr()
	if !ip.IsValid() || f.redirected.Seen(user, from) {
		return relay.Alternate{}, false
	}
	// A call placed here (or nowhere in particular) while this node drains
	// goes to the member placement would choose without it: drain, don't drop.
	elsewhere := func() (cluster.Node, bool) {
		if !n.relay.Draining() {
			return cluster.Node{}, false
		}
		o, out := f.c.OwnerExcept(call, zone, f.c.ID())
		return o, out != cluster.NoMember
	}
	var owner cluster.Node
	if placed != "" {
		m, ok := f.c.Member(placed)
		if ok && !m.Self && !m.Meta.Draining {
			owner = m
		} else if owner, ok = elsewhere(); !ok {
			// Placed here, or on a member that is gone or draining: serve
			// it here (unless this node drains: then elsewhere() decided).
			return relay.Alternate{}, false
		}
	} else {
		o, out := f.c.Owner(call, zone)
		if out == cluster.NoMember || o.Self {
			var ok bool
			if o, ok = elsewhere(); !ok {
				return relay.Alternate{}, false
			}
		}
		owner = o
	}
	alt, ok := alternateFor(owner.Meta, transport, ip.Is6())
	if !ok {
		return relay.Alternate{}, false
	}
	f.redirected.Note(user, from)
	n.m.Redirects.Inc()
	return relay.Alternate{Server: alt, Domain: certName(owner.Meta.Host)}, true
}

// certName is host when it is a DNS name (the owner's --public-host, which
// its TLS certificate names), for ALTERNATE-DOMAIN; "" for an IP address,
// which the client then checks as it checked this node.
func certName(host string) string {
	if _, err := netip.ParseAddr(host); err == nil || host == "" || len(host) > 253 {
		return ""
	}
	return host
}

// alternateFor is owner's listener for transport in the client's family
// (RFC 8656 §7.2: ALTERNATE-SERVER of the same family).
func alternateFor(m cluster.Meta, transport string, v6 bool) (netip.AddrPort, bool) {
	fam := "4"
	if v6 {
		fam = "6"
	}
	base, err := netip.ParseAddrPort(m.Listen[fam])
	if err != nil {
		return netip.AddrPort{}, false
	}
	switch transport {
	case "udp", "tcp":
		return base, true
	case "tls", "dtls":
		if p := m.Ports[transport]; p > 0 {
			return netip.AddrPortFrom(base.Addr(), uint16(p)), true
		}
	}
	return netip.AddrPort{}, false
}

func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// fleetURLs are the ICE URLs of a member, from its gossiped metadata, in
// the same shape as this node's own (see iceURLs).
func fleetURLs(m cluster.Meta) []string {
	if m.Host == "" {
		return nil
	}
	var urls []string
	for _, kind := range []string{"udp", "tls"} {
		if p := m.Ports[kind]; p > 0 {
			urls = append(urls, listenerURLs(kind, net.JoinHostPort(m.Host, strconv.Itoa(p)))...)
		}
	}
	return urls
}

// place answers /v1/ice-servers for a call: the owner's URLs and the REST id
// that names the call and the node it was placed on. Without a fleet, or
// when nobody is eligible, this node serves the call.
func (n *node) place(call, zone, user string) (urls []string, id string, err error) {
	f := n.fleet.Load()
	if f == nil {
		if call == "" {
			return n.urls, user, nil
		}
		id, err = cluster.CallUser(call, zone, "", user)
		return n.urls, id, err
	}
	key := call
	if key == "" {
		key = user
	}
	owner, out := f.c.Owner(key, zone)
	result := "remote"
	urls = fleetURLs(owner.Meta)
	switch {
	case out == cluster.NoMember || len(urls) == 0:
		result, owner, urls = "fallback", cluster.Node{ID: f.c.ID()}, n.urls
	case owner.Self:
		result, urls = "local", n.urls
	}
	id = user
	if call != "" {
		if id, err = cluster.CallUser(call, zone, owner.ID, user); err != nil {
			return nil, "", err
		}
	}
	n.m.Placements.WithLabelValues(result).Inc()
	return urls, id, nil
}

// watchFleet keeps the fleet gauges current.
func (n *node) watchFleet(f *fleet, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastBytes, lastAt := n.m.RelayedBytes(), time.Now()
	for {
		if b, at := n.m.RelayedBytes(), time.Now(); at.After(lastAt) {
			n.bps.Store(int64((b - lastBytes) * 8 / at.Sub(lastAt).Seconds()))
			lastBytes, lastAt = b, at
		}
		var alive, draining, total, mine float64
		var peers []relay.FleetPeer
		for _, m := range f.c.Nodes() {
			if !m.Self {
				for _, r := range m.Meta.Relay {
					if ip, err := netip.ParseAddr(r); err == nil {
						peers = append(peers, relay.FleetPeer{Addr: ip, MinPort: m.Meta.RelayPorts[0], MaxPort: m.Meta.RelayPorts[1]})
					}
				}
			}
			if m.Meta.Draining {
				draining++
			} else {
				alive++
			}
			total += float64(m.Meta.Allocations)
			if m.Self {
				mine = float64(m.Meta.Allocations)
			}
		}
		n.m.FleetMembers.WithLabelValues("alive").Set(alive)
		n.m.FleetMembers.WithLabelValues("draining").Set(draining)
		share := 1.0
		if total > 0 {
			share = mine / total
		}
		n.m.FleetLoadShare.Set(share)
		n.relay.SetFleetPeers(peers)
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// hostOfURL is the host of a stun:/turn:/turns: URL ("turn:[::1]:3478?transport=udp" -> "::1").
func hostOfURL(u string) string {
	_, rest, _ := strings.Cut(u, ":")
	hostport, _, _ := strings.Cut(rest, "?")
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	return host
}
