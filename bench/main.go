// Command bench runs supernode (kernel path on and off) and coturn under
// identical turnload loads, each server in a network namespace of its own
// (-net netns; beside the loader on loopback without root), every server
// once per round with the order rotated each round, after a discarded
// warm-up, and writes the spread of each metric to BENCHMARKS.md.
// `make bench` (bench/run) builds the binaries and runs it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	err := run(os.Args[1:], os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errFlags):
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// errFlags marks a bad command line.
var errFlags = errors.New("bench: bad command line")

// options is the command line: Config plus where things are.
type options struct {
	cfg        Config
	quick      bool
	phases     string
	idle       string
	out        string
	results    string
	supernode  string
	turnserver string
	turnload   string
	hostile    bool
	hcfg       HostileConfig
	hostArgs   string
	net        string // -net: auto, netns or loopback
	serverCPU  int
	loaderCPU  int
	rps        bool
	variants   string // -variants: auto or a list
}

// parseFlags reads args; -quick changes the defaults of every flag not set
// explicitly.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "bench: supernode and coturn side by side under turnload; writes BENCHMARKS.md.\n\nUsage: go run ./bench [flags]   (make bench BENCHFLAGS='...')\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.BoolVar(&o.quick, "quick", false, "a short try-out (about 3 minutes): 1 measured round, no warm-up, 3s windows, short sweeps, 1,000 and 4,000 idle allocations, a 3s profile; writes BENCHMARKS.md into the results directory unless -out is given")
	fs.IntVar(&c.Rounds, "rounds", 3, "measured rounds (each runs every server once, the order rotated by one each round)")
	fs.BoolVar(&c.Warmup, "warmup", true, "run one discarded warm-up round first")
	fs.StringVar(&o.phases, "phases", strings.Join(allPhases, ","), "phases to run, comma-separated: "+strings.Join(allPhases, ", "))
	fs.IntVar(&c.Calls, "calls", 200, "calls at the fixed offered load (CPU per packet, profile); offered packets/s = calls*2*pps")
	fs.IntVar(&c.PPS, "pps", 50, "packets per second per call leg")
	fs.IntVar(&c.Size, "size", 172, "payload bytes per packet")
	fs.IntVar(&c.Ramp, "ramp", 200, "calls started per second in loaded runs (0 = as fast as setup allows)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "steady window of the CPU and latency runs")
	fs.DurationVar(&c.SweepDuration, "sweep-duration", 5*time.Second, "steady window of each rate-sweep step")
	fs.IntVar(&c.SweepStart, "sweep-start", 200, "calls tried first by each server's first rate sweep")
	fs.IntVar(&c.SweepSteps, "sweep-steps", 7, "most steps of each server's first rate sweep")
	fs.IntVar(&c.SweepRoundSteps, "sweep-round-steps", 5, "most steps of each later rate sweep")
	fs.IntVar(&c.MaxCalls, "max-calls", 4000, "most calls a rate sweep tries (each call holds 2 sockets in the loader and 2-4 in the server)")
	fs.Float64Var(&c.MaxLoss, "max-loss", 0.1, "loss limit of the rate sweep, percent")
	fs.StringVar(&o.idle, "idle", "500,5000", "idle call counts for memory per allocation, comma-separated (2 allocations per call)")
	fs.DurationVar(&c.IdleHold, "idle-hold", 3*time.Second, "how long idle calls are held")
	fs.DurationVar(&c.Profile, "profile", 10*time.Second, "length of supernode's CPU profile under the fixed load (0 = none)")
	fs.StringVar(&o.out, "out", "BENCHMARKS.md", "report to write (its analysis section is kept)")
	fs.StringVar(&o.results, "results", "bench/results", "directory for per-run results; each invocation makes a timestamped directory in it")
	fs.StringVar(&o.supernode, "supernode", "bin/supernode", "supernode binary")
	fs.StringVar(&o.turnserver, "turnserver", "turnserver", "coturn's turnserver binary")
	fs.StringVar(&o.turnload, "turnload", "bin/turnload", "turnload binary")
	fs.StringVar(&o.net, "net", "auto", "where the server runs: netns (its own network namespace behind a veth pair, pinned to -server-cpu, RPS steering each side's receive work to its own core; needs root and ip), loopback (127.0.0.1 beside the loader, nothing pinned), or auto (netns when it can, else loopback)")
	fs.IntVar(&o.serverCPU, "server-cpu", 1, "netns: the core the server, and its veth's receive processing, run on; the server's cost is this core's busy time")
	fs.IntVar(&o.loaderCPU, "loader-cpu", 0, "netns: the core turnload, the harness and the loader veth's receive processing run on")
	fs.BoolVar(&o.rps, "rps", true, "netns: steer each veth end's receive processing to its side's core with RPS (-rps=false shows where it lands without)")
	fs.StringVar(&o.variants, "variants", "auto", "servers compared, comma-separated, from: "+strings.Join(variantNames(), ", ")+"; auto = supernode-kernel,supernode-user,coturn when bin/supernode has --offload and -net is netns, else supernode,coturn")
	h := &o.hcfg
	fs.BoolVar(&o.hostile, "hostile", false, "instead of the comparison: the hostile-flood measurement of supernode alone (make hostile, about a minute); writes its own section of -out")
	fs.IntVar(&h.Calls, "hostile-calls", 20, "-hostile: established calls")
	fs.IntVar(&h.PPS, "hostile-pps", 50, "-hostile: packets per second per call leg")
	fs.DurationVar(&h.Quiet, "hostile-quiet", 10*time.Second, "-hostile: how long the calls run alone first, for comparison")
	fs.DurationVar(&h.Flood, "flood", 20*time.Second, "-hostile: how long the flood lasts (at most 1m)")
	fs.IntVar(&h.Sources, "flood-sources", 8, "-hostile: flood source addresses, 127.0.0.2 upwards (at most 200)")
	fs.Int64Var(&h.MaxPackets, "flood-max-packets", 40_000_000, "-hostile: the flood also stops after this many datagrams (at most 100,000,000)")
	fs.DurationVar(&h.After, "hostile-after", 5*time.Second, "-hostile: how long supernode is watched after the flood")
	fs.DurationVar(&h.Profile, "hostile-profile", 8*time.Second, "-hostile: supernode's CPU profile from the middle of the flood (0 = none)")
	fs.StringVar(&o.hostArgs, "hostile-args", "", "-hostile: more supernode flags, space-separated, e.g. '--udp-rcvbuf 0' (shown in the report's command line)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w (see -h)", errFlags)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", errFlags, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		quick := map[string]func(){
			"rounds":            func() { c.Rounds = 1 },
			"warmup":            func() { c.Warmup = false },
			"duration":          func() { c.Duration = 3 * time.Second },
			"sweep-duration":    func() { c.SweepDuration = 3 * time.Second },
			"sweep-steps":       func() { c.SweepSteps = 4 },
			"sweep-round-steps": func() { c.SweepRoundSteps = 3 },
			"idle":              func() { o.idle = "500,2000" },
			"idle-hold":         func() { c.IdleHold = time.Second },
			"profile":           func() { c.Profile = 3 * time.Second },
			"out":               func() { o.out = "" }, // into the results directory
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	check := o.check
	if o.hostile {
		check = o.checkHostile
	}
	if err := check(); err != nil {
		return nil, fmt.Errorf("%w: %v", errFlags, err)
	}
	return o, nil
}

// checkHostile validates the -hostile options.
func (o *options) checkHostile() error {
	h := &o.hcfg
	h.Size = o.cfg.Size
	if args := strings.Fields(o.hostArgs); len(args) > 0 {
		h.ServerArgs = args
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if h.Calls < 1 || h.PPS < 1 || h.Size < 1 {
		bad("-hostile-calls, -hostile-pps and -size must be positive")
	}
	if h.Quiet < time.Second || h.After < 0 || h.Profile < 0 {
		bad("-hostile-quiet must be at least 1s, -hostile-after and -hostile-profile not negative")
	}
	if h.Flood < time.Second || h.Flood > maxFloodDuration {
		bad("-flood must be between 1s and %s", maxFloodDuration)
	}
	if h.Profile >= h.Flood {
		bad("-hostile-profile must be shorter than -flood")
	}
	if h.Sources < 1 || h.Sources > 200 {
		bad("-flood-sources must be between 1 and 200")
	}
	if h.MaxPackets < 1 || h.MaxPackets > maxFloodPackets {
		bad("-flood-max-packets must be between 1 and %d", maxFloodPackets)
	}
	if o.out == "" {
		bad("-out: -hostile needs a report to write its section into")
	}
	return errors.Join(errs...)
}

// check validates the options and fills Config's lists.
func (o *options) check() error {
	c := &o.cfg
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Rounds < 1 {
		bad("-rounds must be at least 1")
	}
	if c.Calls < 1 || c.PPS < 1 || c.Size < 1 {
		bad("-calls, -pps and -size must be positive")
	}
	if c.Ramp < 0 {
		bad("-ramp must not be negative")
	}
	if c.Duration < time.Second || c.SweepDuration < time.Second {
		bad("-duration and -sweep-duration must be at least 1s")
	}
	if c.SweepStart < 1 || c.SweepSteps < 1 || c.SweepRoundSteps < 1 || c.MaxCalls < c.SweepStart {
		bad("-sweep-start, -sweep-steps and -sweep-round-steps must be positive and -max-calls at least -sweep-start")
	}
	if c.MaxLoss <= 0 || c.MaxLoss >= 100 {
		bad("-max-loss must be a percentage between 0 and 100")
	}
	if c.IdleHold <= 0 {
		bad("-idle-hold must be positive (turnload's --duration)")
	}
	if c.Profile < 0 {
		bad("-profile must not be negative")
	}
	if o.net != "auto" && o.net != "netns" && o.net != "loopback" {
		bad("-net must be auto, netns or loopback")
	}
	if o.variants != "auto" {
		if _, err := parseVariants(o.variants); err != nil {
			bad("%v", err)
		}
	}
	c.Phases = nil
	for _, p := range strings.Split(o.phases, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(allPhases, p) {
			bad("-phases: unknown phase %q (have %s)", p, strings.Join(allPhases, ", "))
		} else if !c.has(p) {
			c.Phases = append(c.Phases, p)
		}
	}
	if len(c.Phases) == 0 {
		bad("-phases: nothing to run")
	}
	// Run phases in their fixed order whatever the order given.
	slices.SortFunc(c.Phases, func(a, b string) int { return slices.Index(allPhases, a) - slices.Index(allPhases, b) })
	c.Idle = nil
	if c.has("idle") {
		for _, f := range strings.Split(o.idle, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				bad("-idle: %q is not a positive call count", f)
				continue
			}
			c.Idle = append(c.Idle, n)
		}
	}
	return errors.Join(errs...)
}

// run is main without the exit.
func run(args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.hostile {
		return runHostileMain(o, stderr)
	}
	bins := map[Kind]string{}
	for k, path := range map[Kind]string{Supernode: o.supernode, Coturn: o.turnserver} {
		p, err := exec.LookPath(path)
		if err != nil {
			return fmt.Errorf("bench: %s binary %q: %w (bench/run builds bin/supernode and installs coturn)", k, path, err)
		}
		if bins[k], err = filepath.Abs(p); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	turnload, err := exec.LookPath(o.turnload)
	if err != nil {
		return fmt.Errorf("bench: turnload binary %q: %w (build it with: go build -o bin/turnload ./cmd/turnload)", o.turnload, err)
	}
	if turnload, err = filepath.Abs(turnload); err != nil {
		return fmt.Errorf("bench: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	where, err := chooseNet(ctx, o, stderr)
	if err != nil {
		return err
	}
	// Whatever happens from here (an error, Ctrl-C, a panic), the
	// namespace and the veth pair go away.
	defer func() {
		if err := where.Close(); err != nil {
			fmt.Fprintf(stderr, "bench: removing the namespace: %v\n", err)
		}
	}()
	variants, variantsWhy := autoVariants(hasOffloadFlag(ctx, bins[Supernode]), where.Mode)
	if o.variants != "auto" {
		variants, _ = parseVariants(o.variants)
		variantsWhy = ""
	}
	fmt.Fprintf(stderr, "bench: mode %s; comparing %s\n", where.Mode, strings.Join(variantsOf(variants), ", "))

	start := time.Now()
	// The commit and tree state as the binaries were just built, not as
	// they are when the report is written a quarter of an hour later.
	machine := describeMachine(bins[Coturn])
	dir := filepath.Join(o.results, start.Format("20060102-150405"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: results directory: %w", err)
	}
	out := o.out
	if out == "" {
		out = filepath.Join(dir, "BENCHMARKS.md")
	}
	fmt.Fprintf(stderr, "bench: results in %s; report to %s\n", dir, out)

	h := &Harness{cfg: o.cfg, bins: bins, turnload: turnload, dir: dir, log: stderr, net: where, variants: variants}
	if where.Why != "" {
		h.note("loopback mode: %s; the server's core cost per packet (which needs the server on a core and a namespace of its own) was not measured", where.Why)
	}
	if variantsWhy != "" {
		h.note("%s", variantsWhy)
	}
	var prof *Profile
	phaseErr := func() error {
		for _, p := range o.cfg.Phases {
			fmt.Fprintf(stderr, "bench: phase %s\n", p)
			var err error
			switch p {
			case "cpu":
				err = h.phaseCPU(ctx)
			case "profile":
				prof, err = h.phaseProfile(ctx)
			case "rate":
				err = h.phaseRate(ctx)
			case "latency":
				err = h.phaseLatency(ctx)
			case "idle":
				err = h.phaseIdle(ctx)
			}
			if err != nil {
				return fmt.Errorf("bench: phase %s: %w", p, err)
			}
		}
		return nil
	}()
	if phaseErr != nil && ctx.Err() == nil && !errors.Is(phaseErr, errUsage) {
		return phaseErr
	}
	if phaseErr != nil {
		// Interrupted or unusable turnload: keep what was measured, but do
		// not overwrite the report with a partial one.
		out = filepath.Join(dir, "BENCHMARKS.partial.md")
		fmt.Fprintf(stderr, "%v; writing what was measured to %s\n", phaseErr, out)
	}

	latCalls, latWhy := h.latencyCalls()
	rep := &Report{
		Date: start, Elapsed: time.Since(start), Machine: machine, Config: o.cfg,
		ResultsDir: dir, LatCalls: latCalls, LatencyWhy: latWhy,
		Defs: metricDefs(o.cfg, latCalls, where), Values: h.values, Profile: prof, Notes: h.notes,
		Commands: commandLines(h.runs, variants, bins), Loader: loaderLines(h.runs, variants),
		Variants: variantsOf(variants), Net: where, Placement: placementLines(h.runs, variants),
	}
	prev, err := os.ReadFile(out)
	switch {
	case err == nil:
		if werr := os.WriteFile(filepath.Join(dir, "BENCHMARKS.previous.md"), prev, 0o644); werr != nil {
			return fmt.Errorf("bench: keep previous report: %w", werr)
		}
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("bench: read %s: %w", out, err)
	}
	rep.Analysis = extractAnalysis(string(prev))
	rep.Hostile = hostileBlock(string(prev))
	if err := os.WriteFile(out, []byte(rep.Markdown()), 0o644); err != nil {
		return fmt.Errorf("bench: write report: %w", err)
	}
	summary := map[string]any{"date": start.UTC(), "elapsed_seconds": rep.Elapsed.Seconds(), "config": o.cfg, "machine": rep.Machine,
		"latency_calls": latCalls, "values": h.values, "notes": h.notes, "report": out, "net": where, "variants": variantsOf(variants)}
	if b, err := json.MarshalIndent(summary, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "summary.json"), b, 0o644)
	}
	fmt.Fprintf(stderr, "bench: wrote %s in %s\n", out, time.Since(start).Round(time.Second))
	return phaseErr
}

// commandLines are the exact command lines of the first measured run of
// each variant, with the loader's, for the report. Paths inside the working
// directory (the repository, when run by bench/run) are shown relative to it.
func commandLines(runs []Run, variants []Variant, bins map[Kind]string) []string {
	wd, _ := os.Getwd()
	rel := func(args []string) []string {
		out := make([]string, len(args))
		for i, a := range args {
			out[i] = relPath(wd, a)
		}
		return out
	}
	var lines []string
	for _, v := range variants {
		for _, r := range runs {
			if r.Variant == v.Name && r.Round >= 1 && len(r.ServerArgs) > 0 && r.Phase != "profile" {
				name := map[Kind]string{Supernode: "bin/supernode", Coturn: "turnserver"}[v.Kind]
				srv := append(append(append([]string(nil), r.ServerWrap...), name), rel(r.ServerArgs)...)
				load := append(append(append([]string(nil), r.LoadWrap...), "bin/turnload"), r.LoadArgs...)
				lines = append(lines, "# "+v.Name+" ("+relPath(wd, bins[v.Kind])+")", shellJoin(srv),
					"# turnload ("+r.Phase+" phase)", shellJoin(load))
				break
			}
		}
	}
	return lines
}

// relPath is path relative to wd when it is an absolute path inside wd.
func relPath(wd, path string) string {
	if wd == "" || !filepath.IsAbs(path) {
		return path
	}
	r, err := filepath.Rel(wd, path)
	if err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return path
	}
	return r
}

// loaderLines summarise the loader's CPU and saturation per phase and variant.
func loaderLines(runs []Run, variants []Variant) []string {
	var lines []string
	for _, p := range allPhases {
		for _, v := range variants {
			var cores []float64
			sat, n := []string{}, 0
			for _, r := range runs {
				if r.Phase != p || r.Variant != v.Name || r.Result == nil {
					continue
				}
				n++
				cores = append(cores, r.Result.Loader.CPUCores)
				if r.Result.Loader.Saturated {
					sat = append(sat, r.Name)
				}
			}
			if n == 0 {
				continue
			}
			runsWord := "runs"
			if n == 1 {
				runsWord = "run"
			}
			line := fmt.Sprintf("%s phase, %s: %d %s, loader %.2f cores (median)", p, v.Name, n, runsWord, spreadOf(cores).Median)
			if len(sat) > 0 {
				line += fmt.Sprintf("; **saturated in %d**: %s", len(sat), strings.Join(sat, ", "))
			} else {
				line += "; never saturated"
			}
			lines = append(lines, line)
		}
	}
	return lines
}

// chooseNet sets up -net: the namespace mode when asked for or (auto) when
// this machine allows it, else loopback with the reason. In the namespace
// mode the harness pins itself to the loader's core.
func chooseNet(ctx context.Context, o *options, stderr io.Writer) (*Net, error) {
	why := netnsUsable(o.serverCPU, o.loaderCPU)
	switch {
	case o.net == "loopback":
		return loopbackNet("-net loopback was asked for"), nil
	case why != "" && o.net == "netns":
		return nil, fmt.Errorf("bench: -net netns: %s", why)
	case why != "":
		fmt.Fprintf(stderr, "bench: falling back to the loopback mode: %s\n", why)
		return loopbackNet(why), nil
	}
	sp := benchSpec
	sp.ServerCPU, sp.LoaderCPU, sp.NoRPS = o.serverCPU, o.loaderCPU, !o.rps
	n, err := setupNetns(ctx, stderr, sp)
	if err != nil {
		if o.net == "netns" || ctx.Err() != nil {
			return nil, err
		}
		fmt.Fprintf(stderr, "bench: falling back to the loopback mode: %v\n", err)
		return loopbackNet(firstLine(err.Error())), nil
	}
	if err := pinSelf(o.loaderCPU); err != nil {
		n.Close()
		return nil, err
	}
	fmt.Fprintf(stderr, "bench: server in namespace %s at %s on CPU %d, loader at %s on CPU %d; RPS %s\n",
		n.Netns, n.ServerIP, n.ServerCPU, n.LoaderIP, n.LoaderCPU, strings.Join(n.RPS, ", "))
	return n, nil
}

// shellJoin quotes args that need it.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\*?;&|<>()") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}

// runHostileMain is run for -hostile: one hostile-flood measurement, its
// JSON in the results directory and its section in -out.
func runHostileMain(o *options, stderr io.Writer) error {
	var bins [2]string
	for i, b := range []string{o.supernode, o.turnload} {
		p, err := exec.LookPath(b)
		if err != nil {
			return fmt.Errorf("bench: binary %q: %w (make hostile builds bin/supernode and bin/turnload)", b, err)
		}
		if bins[i], err = filepath.Abs(p); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir := filepath.Join(o.results, "hostile-"+time.Now().Format("20060102-150405"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: results directory: %w", err)
	}
	fmt.Fprintf(stderr, "bench: hostile: results in %s; section to %s\n", dir, o.out)
	res, err := runHostile(ctx, o.hcfg, bins[0], bins[1], dir, stderr)
	if err != nil {
		return err
	}
	if err := saveJSON(filepath.Join(dir, "hostile.json"), res); err != nil {
		return fmt.Errorf("bench: save hostile.json: %w", err)
	}
	prev, err := os.ReadFile(o.out)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bench: read %s: %w", o.out, err)
	}
	wd, _ := os.Getwd()
	section := res.Markdown(hostileAnalysis(string(prev)), relPath(wd, dir))
	if err := os.WriteFile(o.out, []byte(withHostile(string(prev), section)), 0o644); err != nil {
		return fmt.Errorf("bench: write %s: %w", o.out, err)
	}
	fmt.Fprintf(stderr, "bench: hostile: wrote the section of %s in %s\n", o.out, time.Duration(res.Elapsed*float64(time.Second)).Round(time.Second))
	return nil
}
