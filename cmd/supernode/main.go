// Command supernode is a STUN/TURN relay node: flags -> logger -> sockets ->
// relay + api + fleet -> signals. Everything testable lives in the packages
// it wires: the data plane in relay (user space) and offload (kernel),
// credentials and quotas in allocation, the fleet's decisions in fleet (on
// cluster's membership), addresses and ICE URLs in endpoint, the HTTP
// surface in api, the config file and environment in config. The same
// binary runs the operator's commands (supernode allocations, kill, drain,
// fleet, credentials), which are package ctl's.
package main

import (
	"context"
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
	"syscall"
	"time"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/config"
	"github.com/supernode/supernode/ctl"
	"github.com/supernode/supernode/endpoint"
	"github.com/supernode/supernode/fleet"
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
	fleet   *fleet.Fleet // a fleet of one without --cluster-listen
}

// start opens every socket and starts the relay, the fleet membership and
// the HTTP server.
func start(o *options, log *slog.Logger) (_ *node, err error) {
	n := &node{o: o, log: log, m: metrics.New(version)}
	fc := o.fleet
	fc.Version, fc.RelayPorts, fc.Metrics, fc.Logger = version, [2]int{o.relay.MinPort, o.relay.MaxPort}, n.m, log
	n.fleet = fleet.New(fc)
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	if err := n.openStore(); err != nil {
		return nil, err
	}
	addrs := endpoint.Addresses{PublicHost: o.publicHost, Listens: map[string][]string{}}
	if addrs.Relay, err = endpoint.RelayIPs(o.relayIP); err != nil {
		return nil, err
	}
	if addrs.External, err = endpoint.ParseIPs("external-ip", o.externalIP); err != nil {
		return nil, err
	}
	policy, err := relay.NewPolicy(o.allowPeer, o.denyPeer)
	if err != nil {
		return nil, err
	}
	if err := n.loadCert(); err != nil {
		return nil, err
	}
	ls, err := n.listen(addrs.Listens)
	if err != nil {
		return nil, err
	}
	if err := n.startOffload(addrs); err != nil {
		return nil, err
	}
	if n.relay, err = relay.New(n.relayConfig(ls, policy, addrs)); err != nil {
		return nil, err
	}
	n.listens = addrs.Listens
	if n.urls = addrs.URLs(log); len(n.urls) == 0 {
		return nil, errors.New("no listener has an address clients can reach: set --public-host, --external-ip or --relay-ip")
	}
	if err := n.fleet.Start(n.relay, addrs, n.urls); err != nil {
		return nil, err
	}
	if o.httpListen != "" {
		if err := n.startHTTP(); err != nil {
			return nil, err
		}
	}
	log.Info("supernode ready", "version", version, "listen", o.listen.String(), "tls", o.tlsListen.String(),
		"dtls", o.dtlsListen.String(), "udp_sockets", o.udpSockets, "relay_ip", fmt.Sprint(addrs.Relay),
		"ports", strconv.Itoa(o.relay.MinPort)+"-"+strconv.Itoa(o.relay.MaxPort), "realm", o.relay.Realm, "http", n.httpAddr())
	if n.store.HasSecret() && n.httpLn != nil {
		log.Info("fetch TURN credentials with: curl '" + n.iceURLExample() + "'")
	}
	return n, nil
}

// openStore loads the credentials into a new store, with a secret made
// up for this run when none is configured.
func (n *node) openStore() (err error) {
	var generated bool
	if n.store, generated, err = n.o.creds.Open(n.o.relay.Realm); err != nil {
		return err
	}
	if generated {
		n.log.Warn("no --user or --auth-secret configured: generated a REST secret for this run only; fetch credentials from /v1/ice-servers")
	}
	n.store.SetMaxTTL(n.o.api.MaxTTL)
	return nil
}

// loadCert loads --cert and --key, if given, and warns when clients sent
// here by --public-host would reject the certificate.
func (n *node) loadCert() (err error) {
	o := n.o
	if o.cert == "" && o.key == "" {
		return nil
	}
	if n.cert, err = relay.LoadCertificate(o.cert, o.key); err != nil {
		return err
	}
	// Clients check turns: URLs and fleet redirects against it.
	if name := endpoint.CertName(o.publicHost); name != "" && n.cert.VerifyHostname(name) != nil {
		n.log.Warn("--public-host is not a name in --cert: TLS and DTLS clients sent to this node by name will reject its certificate",
			"public_host", name, "cert", o.cert)
	}
	return nil
}

// listen opens every listener, recording each one's address in listens by
// kind (udp, tls, dtls).
func (n *node) listen(listens map[string][]string) ([]relay.Listener, error) {
	o := n.o
	var ls []relay.Listener
	var udp []net.PacketConn
	for _, a := range o.listen {
		pcs, tl, err := relay.ListenUDPAndTCP(a, o.udpSockets, o.udpRcvbuf)
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
	if err := n.watchRcvbuf(udp); err != nil {
		return nil, err
	}
	for _, secure := range []struct {
		kind   string
		addrs  config.List
		listen func(string, *relay.Certificate) (net.Listener, error)
	}{{"tls", o.tlsListen, relay.ListenTLS}, {"dtls", o.dtlsListen, relay.ListenDTLS}} {
		for _, a := range secure.addrs {
			l, err := secure.listen(a, n.cert)
			if err != nil {
				return nil, fmt.Errorf("--%s-listen: %w", secure.kind, err)
			}
			n.closers = append(n.closers, l)
			ls = append(ls, relay.Listener{Transport: secure.kind, Listener: l})
			listens[secure.kind] = append(listens[secure.kind], l.Addr().String())
		}
	}
	return ls, nil
}

// watchRcvbuf says when the kernel capped --udp-rcvbuf and counts the
// UDP sockets' receive-buffer drops where the kernel tells them.
func (n *node) watchRcvbuf(udp []net.PacketConn) error {
	if len(udp) > 0 && n.o.udpRcvbuf > 0 {
		if got, err := relay.RcvbufSize(udp[0]); err == nil && got < n.o.udpRcvbuf {
			n.log.Info("UDP receive buffer smaller than --udp-rcvbuf: the kernel capped it (raise net.core.rmem_max, or give the node CAP_NET_ADMIN)",
				"asked_bytes", n.o.udpRcvbuf, "obtained_bytes", got)
		}
	}
	if err := relay.CountRcvbufDrops(n.m, udp); errors.Is(err, relay.ErrDropsUnsupported) {
		n.log.Info("kernel receive-buffer drops are not counted on this system", "reason", err.Error())
	} else if err != nil {
		return err
	}
	return nil
}

// startOffload starts the kernel path as --offload says (offload.Start),
// on the interfaces of the relay addresses and the UDP listeners.
func (n *node) startOffload(addrs endpoint.Addresses) (err error) {
	ips := append([]netip.Addr(nil), addrs.Relay...)
	for _, a := range addrs.Listens["udp"] {
		ips = append(ips, netip.MustParseAddrPort(a).Addr()) // as its socket gave it
	}
	cfg := offload.Config{Addrs: ips, MaxChannels: n.o.offloadMax, Logger: n.log}
	if n.offload, err = offload.Start(n.o.offload, cfg); err != nil {
		return fmt.Errorf("--offload on: %w", err)
	}
	if n.offload != nil {
		n.offload.Register(n.m)
	}
	return nil
}

// relayConfig is the relay's configuration: the flags bound into
// options.relay and what start built from the others.
func (n *node) relayConfig(ls []relay.Listener, policy *relay.Policy, addrs endpoint.Addresses) relay.Config {
	cfg := n.o.relay
	cfg.Offload, cfg.Listeners, cfg.Credentials, cfg.Policy = n.offload, ls, n.store, policy
	cfg.Table = allocation.NewTable(n.o.table)
	cfg.Metrics, cfg.Logger = n.m, n.log
	cfg.RelayIPs, cfg.ExternalIPs, cfg.LocalIPs = addrs.Relay, addrs.External, endpoint.LocalIPs()
	cfg.AuthFailures = authFailures(n.o.authFailures)
	if n.fleet.Clustered() {
		cfg.Redirect = n.fleet.Redirect
	}
	return cfg
}

func (n *node) httpAddr() string {
	if n.httpLn == nil {
		return ""
	}
	return n.httpLn.Addr().String()
}

func (n *node) iceURLExample() string {
	auth := ""
	if n.o.api.Token != "" {
		auth = "' -H 'Authorization: Bearer <token>"
	}
	return "http://" + n.httpAddr() + "/v1/ice-servers?user=alice&ttl=3600" + auth
}

func (n *node) startHTTP() error {
	loopback, err := endpoint.Loopback(n.o.httpListen)
	if err != nil {
		return fmt.Errorf("--http-listen %q: %w", n.o.httpListen, err)
	}
	if !loopback && n.o.api.Token == "" {
		return fmt.Errorf("--http-listen %s is not a loopback address: set --api-token to protect /v1/*", n.o.httpListen)
	}
	ac := n.o.api
	ac.Metrics, ac.Credentials, ac.Node, ac.URLs, ac.DefaultTTL = n.m, n.store, n.relay, n.urls, min(24*time.Hour, ac.MaxTTL)
	ac.Place, ac.Admin, ac.Logger = n.fleet.Place, nodeAdmin{n.relay, n.fleet}, n.log
	h, err := api.New(ac)
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
	if creds, err := n.o.creds.Reload(n.store); errors.Is(err, allocation.ErrNoCredentials) {
		n.log.Warn("reload: no credentials configured, keeping old ones")
	} else if err != nil {
		n.log.Error("reload failed, keeping old credentials", "err", err)
	} else {
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
	if n.fleet != nil {
		n.fleet.Close()
	}
	if n.offload != nil {
		_ = n.offload.Close()
	}
	for _, c := range n.closers {
		_ = c.Close()
	}
}

// run starts the node and handles signals until it should exit. ready, if
// not nil, receives the node once it serves.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer, sigs <-chan os.Signal, ready chan<- *node) error {
	if len(args) > 0 && ctl.IsCommand(args[0]) {
		return ctl.Run(args[0], args[1:], getenv, stdout, stderr)
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
	for _, msg := range unknownEnv(config.GivenEnv(os.Environ(), getenv)) {
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
	return n.serve(sigs)
}

// serve handles signals until the node should exit: SIGHUP reloads,
// SIGTERM drains (and exits once drained or at --drain-timeout), another
// SIGTERM or SIGINT exits at once.
func (n *node) serve(sigs <-chan os.Signal) error {
	log, o := n.log, n.o
	var drainDeadline <-chan time.Time
	var poll <-chan time.Time
	for {
		select {
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGHUP:
				n.reload()
			case sig == syscall.SIGTERM && drainDeadline == nil:
				n.fleet.Drain(true) // the fleet hears first; the admin API cannot cancel it
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
