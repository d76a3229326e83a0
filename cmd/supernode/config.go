package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/config"
	"github.com/supernode/supernode/ctl"
	"github.com/supernode/supernode/endpoint"
	"github.com/supernode/supernode/fleet"
	"github.com/supernode/supernode/offload"
	"github.com/supernode/supernode/relay"
)

// options is everything the daemon is configured with.
type options struct {
	// origin says where each flag's values came from when it was not the
	// command line, so that an error found later names it.
	origin config.Origins
	// The components' settings are bound to their flags directly; start
	// adds what is built at run time (sockets, store, policy, addresses).
	relay relay.Config
	table allocation.TableConfig
	api   api.Config
	fleet fleet.Config
	creds allocation.Sources // re-read on SIGHUP

	config       string
	listen       config.List
	tlsListen    config.List
	dtlsListen   config.List
	cert, key    string
	udpSockets   int
	relayIP      config.List
	externalIP   config.List
	publicHost   string
	allowPeer    config.List
	denyPeer     config.List
	offload      offload.Mode
	offloadMax   int
	authFailures int
	udpRcvbuf    int
	httpListen   string
	drainTimeout time.Duration
	logLevel     string
	logFormat    string
	version      bool
}

func newFlagSet(o *options, out io.Writer) *flag.FlagSet {
	host, _ := os.Hostname()
	if host == "" {
		host = "supernode"
	}
	fs := flag.NewFlagSet("supernode", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.config, "config", "", "config `file`: one 'flag = value' line per setting, # comments; repeat a line for a repeatable flag")
	fs.Var(&o.listen, "listen", "UDP and TCP STUN/TURN listen address `host:port`, repeatable, IPv4 or IPv6 (default 0.0.0.0:3478)")
	fs.Var(&o.tlsListen, "tls-listen", "TLS (turns:) listen address `host:port`, repeatable; needs --cert and --key")
	fs.Var(&o.dtlsListen, "dtls-listen", "DTLS listen address `host:port`, repeatable; needs --cert and --key")
	fs.StringVar(&o.cert, "cert", "", "PEM certificate chain file for TLS and DTLS (re-read on SIGHUP)")
	fs.StringVar(&o.key, "key", "", "PEM private key file for TLS and DTLS (re-read on SIGHUP)")
	fs.IntVar(&o.udpSockets, "udp-sockets", runtime.NumCPU(), "SO_REUSEPORT UDP sockets per --listen address (count)")
	fs.Var(&o.relayIP, "relay-ip", "`IP` that relay sockets bind to, at most one per address family, repeatable (default: the first global IPv4 of this host, else 127.0.0.1)")
	fs.Var(&o.externalIP, "external-ip", "`IP` advertised in XOR-RELAYED-ADDRESS instead of the --relay-ip of the same family (1:1 NAT), repeatable")
	fs.StringVar(&o.publicHost, "public-host", "", "host name or IP put in the URLs of /v1/ice-servers (default: --external-ip, else the listen IP, else --relay-ip); in a fleet, a name is also the ALTERNATE-DOMAIN of TLS/DTLS redirects to this node")
	fs.IntVar(&o.relay.MinPort, "min-port", 49152, "lowest relay port (inclusive)")
	fs.IntVar(&o.relay.MaxPort, "max-port", 65535, "highest relay port (inclusive)")
	fs.StringVar(&o.relay.Realm, "realm", host, "long-term credential realm")
	fs.Var((*config.List)(&o.creds.Users), "user", "static long-term user `name:password`, repeatable")
	fs.StringVar(&o.creds.UsersFile, "users-file", "", "file of name:password lines, # comments (re-read on SIGHUP)")
	fs.Var((*config.List)(&o.creds.Secrets), "auth-secret", "TURN REST shared `secret` (coturn use-auth-secret), repeatable; the first mints credentials, all verify")
	fs.StringVar(&o.creds.SecretFile, "auth-secret-file", "", "file of REST secrets, one per line, first mints (re-read on SIGHUP)")
	fs.Var(&o.allowPeer, "allow-peer", "`CIDR` or IP peers may be in even if a default range refuses it, repeatable; the most specific rule wins; only an exact IP opens the node's own addresses beyond its relay ports")
	fs.Var(&o.denyPeer, "deny-peer", "`CIDR` or IP peers may not be in, repeatable; the most specific rule wins")
	addLimitFlags(fs, o)
	fs.StringVar(&o.httpListen, "http-listen", "127.0.0.1:9641", "HTTP address for /metrics, /healthz, /readyz, /v1/ice-servers and the admin API (/v1/allocations, /v1/drain, /v1/fleet); empty disables")
	fs.BoolVar(&o.api.Profiling, "pprof", false, "serve Go runtime profiles on --http-listen under /debug/pprof/ (behind --api-token when set)")
	fs.BoolVar(&o.api.DebugUI, "debug-ui", false, "serve the /debug/ice self-test page on --http-listen: a relay-only call through this node in the browser that opens it (it asks for --api-token to fetch credentials)")
	fs.StringVar(&o.api.Token, "api-token", "", "bearer token required on /v1/*; mandatory when --http-listen is not a loopback address")
	fs.StringVar(&o.fleet.NodeID, "node-id", host, "this node's unique name in the fleet")
	fs.StringVar(&o.fleet.Gossip, "cluster-listen", "", "gossip address `ip:port` (UDP and TCP) that other fleet members reach this node on; empty: a fleet of one")
	fs.Var((*config.List)(&o.fleet.Join), "join", "`host:port` of a fleet member's --cluster-listen to join, repeatable; a DNS name stands for all its addresses")
	fs.StringVar(&o.fleet.Key, "cluster-key", "", "base64 of a 16, 24 or 32-byte key encrypting gossip (AES); required unless --cluster-listen is loopback")
	fs.StringVar(&o.fleet.Zone, "zone", "", "this node's zone; /v1/ice-servers?zone= prefers nodes in it")
	fs.Float64Var(&o.fleet.Capacity, "capacity", 1, "this node's share of new calls relative to other members (weight)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 15*time.Minute, "after SIGTERM, how long existing allocations may keep relaying before the node exits")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error (debug includes pion's per-request logs)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.BoolVar(&o.relay.LogSessions, "log-sessions", true, "log one info line per ended allocation: user, call, transport, client, duration, bytes and packets each way, why it ended")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

// addLimitFlags adds the flags that bound what clients may do and hold:
// quotas, rates, lifetimes and timeouts (the README's "Abuse and limits").
func addLimitFlags(fs *flag.FlagSet, o *options) {
	fs.IntVar(&o.table.UserQuota, "user-quota", allocation.DefaultUserQuota, "most allocations one user id may hold at once (0 = unlimited)")
	fs.IntVar(&o.table.TotalQuota, "total-quota", 0, "most allocations on this node at once (0 = unlimited)")
	fs.StringVar((*string)(&o.offload), "offload", string(offload.Auto), "kernel data path for UDP ChannelData (eBPF, TCX): auto uses it when it can and logs why not, on refuses to start without it, off never uses it")
	fs.IntVar(&o.offloadMax, "offload-max-channels", offload.DefaultMaxChannels, "most channels (with a live permission) the kernel path relays at once, node-wide; more stay in user space")
	fs.Int64Var(&o.relay.MaxBPS, "max-bps", relay.DefaultMaxBPS, "bandwidth limit per allocation and direction in `bits/s`; excess packets are dropped (0 = unlimited)")
	fs.IntVar(&o.relay.MaxPermissions, "max-permissions", relay.DefaultMaxPermissions, "most peer IPs one allocation may hold permissions for; more get 508")
	fs.IntVar(&o.relay.MaxChannels, "max-channels", relay.DefaultMaxChannels, "most channels one allocation may bind; more get 508")
	fs.Float64Var(&o.relay.UserAllocRate, "user-alloc-rate", relay.DefaultUserAllocRate, "new allocations one user id may attempt per second, with a burst of 5 seconds' worth; more get 486 (0 = unlimited)")
	fs.Float64Var(&o.relay.UnauthRate, "unauth-rate", relay.DefaultUnauthRate, "unauthenticated requests (Binding, requests without MESSAGE-INTEGRITY or with a nonce not given to their address) one source IP (IPv6: /64) may send per second, burst twice that; the node takes 50 times that; more are dropped (0 = unlimited)")
	fs.IntVar(&o.authFailures, "auth-failures", 10, "failed password checks from one IP or for one username within a minute that start a backoff dropping its requests (0 = never)")
	fs.DurationVar(&o.relay.AuthBackoff, "auth-backoff", 5*time.Second, "first backoff after --auth-failures; it doubles while failures go on, up to 5m")
	fs.DurationVar(&o.api.MaxTTL, "max-credential-ttl", 7*24*time.Hour, "REST credentials expiring further in the future than this are refused (the /v1/ice-servers maximum)")
	fs.IntVar(&o.udpRcvbuf, "udp-rcvbuf", relay.DefaultUDPRcvbuf, "receive buffer of each UDP listener socket in `bytes` (0 = the kernel's default)")
	fs.DurationVar(&o.relay.AllocationLifetime, "allocation-lifetime", 10*time.Minute, "allocation lifetime when the client asks for none")
	fs.DurationVar(&o.relay.PermissionLifetime, "permission-lifetime", 300*time.Second, "how long a permission lives unless the client refreshes it (RFC 8656: 300s)")
	fs.DurationVar(&o.relay.ChannelLifetime, "channel-lifetime", 600*time.Second, "how long a channel binding lives unless the client refreshes it (RFC 8656: 600s)")
	fs.DurationVar(&o.relay.IdleTimeout, "idle-timeout", 10*time.Minute, "close a TCP/TLS/DTLS client connection with an allocation that is silent for this long (without one: at most 30s)")
	fs.DurationVar(&o.relay.FirstMessageTimeout, "first-message-timeout", 10*time.Second, "close a TCP/TLS/DTLS client connection that sends no complete STUN message (handshake included) in this time")
	fs.IntVar(&o.relay.MaxConnsPerIP, "max-conns-per-ip", relay.DefaultMaxConnsPerIP, "most TCP/TLS/DTLS client connections without an allocation one IP address (IPv6: /64) may hold at once (0 = unlimited)")
	fs.IntVar(&o.relay.MaxPendingConns, "max-pending-conns", relay.DefaultMaxPendingConns, "most TCP/TLS/DTLS client connections without an allocation on the node at once (0 = unlimited)")
	fs.DurationVar(&o.relay.AuthTimeout, "auth-timeout", 30*time.Second, "close a TCP/TLS/DTLS client connection that holds no allocation this long after it was accepted")
}

// parseOptions reads, in rising precedence, the config file, SUPERNODE_*
// environment variables and the command line.
func parseOptions(args []string, getenv func(string) string, out io.Writer) (*options, error) {
	o := &options{}
	fs := newFlagSet(o, out)
	// The flag package prints a parse error before the usage; the error is
	// returned instead, so main prints it last, where an operator looks
	// (and --help prints the usage alone).
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(out, "supernode: a STUN/TURN relay node.\n\nUsage: supernode [flags]\n       supernode <command> [flags]\n\nCommands (supernode <command> --help for their flags):\n%s\n", ctl.Usage())
		fmt.Fprintf(out, ""+
			"Every flag can also be set as SUPERNODE_<FLAG> in the environment (repeatable flags comma-separated)\n"+
			"or as a line `flag = value` in the --config file. Command line beats environment beats file.\n\nFlags:\n")
		fs.SetOutput(out)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	var err error
	if o.origin, err = config.Parse(fs, args, getenv, "config", "version"); err != nil {
		return nil, err
	}
	if len(o.listen) == 0 {
		o.listen = config.List{"0.0.0.0:3478"}
	}
	// Weak secrets are refused on a node other hosts can reach.
	o.creds.Reachable, o.creds.Keys = !o.loopbackOnly(), [][2]string{{"--api-token", o.api.Token}, {"--cluster-key", o.fleet.Key}}
	return o, o.locate(o.check())
}

// locate prefixes an error that names a flag with where that flag's value
// came from, when that was the environment or the config file
// (config.Origins.Locate).
func (o *options) locate(err error) error {
	if o == nil {
		return err
	}
	return o.origin.Locate(err)
}

// check checks the settings that parsing alone does not, one at a time in
// this order, and returns the first error, which names its flag.
func (o *options) check() error {
	r := &o.relay
	tlsWithoutCert := (len(o.tlsListen) > 0 || len(o.dtlsListen) > 0) && (o.cert == "" || o.key == "")
	err := first(
		when(len(o.fleet.Join) > 0 && o.fleet.Gossip == "", "--join needs --cluster-listen: the address other members reach this node on"),
		when(o.fleet.Gossip != "" && !cluster.ValidToken(o.fleet.NodeID), "--node-id %q: a fleet member's name is 1-64 of A-Z a-z 0-9 . - _ (it is carried in credentials)", o.fleet.NodeID),
		when(o.fleet.Zone != "" && !cluster.ValidToken(o.fleet.Zone), "--zone %q: %v", o.fleet.Zone, cluster.ErrBadCallID),
		when(o.fleet.Capacity <= 0, "--capacity %g: want more than 0", o.fleet.Capacity),
		when(o.publicHost != "" && !endpoint.ValidHost(o.publicHost), "--public-host %q: want a host name or an IP address, without port or brackets", o.publicHost),
		// Ranges and choices, in the order --help lists most of them.
		when(r.MinPort < 1 || r.MinPort > 65535, "--min-port %d: want 1..65535", r.MinPort),
		when(r.MaxPort < r.MinPort || r.MaxPort > 65535, "--max-port %d: want --min-port (%d)..65535", r.MaxPort, r.MinPort),
		when(tlsWithoutCert, "--tls-listen and --dtls-listen need --cert and --key"),
		when(o.udpSockets < 1, "--udp-sockets %d: want at least 1", o.udpSockets),
		when(r.MaxConnsPerIP < 0, "--max-conns-per-ip %d: want 0 (unlimited) or more", r.MaxConnsPerIP),
		when(o.table.UserQuota < 0, "--user-quota %d: want 0 (unlimited) or more", o.table.UserQuota),
		when(o.table.TotalQuota < 0, "--total-quota %d: want 0 (unlimited) or more", o.table.TotalQuota),
		when(r.MaxPendingConns < 0, "--max-pending-conns %d: want 0 (unlimited) or more", r.MaxPendingConns),
		when(r.AllocationLifetime <= 0, "--allocation-lifetime %v: want more than 0", r.AllocationLifetime),
		when(r.PermissionLifetime < time.Second, "--permission-lifetime %v: want at least 1s", r.PermissionLifetime),
		when(r.ChannelLifetime < time.Second, "--channel-lifetime %v: want at least 1s", r.ChannelLifetime),
		when(r.AuthTimeout <= 0, "--auth-timeout %v: want more than 0", r.AuthTimeout),
		when(r.MaxPermissions < 1, "--max-permissions %d: want at least 1", r.MaxPermissions),
		when(r.MaxChannels < 1, "--max-channels %d: want at least 1", r.MaxChannels),
		when(r.UserAllocRate < 0, "--user-alloc-rate %g: want 0 (unlimited) or more", r.UserAllocRate),
		when(r.UnauthRate < 0, "--unauth-rate %g: want 0 (unlimited) or more", r.UnauthRate),
		when(o.authFailures < 0, "--auth-failures %d: want 0 (never) or more", o.authFailures),
		when(r.AuthBackoff <= 0, "--auth-backoff %v: want more than 0", r.AuthBackoff),
		when(o.api.MaxTTL <= 0, "--max-credential-ttl %v: want more than 0", o.api.MaxTTL),
		when(o.udpRcvbuf < 0, "--udp-rcvbuf %d: want 0 (kernel default) or more", o.udpRcvbuf),
		when(!o.offload.Valid(), "--offload %q: want auto, on or off", o.offload),
		when(o.offloadMax < 1, "--offload-max-channels %d: want at least 1", o.offloadMax),
		when(r.MaxBPS < 0, "--max-bps %d: want 0 (unlimited) or more", r.MaxBPS),
		when(r.Realm == "", "--realm must not be empty"),
		when(o.logFormat != "text" && o.logFormat != "json", "--log-format %q: want text or json", o.logFormat),
	)
	if err != nil {
		return err
	}
	for _, u := range o.creds.Users {
		if n, p, ok := strings.Cut(u, ":"); !ok || n == "" || p == "" {
			return fmt.Errorf("--user %q: want name:password", u)
		}
	}
	return nil
}

// when is the error format makes of args if bad holds, else nil.
func when(bad bool, format string, args ...any) error {
	if !bad {
		return nil
	}
	return fmt.Errorf(format, args...)
}

// first is the first of errs that is not nil.
func first(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// harnessEnv are SUPERNODE_* variables that the test suite and .ci/run read
// and the node does not. They count as known: CI sets them in the
// environment every test node inherits, and a warning on every CI node's
// start would teach readers of its logs to skip the warning. No setting is
// one typo away from them.
// SUPERNODE_API is read by the operator subcommands (package ctl), not the node:
// it may sit in the same environment.
var harnessEnv = []string{"SUPERNODE_OFFLOAD_OPTIONAL", "SUPERNODE_REQUIRE_INTEROP", "SUPERNODE_REQUIRE_BROWSER",
	"SUPERNODE_REQUIRE_MONITORING", "SUPERNODE_API"}

// unknownEnv returns one message per SUPERNODE_* variable of environ
// ("NAME=value" entries) that is neither a setting nor in harnessEnv
// (config.UnknownEnv).
func unknownEnv(environ []string) []string {
	return config.UnknownEnv(newFlagSet(&options{}, io.Discard), environ, harnessEnv)
}

// loopbackOnly reports whether every address the node listens on (TURN,
// HTTP, gossip) is a loopback one, so no other host can reach it.
func (o *options) loopbackOnly() bool {
	addrs := append(append(append([]string(nil), o.listen...), o.tlsListen...), o.dtlsListen...)
	addrs = append(addrs, o.httpListen, o.fleet.Gossip)
	for _, a := range addrs {
		if a == "" {
			continue // HTTP or gossip off
		}
		if lo, err := endpoint.Loopback(a); err != nil || !lo {
			return false
		}
	}
	return true
}
