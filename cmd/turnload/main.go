// Command turnload simulates relayed calls against a TURN server and
// measures it: each call is two TURN clients (pion/turn) that allocate and
// send media to each other's relayed address. `turnload probe` makes one
// allocation and one round trip through it, for monitoring checks. Its
// engine is package load; this command parses flags and prints reports.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/supernode/supernode/load"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// A second Ctrl-C exits at once, without the summary.
		<-ctx.Done()
		stop()
		c := make(chan os.Signal, 1)
		signal.Notify(c, os.Interrupt, syscall.SIGTERM)
		<-c
		os.Exit(130)
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, isTerminal(os.Stderr)))
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Exit statuses.
const (
	exitOK          = 0
	exitFailed      = 1 // loss above --max-loss, a call or the probe failed
	exitUsage       = 2
	exitInterrupted = 130
)

type options struct {
	cfg        load.Config
	json       bool
	maxLoss    float64
	quiet      bool
	insecure   bool
	caFile     string
	logLevel   string
	showVer    bool
	transport  string
	cpuProfile string
}

func flags(name string, o *options, probe bool) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c := &o.cfg
	fs.StringVar(&c.Server, "server", "", "TURN server host:port (required unless --ice-servers gives it)")
	fs.StringVar(&o.transport, "transport", "udp", "transport to the server: udp, tcp or tls")
	fs.StringVar(&c.Username, "user", "", "long-term credential user name")
	fs.StringVar(&c.Password, "password", "", "long-term credential password")
	fs.StringVar(&c.Realm, "realm", "", "realm (informational: the server's 401 challenge names it)")
	fs.StringVar(&c.Secret, "secret", "", "TURN REST secret: mint a credential per call (coturn's use-auth-secret scheme)")
	fs.StringVar(&c.ICEServers, "ice-servers", "", "URL answering RTCIceServer JSON, e.g. http://127.0.0.1:9641/v1/ice-servers; asked once per call")
	fs.StringVar(&c.APIToken, "api-token", "", "bearer token for --ice-servers")
	fs.BoolVar(&o.insecure, "insecure", false, "tls: do not verify the server certificate")
	fs.StringVar(&o.caFile, "ca", "", "tls: PEM file of CA certificates to verify the server with (default: system roots)")
	fs.DurationVar(&c.SetupTimeout, "setup-timeout", 10*time.Second, "limit for one call's setup (allocations, permissions, channels)")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object on stdout")
	fs.StringVar(&o.logLevel, "log-level", "warn", "debug shows why each failed call failed (stderr)")
	fs.BoolVar(&o.showVer, "version", false, "print the version and exit")
	if probe {
		return fs
	}
	fs.IntVar(&c.Calls, "calls", 10, "calls to simulate (two allocations each)")
	fs.Float64Var(&c.Ramp, "ramp", 50, "calls started per second (0 = as fast as --setup-concurrency allows)")
	fs.IntVar(&c.PPS, "pps", 50, "packets per second each leg sends (0 = idle calls that only hold their allocations)")
	fs.IntVar(&c.Size, "size", 172, fmt.Sprintf("payload bytes per packet (%d..%d)", load.MinSize, load.MaxSize))
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "steady window: how long every call sends after the last one is set up")
	fs.BoolVar(&c.SendIndications, "send-indications", false, "send media in Send indications instead of ChannelData on a bound channel")
	fs.IntVar(&c.SetupConcurrency, "setup-concurrency", 64, "calls being set up at once, at most")
	fs.DurationVar(&c.Drain, "drain", time.Second, "wait for packets in flight after sending stops")
	fs.Float64Var(&o.maxLoss, "max-loss", 1, "exit 1 when loss exceeds this many percent")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "PID of a server on this host: report its CPU per relayed packet and memory per allocation (Linux /proc)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write turnload's own CPU profile to this file (go tool pprof)")
	return fs
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, tty bool) int {
	probe := len(args) > 0 && args[0] == "probe"
	name := "turnload"
	if probe {
		args, name = args[1:], "turnload probe"
	}
	var o options
	fs := flags(name, &o, probe)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		if probe {
			fmt.Fprintf(stderr, "Usage: turnload probe --server host:port --user U --password P [flags]\n\n"+
				"One allocation and one packet through the relay and back; exit 0 with the timings, 1 on failure.\n\n")
		} else {
			fmt.Fprintf(stderr, "Usage: turnload --server host:port --user U --password P [flags]\n"+
				"       turnload probe [flags]\n\n"+
				"Simulates relayed calls: each call is two TURN allocations sending media to each other.\n"+
				"Exit status: 0 ok, 1 loss above --max-loss or a call failed to set up, 2 bad usage, 130 interrupted.\n\n")
		}
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if o.showVer {
		fmt.Fprintln(stdout, "turnload", version)
		return exitOK
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (flags only; see -h)\n", name, fs.Arg(0))
		return exitUsage
	}
	o.cfg.Transport = o.transport
	if err := o.tlsConfig(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "%s: --log-level %q: want debug, info, warn or error\n", name, o.logLevel)
		return exitUsage
	}
	o.cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if o.maxLoss < 0 || o.maxLoss > 100 {
		fmt.Fprintf(stderr, "%s: --max-loss %g: want 0..100 percent\n", name, o.maxLoss)
		return exitUsage
	}
	if o.cfg.SetupTimeout <= 0 {
		fmt.Fprintf(stderr, "%s: --setup-timeout %s: want a positive duration\n", name, o.cfg.SetupTimeout)
		return exitUsage
	}
	if probe {
		return runProbe(ctx, o, stdout, stderr)
	}
	// Zero means zero here, not the library's default.
	switch {
	case o.cfg.Calls < 1:
		fmt.Fprintf(stderr, "%s: --calls %d: want 1 or more\n", name, o.cfg.Calls)
		return exitUsage
	case o.cfg.Duration <= 0:
		fmt.Fprintf(stderr, "%s: --duration %s: want a positive duration\n", name, o.cfg.Duration)
		return exitUsage
	case o.cfg.SetupConcurrency < 1:
		fmt.Fprintf(stderr, "%s: --setup-concurrency %d: want 1 or more\n", name, o.cfg.SetupConcurrency)
		return exitUsage
	case o.cfg.Drain < 0:
		fmt.Fprintf(stderr, "%s: --drain %s: want 0 or more\n", name, o.cfg.Drain)
		return exitUsage
	case o.cfg.Drain == 0:
		o.cfg.Drain = -1 // no wait
	}
	return runLoad(ctx, o, stdout, stderr, tty)
}

func (o *options) tlsConfig() error {
	if o.cfg.Transport != "tls" {
		if o.insecure || o.caFile != "" {
			return fmt.Errorf("--insecure and --ca apply to --transport tls only")
		}
		return nil
	}
	tc := &tls.Config{InsecureSkipVerify: o.insecure, MinVersion: tls.VersionTLS12}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca %s: no PEM certificates in it", o.caFile)
		}
		tc.RootCAs = pool
	}
	o.cfg.TLS = tc
	return nil
}

func runLoad(ctx context.Context, o options, stdout, stderr io.Writer, tty bool) int {
	if !o.quiet {
		last := time.Time{}
		o.cfg.Progress = func(s load.Snapshot) {
			if tty {
				fmt.Fprintf(stderr, "\r\x1b[K%s", s)
				return
			}
			// Plain lines every 5 s keep logs short.
			if time.Since(last) >= 5*time.Second {
				fmt.Fprintln(stderr, s)
				last = time.Now()
			}
		}
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "turnload: --cpuprofile: %v\n", err)
			return exitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "turnload: --cpuprofile: %v\n", err)
			return exitUsage
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := load.Run(ctx, o.cfg)
	if !o.quiet && tty {
		fmt.Fprint(stderr, "\r\x1b[K")
	}
	if err != nil {
		fmt.Fprintf(stderr, "turnload: %v\n", err)
		return exitUsage
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		if rep.Loader.Saturated {
			fmt.Fprintln(stderr, "turnload: WARNING: the loader itself was saturated; the figures measure turnload, not the server")
		}
	} else {
		rep.WriteTable(stdout)
	}
	var why []string
	if rep.Calls.Failed > 0 {
		why = append(why, fmt.Sprintf("%d of %d calls failed to set up", rep.Calls.Failed, rep.Calls.Requested))
	}
	if rep.Packets.LossPercent > o.maxLoss {
		why = append(why, fmt.Sprintf("loss %.3f%% above --max-loss %g%%", rep.Packets.LossPercent, o.maxLoss))
	}
	switch {
	case rep.Interrupted:
		return exitInterrupted
	case len(why) > 0:
		fmt.Fprintf(stderr, "turnload: FAIL: %s\n", strings.Join(why, "; "))
		return exitFailed
	}
	return exitOK
}

func runProbe(ctx context.Context, o options, stdout, stderr io.Writer) int {
	res, err := load.Probe(ctx, o.cfg)
	if err != nil {
		if errors.Is(err, load.ErrConfig) {
			fmt.Fprintf(stderr, "turnload probe: %v\n", err)
			return exitUsage
		}
		if o.json {
			_ = json.NewEncoder(stdout).Encode(map[string]string{"error": err.Error()})
		}
		fmt.Fprintf(stderr, "turnload %v\n", err)
		return exitFailed
	}
	if o.json {
		_ = json.NewEncoder(stdout).Encode(res)
		return exitOK
	}
	fmt.Fprintf(stdout, "ok %s: allocated %s in %.2f ms; relay round trip to peer %s %.2f ms\n",
		res.Server, res.Relayed, res.AllocateMS, res.Peer, res.RoundMS)
	return exitOK
}
