// Command supernode is a STUN/TURN relay node: flags -> logger -> sockets ->
// relay + api -> signals. Everything testable lives in the packages it wires.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/offload"
	"github.com/supernode/supernode/relay"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	err := run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, sigs, nil)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "supernode:", err)
		os.Exit(1)
	}
}

func newLogger(o *options, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	h := &slog.HandlerOptions{Level: lv}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, h)), nil
	}
	return slog.New(slog.NewTextHandler(w, h)), nil
}

// loadCredentials reads --user, --users-file, --auth-secret and
// --auth-secret-file.
func loadCredentials(o *options) (allocation.Credentials, error) {
	c := allocation.Credentials{Users: map[string]string{}, Secrets: append([]string(nil), o.secrets...)}
	for _, u := range o.users {
		n, p, _ := strings.Cut(u, ":")
		c.Users[n] = p
	}
	if o.usersFile != "" {
		lines, err := readLines(o.usersFile)
		if err != nil {
			return c, fmt.Errorf("--users-file: %w", err)
		}
		for i, l := range lines {
			n, p, ok := strings.Cut(l, ":")
			if !ok || n == "" || p == "" {
				return c, fmt.Errorf("--users-file %s: line %d: want name:password", o.usersFile, i+1)
			}
			c.Users[n] = p
		}
	}
	if o.secretFile != "" {
		lines, err := readLines(o.secretFile)
		if err != nil {
			return c, fmt.Errorf("--auth-secret-file: %w", err)
		}
		if len(lines) == 0 {
			return c, fmt.Errorf("--auth-secret-file %s: no secret in file", o.secretFile)
		}
		c.Secrets = append(c.Secrets, lines...)
	}
	return c, nil
}

// readLines returns the non-empty, non-comment lines of a file.
func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && l[0] != '#' {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// defaultRelayIP is the first global unicast IPv4 address of the interface
// that carries the default route (from /proc/net/route), else of any up,
// non-loopback interface, else 127.0.0.1. Set --relay-ip in production.
func defaultRelayIP() netip.Addr {
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

// defaultRouteInterface names the interface of the IPv4 default route.
func defaultRouteInterface() string {
	lines, err := readLines("/proc/net/route")
	if err != nil {
		return ""
	}
	for _, l := range lines[min(1, len(lines)):] {
		f := strings.Fields(l)
		if len(f) > 2 && f[1] == "00000000" {
			return f[0]
		}
	}
	return ""
}

// localIPs lists every address of this host, so the relay can keep clients
// off the node's own services.
func localIPs() []netip.Addr {
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

func parseIPs(flagName string, vals []string) ([]netip.Addr, error) {
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

// bindable checks that relay sockets can bind to each --relay-ip: an
// address that is not on this host would otherwise give a node that
// reports ready and answers every Allocate with 508.
func bindable(ips []netip.Addr) error {
	for _, ip := range ips {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return fmt.Errorf("--relay-ip %s: relay sockets cannot bind to it (is it an address of this host?): %w", ip, err)
		}
		_ = pc.Close()
	}
	return nil
}

// node is a running supernode.
type node struct {
	o       *options
	log     *slog.Logger
	m       *metrics.Metrics
	store   *allocation.Store
	cert    *relay.Certificate
	relay   *relay.Server
	offload *offload.Offload // nil: the kernel path is off
	http    *http.Server
	httpLn  net.Listener
	urls    []string
	listens map[string][]string // transport -> actual listen addresses
	closers []io.Closer
	fleet   atomic.Pointer[fleet] // nil for a fleet of one
	// stopFleet stops the fleet watcher and waits for it; nil outside a fleet.
	stopFleet func()
	leaving   atomic.Bool // draining, as gossiped to the fleet
	// signalled is set by SIGTERM: the drain ends in an exit and the admin
	// API cannot cancel it.
	signalled atomic.Bool
	// drainMu orders a drain's start by SIGTERM against the admin API's
	// start or cancel, so a cancel cannot undo a SIGTERM drain begun
	// between its check and its Undrain.
	drainMu sync.Mutex
	bps     atomic.Int64 // relayed bits per second over the last second, for gossip
}

// iceURLs builds one URL per listener for /v1/ice-servers.
// A listener of a family with no address to advertise is left out, with a
// warning, rather than failing start-up.
func iceURLs(o *options, log *slog.Logger, relayIPs, externalIPs []netip.Addr, listens map[string][]string) ([]string, error) {
	hostFor := func(listenAddr string) (string, error) {
		h, p, err := net.SplitHostPort(listenAddr)
		if err != nil {
			return "", err
		}
		if o.publicHost != "" {
			return net.JoinHostPort(o.publicHost, p), nil
		}
		v6 := false
		if ip, err := netip.ParseAddr(h); err == nil {
			v6 = ip.Unmap().Is6()
			if !ip.IsUnspecified() {
				for _, e := range externalIPs {
					if e.Is6() == v6 {
						return net.JoinHostPort(e.String(), p), nil
					}
				}
				return net.JoinHostPort(ip.Unmap().String(), p), nil
			}
		}
		for _, list := range [][]netip.Addr{externalIPs, relayIPs} {
			for _, e := range list {
				if e.Is6() == v6 {
					return net.JoinHostPort(e.String(), p), nil
				}
			}
		}
		return "", fmt.Errorf("no address of the family of %s to advertise: set --public-host", listenAddr)
	}
	var urls []string
	seen := map[string]bool{}
	add := func(u string) {
		if !seen[u] {
			seen[u] = true
			urls = append(urls, u)
		}
	}
	for _, kind := range []string{"udp", "tls"} {
		for _, a := range listens[kind] {
			hp, err := hostFor(a)
			if err != nil {
				log.Warn("listener left out of /v1/ice-servers", "listen", a, "reason", err.Error())
				continue
			}
			for _, u := range listenerURLs(kind, hp) {
				add(u)
			}
		}
	}
	return urls, nil
}

// listenerURLs are the ICE URLs of one listener: a UDP/TCP listener (kind
// udp) serves stun: and turn: over both transports, a TLS one turns:.
func listenerURLs(kind, hostport string) []string {
	switch kind {
	case "udp":
		return []string{"stun:" + hostport, "turn:" + hostport + "?transport=udp", "turn:" + hostport + "?transport=tcp"}
	case "tls":
		return []string{"turns:" + hostport + "?transport=tcp"}
	}
	return nil
}

// start opens every socket and starts the relay and the HTTP server.
func start(o *options, log *slog.Logger) (_ *node, err error) {
	n := &node{o: o, log: log, m: metrics.New(version)}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	creds, err := loadCredentials(o)
	if err != nil {
		return nil, err
	}
	if err := checkSecrets(o, creds.Secrets, creds.Users); err != nil {
		return nil, err
	}
	if len(creds.Users) == 0 && len(creds.Secrets) == 0 {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		creds.Secrets = []string{base64.RawURLEncoding.EncodeToString(b)}
		log.Warn("no --user or --auth-secret configured: generated a REST secret for this run only; fetch credentials from /v1/ice-servers")
	}
	n.store = allocation.NewStore(o.realm, creds, nil)
	n.store.SetMaxTTL(o.maxCredTTL)

	relayIPs, err := parseIPs("relay-ip", o.relayIP)
	if err != nil {
		return nil, err
	}
	if len(relayIPs) == 0 {
		relayIPs = []netip.Addr{defaultRelayIP()}
	} else if err := bindable(relayIPs); err != nil {
		return nil, err
	}
	externalIPs, err := parseIPs("external-ip", o.externalIP)
	if err != nil {
		return nil, err
	}
	policy, err := relay.NewPolicy(o.allowPeer, o.denyPeer)
	if err != nil {
		return nil, err
	}
	if o.cert != "" || o.key != "" {
		if n.cert, err = relay.LoadCertificate(o.cert, o.key); err != nil {
			return nil, err
		}
		if name := certName(o.publicHost); name != "" {
			if leaf, err := x509.ParseCertificate(n.cert.Get().Certificate[0]); err == nil && leaf.VerifyHostname(name) != nil {
				// Clients check turns: URLs and fleet redirects against it.
				log.Warn("--public-host is not a name in --cert: TLS and DTLS clients sent to this node by name will reject its certificate",
					"public_host", name, "cert", o.cert)
			}
		}
	}

	var ls []relay.Listener
	var udp []net.PacketConn
	listens := map[string][]string{}
	for _, a := range o.listen {
		pcs, tl, err := listenUDPAndTCP(a, o.udpSockets, o.udpRcvbuf)
		if err != nil {
			return nil, fmt.Errorf("--listen: %w", err)
		}
		for _, pc := range pcs {
			n.closers = append(n.closers, pc)
			ls = append(ls, relay.Listener{Transport: "udp", PacketConn: pc})
		}
		udp = append(udp, pcs...)
		n.closers = append(n.closers, tl)
		ls = append(ls, relay.Listener{Transport: "tcp", Listener: tl})
		listens["udp"] = append(listens["udp"], pcs[0].LocalAddr().String())
	}
	if len(udp) > 0 && o.udpRcvbuf > 0 {
		if got, err := relay.RcvbufSize(udp[0]); err == nil && got < o.udpRcvbuf {
			log.Info("UDP receive buffer smaller than --udp-rcvbuf: the kernel capped it (raise net.core.rmem_max, or give the node CAP_NET_ADMIN)",
				"asked_bytes", o.udpRcvbuf, "obtained_bytes", got)
		}
	}
	if err := relay.CountRcvbufDrops(n.m, udp); errors.Is(err, relay.ErrDropsUnsupported) {
		log.Info("kernel receive-buffer drops are not counted on this system", "reason", err.Error())
	} else if err != nil {
		return nil, err
	}
	for _, a := range o.tlsListen {
		tl, err := relay.ListenTLS(a, n.cert)
		if err != nil {
			return nil, fmt.Errorf("--tls-listen: %w", err)
		}
		n.closers = append(n.closers, tl)
		ls = append(ls, relay.Listener{Transport: "tls", Listener: tl})
		listens["tls"] = append(listens["tls"], tl.Addr().String())
	}
	for _, a := range o.dtlsListen {
		dl, err := relay.ListenDTLS(a, n.cert)
		if err != nil {
			return nil, fmt.Errorf("--dtls-listen: %w", err)
		}
		n.closers = append(n.closers, dl)
		ls = append(ls, relay.Listener{Transport: "dtls", Listener: dl})
		listens["dtls"] = append(listens["dtls"], dl.Addr().String())
	}

	kernel, err := startOffload(o, log, n.m, relayIPs, listens["udp"])
	if err != nil {
		return nil, err
	}
	if kernel != nil {
		n.offload = kernel
	}

	n.relay, err = relay.New(relay.Config{
		Offload:             kernel,
		Listeners:           ls,
		Realm:               o.realm,
		Credentials:         n.store,
		Table:               allocation.NewTable(allocation.TableConfig{UserQuota: o.userQuota, TotalQuota: o.totalQuota}),
		Policy:              policy,
		Metrics:             n.m,
		Logger:              log,
		RelayIPs:            relayIPs,
		ExternalIPs:         externalIPs,
		LocalIPs:            localIPs(),
		MinPort:             o.minPort,
		MaxPort:             o.maxPort,
		MaxBPS:              o.maxBPS,
		AllocationLifetime:  o.lifetime,
		PermissionLifetime:  o.permLifetime,
		ChannelLifetime:     o.chanLifetime,
		IdleTimeout:         o.idleTimeout,
		FirstMessageTimeout: o.firstTimeout,
		MaxConnsPerIP:       o.maxConnsIP,
		MaxPendingConns:     o.maxPending,
		AuthTimeout:         o.authTimeout,
		MaxPermissions:      o.maxPerms,
		MaxChannels:         o.maxChannels,
		UserAllocRate:       o.allocRate,
		UnauthRate:          o.unauthRate,
		AuthFailures:        authFailures(o.authFailures),
		AuthBackoff:         o.authBackoff,
		Redirect:            redirectHook(o, n),
		LogSessions:         o.logSessions,
	})
	if err != nil {
		return nil, err
	}

	n.listens = listens
	if n.urls, err = iceURLs(o, log, relayIPs, externalIPs, listens); err != nil {
		return nil, err
	}
	if len(n.urls) == 0 {
		return nil, errors.New("no listener has an address clients can reach: set --public-host, --external-ip or --relay-ip")
	}
	if err := n.startFleet(relayIPs, externalIPs); err != nil {
		return nil, err
	}
	if o.httpListen != "" {
		if err := n.startHTTP(); err != nil {
			return nil, err
		}
	}
	log.Info("supernode ready", "version", version, "listen", o.listen.String(), "tls", o.tlsListen.String(),
		"dtls", o.dtlsListen.String(), "udp_sockets", o.udpSockets, "relay_ip", fmt.Sprint(relayIPs),
		"ports", strconv.Itoa(o.minPort)+"-"+strconv.Itoa(o.maxPort), "realm", o.realm, "http", n.httpAddr())
	if n.store.HasSecret() && n.httpLn != nil {
		log.Info("fetch TURN credentials with: curl '" + n.iceURLExample() + "'")
	}
	return n, nil
}

func (n *node) httpAddr() string {
	if n.httpLn == nil {
		return ""
	}
	return n.httpLn.Addr().String()
}

func (n *node) iceURLExample() string {
	auth := ""
	if n.o.apiToken != "" {
		auth = "' -H 'Authorization: Bearer <token>"
	}
	return "http://" + n.httpAddr() + "/v1/ice-servers?user=alice&ttl=3600" + auth
}

func (n *node) startHTTP() error {
	host, _, err := net.SplitHostPort(n.o.httpListen)
	if err != nil {
		return fmt.Errorf("--http-listen %q: %w", n.o.httpListen, err)
	}
	ip, perr := netip.ParseAddr(host)
	loopback := host == "localhost" || (perr == nil && ip.IsLoopback())
	if !loopback && n.o.apiToken == "" {
		return fmt.Errorf("--http-listen %s is not a loopback address: set --api-token to protect /v1/*", n.o.httpListen)
	}
	h, err := api.New(api.Config{Metrics: n.m, Credentials: n.store, Node: n.relay, URLs: n.urls, Token: n.o.apiToken,
		MaxTTL: n.o.maxCredTTL, DefaultTTL: min(24*time.Hour, n.o.maxCredTTL),
		Profiling: n.o.pprof, DebugUI: n.o.debugUI, Place: n.place, Admin: nodeAdmin{n}, Logger: n.log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", n.o.httpListen)
	if err != nil {
		return fmt.Errorf("--http-listen: %w", err)
	}
	n.httpLn = ln
	n.http = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() {
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server stopped", "err", err)
		}
	}()
	return nil
}

// reload re-reads the users file, secret file and certificate (SIGHUP).
// On any error the old values stay in force.
func (n *node) reload() {
	creds, err := loadCredentials(n.o)
	if err == nil {
		err = checkSecrets(n.o, creds.Secrets, creds.Users)
	}
	if err != nil {
		n.log.Error("reload failed, keeping old credentials", "err", err)
	} else if len(creds.Users) == 0 && len(creds.Secrets) == 0 {
		n.log.Warn("reload: no credentials configured, keeping old ones")
	} else {
		n.store.Set(creds)
		n.log.Info("reloaded credentials", "users", len(creds.Users), "secrets", len(creds.Secrets))
	}
	if n.cert != nil {
		if err := n.cert.Reload(); err != nil {
			n.log.Error("reload failed, keeping old certificate", "err", err)
		} else {
			n.log.Info("reloaded certificate")
		}
	}
}

func (n *node) close() {
	if n.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = n.http.Shutdown(ctx)
		cancel()
	}
	if n.relay != nil {
		_ = n.relay.Close()
	}
	if n.stopFleet != nil {
		n.stopFleet()
	}
	if n.offload != nil {
		_ = n.offload.Close()
	}
	for _, c := range n.closers {
		_ = c.Close()
	}
}

// listenUDPAndTCP opens the UDP sockets and the TCP listener of one --listen
// address on one port. With port 0 the kernel picks the UDP port, and TCP
// may already use that port (an outgoing connection's, say): then the pair
// is tried again on another.
func listenUDPAndTCP(addr string, sockets, rcvbuf int) ([]net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	for try := 1; ; try++ {
		pcs, err := relay.ListenUDP(addr, sockets, rcvbuf)
		if err != nil {
			return nil, nil, err
		}
		tl, err := relay.ListenTCP(pcs[0].LocalAddr().String())
		if err == nil {
			return pcs, tl, nil
		}
		for _, pc := range pcs {
			_ = pc.Close()
		}
		if port != "0" || !errors.Is(err, syscall.EADDRINUSE) || try == 20 {
			return nil, nil, err
		}
	}
}

// run starts the node and handles signals until it should exit. ready, if
// not nil, receives the node once it serves.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer, sigs <-chan os.Signal, ready chan<- *node) error {
	if len(args) > 0 {
		if _, ok := subcommands[args[0]]; ok {
			return runSubcommand(args[0], args[1:], getenv, stdout, stderr)
		}
	}
	o, err := parseOptions(args, getenv, stderr)
	if err != nil {
		return err
	}
	if o.version {
		fmt.Fprintln(stdout, "supernode", version)
		return nil
	}
	log, err := newLogger(o, stderr)
	if err != nil {
		return o.locate(err)
	}
	for _, msg := range unknownEnv(givenEnv(os.Environ(), getenv)) {
		log.Warn(msg)
	}
	n, err := start(o, log)
	if err != nil {
		return o.locate(err)
	}
	defer n.close()
	if ready != nil {
		ready <- n
	}

	var drainDeadline <-chan time.Time
	var poll <-chan time.Time
	for {
		select {
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGHUP:
				n.reload()
			case sig == syscall.SIGTERM && drainDeadline == nil:
				n.drainMu.Lock()
				n.signalled.Store(true)
				if f := n.fleet.Load(); f != nil {
					// Tell the fleet first, and only then send this node's
					// late callers elsewhere: a member that has not heard of
					// the drain yet would send them straight back.
					n.leaving.Store(true)
					f.c.Announce()
				}
				n.relay.Drain()
				n.drainMu.Unlock()
				log.Info("SIGTERM: draining; send SIGTERM again or SIGINT to exit now",
					"allocations", n.relay.AllocationCount(), "drain_timeout", o.drainTimeout.String())
				drainDeadline = time.After(o.drainTimeout)
				t := time.NewTicker(250 * time.Millisecond)
				defer t.Stop()
				poll = t.C
			default:
				log.Info("exiting now", "signal", sig.String(), "allocations", n.relay.AllocationCount())
				return nil
			}
		case <-poll:
			if n.relay.AllocationCount() == 0 {
				log.Info("drained: no allocations left, exiting")
				return nil
			}
		case <-drainDeadline:
			log.Warn("drain timeout passed, exiting", "allocations", n.relay.AllocationCount())
			return nil
		}
	}
}

// authFailures maps --auth-failures (0 = never) to relay.Config's (negative
// disables, zero is the default).
func authFailures(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
