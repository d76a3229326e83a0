package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Run is the record of one turnload run against one fresh server process,
// saved to runs.json so every number in the report can be traced back.
type Run struct {
	Name       string     `json:"name"` // directory under runs/ holding its files
	Phase      string     `json:"phase"`
	Round      int        `json:"round"` // 0 = warm-up (discarded)
	Step       int        `json:"step,omitempty"`
	Variant    string     `json:"variant"`
	Server     Kind       `json:"server"`
	Load       Load       `json:"load"`
	ServerArgs []string   `json:"server_args"`
	ServerWrap []string   `json:"server_wrap,omitempty"` // what runs the server: ip netns exec, taskset
	LoadArgs   []string   `json:"load_args"`
	LoadWrap   []string   `json:"load_wrap,omitempty"` // what runs turnload: taskset
	ExitCode   int        `json:"exit_code"`
	Result     *Result    `json:"result,omitempty"`
	Core       *CoreCost  `json:"server_core,omitempty"` // the server's core over the steady window (namespace mode)
	CoreErr    string     `json:"server_core_error,omitempty"`
	Proc       ProcSample `json:"proc_at_end"` // the harness's own reading, just before stop
	Err        string     `json:"error,omitempty"`
	Started    time.Time  `json:"started"`
	Seconds    float64    `json:"seconds"`
}

// Harness runs the phases and keeps every run and every measured value.
type Harness struct {
	cfg      Config
	bins     map[Kind]string
	turnload string
	dir      string    // this invocation's results directory
	log      io.Writer // progress
	net      *Net      // where servers and the loader run
	variants []Variant // the servers compared, in round 1's order

	mu        sync.Mutex
	runs      []Run
	values    map[string]map[string][]Value // metric id -> variant name -> measured round-1
	notes     []string                      // warnings for the report
	warnedCPU bool                          // the cpu_us_per_packet cross-check has noted a mismatch
}

// Value is one measured round's number for one metric and server.
type Value struct {
	V         float64 `json:"v"`                // NaN when the round produced nothing
	Detail    string  `json:"detail,omitempty"` // e.g. the call count a sweep settled on
	Saturated bool    `json:"loader_saturated,omitempty"`
}

// MarshalJSON writes NaN as null.
func (v Value) MarshalJSON() ([]byte, error) {
	type plain struct {
		V         *float64 `json:"v"`
		Detail    string   `json:"detail,omitempty"`
		Saturated bool     `json:"loader_saturated,omitempty"`
	}
	p := plain{Detail: v.Detail, Saturated: v.Saturated}
	if !math.IsNaN(v.V) && !math.IsInf(v.V, 0) {
		p.V = &v.V
	}
	return json.Marshal(p)
}

// set records a measured value; warm-up rounds (0) are discarded here.
func (h *Harness) set(metric, variant string, round int, v Value) {
	if round < 1 || round > h.cfg.Rounds {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.values == nil {
		h.values = map[string]map[string][]Value{}
	}
	if h.values[metric] == nil {
		h.values[metric] = map[string][]Value{}
	}
	vs := h.values[metric][variant]
	for len(vs) < h.cfg.Rounds {
		vs = append(vs, Value{V: math.NaN()})
	}
	vs[round-1] = v
	h.values[metric][variant] = vs
}

// note adds a warning to the report and prints it.
func (h *Harness) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.mu.Lock()
	h.notes = append(h.notes, msg)
	h.mu.Unlock()
	fmt.Fprintf(h.log, "bench: note: %s\n", msg)
}

// duringFunc runs alongside turnload against the live server (profiling).
type duringFunc func(ctx context.Context, s *Server) error

// runOne starts a fresh server of variant v, runs load against it, stops the server
// and records the run. A failed run is recorded with its error and returns
// a nil Result; only a cancelled context or a turnload usage error (which
// would repeat on every run) come back as errors.
func (h *Harness) runOne(ctx context.Context, phase string, round, step int, v Variant, load Load, pprof bool, during duringFunc) (*Run, error) {
	h.mu.Lock()
	name := fmt.Sprintf("%03d-%s-r%d-%s", len(h.runs)+1, phase, round, v.Name)
	h.mu.Unlock()
	if step > 0 {
		name += fmt.Sprintf("-s%d", step)
	}
	run := Run{Name: name, Phase: phase, Round: round, Step: step, Variant: v.Name, Server: v.Kind, Load: load, Started: time.Now(), ExitCode: -1}
	runDir := filepath.Join(h.dir, "runs", name)
	err := h.runIn(ctx, &run, v, runDir, pprof, during)
	run.Seconds = time.Since(run.Started).Seconds()
	if err != nil {
		run.Err = err.Error()
	}
	h.mu.Lock()
	h.runs = append(h.runs, run)
	h.mu.Unlock()
	h.saveRuns()
	fmt.Fprintf(h.log, "bench: %-34s %s\n", name, summary(&run))
	if ctx.Err() != nil {
		return &run, ctx.Err()
	}
	if errors.Is(err, errUsage) {
		return &run, err
	}
	return &run, nil
}

// runIn does runOne's work in runDir.
func (h *Harness) runIn(ctx context.Context, run *Run, v Variant, runDir string, pprof bool, during duringFunc) error {
	// A free port can be taken between picking it and the server binding
	// it; a server that fails to start gets two more tries on other ports.
	var srv *Server
	var err error
	var extra []string
	if run.Server == Supernode {
		extra = append(extra, noLimits...)
	}
	extra = append(extra, v.Args...)
	for try := 1; ; try++ {
		srv, err = startServer(ctx, run.Server, h.bins[run.Server], runDir, pprof, 15*time.Second, h.net, extra...)
		if err == nil || try == 3 || ctx.Err() != nil {
			break
		}
		h.note("%s: start attempt %d failed, trying another port: %s", run.Name, try, firstLine(err.Error()))
	}
	if err != nil {
		return err
	}
	defer func() {
		if err := srv.Stop(5 * time.Second); err != nil {
			h.note("%s: %v", run.Name, err)
		}
	}()
	run.ServerArgs = srv.Args
	run.ServerWrap = h.net.serverPrefix()
	run.LoadArgs = run.Load.args(benchUser, benchPassword, benchRealm, srv.Addr, srv.PID())
	run.LoadWrap = h.net.loaderPrefix()
	loadBin, loadArgs := withPrefix(run.LoadWrap, h.turnload, run.LoadArgs)
	var smp *sampler
	var loadStart time.Time
	if h.net != nil && h.net.Mode == "netns" {
		// The idle server first: wait (up to quietWait) for its core to
		// settle, since the last server's sockets are still being torn
		// down; what is left is the core's background (busy_before_run).
		smp = startSampler(ctx, h.net.HostDev)
		waitQuiet(ctx, h.net.ServerCPU)
		loadStart = time.Now()
	}

	var wg sync.WaitGroup
	dctx, dcancel := context.WithCancel(ctx)
	defer dcancel()
	if during != nil {
		wg.Go(func() {
			if err := during(dctx, srv); err != nil && dctx.Err() == nil {
				h.note("%s: %v", run.Name, err)
			}
		})
	}
	res, code, lerr := runLoad(ctx, loadBin, loadArgs, run.Load.timeout(),
		filepath.Join(runDir, "turnload.json"), filepath.Join(runDir, "turnload.log"))
	dcancel()
	wg.Wait()
	run.ExitCode, run.Result = code, res
	if smp != nil {
		samples, serr := smp.Stop()
		if res != nil && run.Load.PPS > 0 {
			window := time.Duration(res.Rate.WindowSeconds * float64(time.Second))
			c, err := steadyCost(samples, window, h.net.ServerCPU, loadStart)
			switch {
			case serr != nil:
				run.CoreErr = serr.Error()
			case err != nil:
				run.CoreErr = err.Error()
			default:
				run.Core = &c
			}
		}
		if err := saveJSON(filepath.Join(runDir, "cpu-samples.json"), samples); err != nil {
			h.note("%s: save cpu-samples.json: %v", run.Name, err)
		}
	}
	if p, err := readProc(srv.PID()); err == nil {
		run.Proc = p
	}
	if srv.Exited() {
		return fmt.Errorf("bench: %s exited during the run: %v\n%s", run.Server, srv.err, tail(srv.logFiles(), 15))
	}
	return lerr
}

// Before a run: the server's core counts as quiet below quietBusy over a
// quietSpan; the harness waits at most quietWait for that.
const (
	quietBusy = 0.2
	quietSpan = 300 * time.Millisecond
	quietWait = 3 * time.Second
)

// waitQuiet waits until cpu is busy less than quietBusy over quietSpan, at
// most quietWait.
func waitQuiet(ctx context.Context, cpu int) {
	deadline := time.Now().Add(quietWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		a, err := readCPUSample("")
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(quietSpan):
		}
		b, err := readCPUSample("")
		if err != nil {
			return
		}
		if c, err := coreCost(a, b, cpu); err != nil || c.Busy < quietBusy {
			return
		}
	}
}

// timeout bounds one turnload run: its setup at the ramp (or a
// conservative 200 calls/s for --ramp 0), the steady window, release, and
// two minutes of slack.
func (l Load) timeout() time.Duration {
	rate := l.Ramp
	if rate <= 0 {
		rate = 200
	}
	return time.Duration(l.Calls/rate)*time.Second + l.Duration + 2*time.Minute
}

// summary is the progress line for a finished run.
func summary(r *Run) string {
	if r.Result == nil {
		return "FAILED: " + firstLine(r.Err)
	}
	x := r.Result
	s := fmt.Sprintf("calls %d/%d", x.Calls.Established, x.Calls.Requested)
	if r.Load.PPS > 0 {
		s += fmt.Sprintf(", recv %.0f pps, loss %.3f%%, server process %.2f µs/pkt, p50/p99 %.3f/%.3f ms",
			x.Rate.ReceivedPPS, x.Packets.LossPercent, cpuPerHop(x), x.LatencyMS.P50, x.LatencyMS.P99)
		if c := r.Core; c != nil {
			s += fmt.Sprintf(", core %d: %.2f µs/pkt, busy %.0f%% (softirq %.0f%%)", c.CPU, c.MicrosPerPkt, 100*c.Busy, 100*c.SoftIRQ)
		} else if r.CoreErr != "" {
			s += ", core cost: " + firstLine(r.CoreErr)
		}
	} else {
		s += fmt.Sprintf(", %.0f alloc/s, %.1f KiB/alloc", x.Setup.AllocationsPerSecond, serverOf(x).RSSPerAllocationBytes/1024)
	}
	s += fmt.Sprintf(", loader %.2f cores", x.Loader.CPUCores)
	if x.Loader.Unsent > 0 || x.Loader.Dropped > 0 {
		s += fmt.Sprintf(" (unsent %d, dropped %d)", x.Loader.Unsent, x.Loader.Dropped)
	}
	if x.Loader.Saturated {
		s += " SATURATED"
	}
	if r.Err != "" {
		s += " (" + firstLine(r.Err) + ")"
	}
	return s
}

// saveRuns rewrites runs.json after every run, so a cut-short bench still
// leaves an audit trail.
func (h *Harness) saveRuns() {
	h.mu.Lock()
	b, err := json.MarshalIndent(h.runs, "", "  ")
	h.mu.Unlock()
	if err == nil {
		err = os.WriteFile(filepath.Join(h.dir, "runs.json"), b, 0o644)
	}
	if err != nil {
		fmt.Fprintf(h.log, "bench: save runs.json: %v\n", err)
	}
}

// firstLine is s up to its first newline.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
