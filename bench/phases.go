package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// Config is what one bench invocation measures and how hard.
type Config struct {
	Rounds          int           // measured rounds (A B each), after the warm-up
	Warmup          bool          // run one discarded warm-up round first
	Phases          []string      // subset of allPhases, in the order they run
	Calls           int           // calls at the fixed offered load (CPU per packet, profile)
	PPS             int           // packets per second per leg
	Size            int           // payload bytes per packet
	Ramp            int           // calls started per second in loaded runs; 0 = as fast as setup allows
	Duration        time.Duration // steady window of the CPU and latency runs
	SweepDuration   time.Duration // steady window of each rate-sweep step
	SweepStart      int           // calls tried first by the first sweep of each server
	SweepSteps      int           // most steps of a server's first sweep
	SweepRoundSteps int           // most steps of later sweeps, which start where the last one ended
	MaxCalls        int           // most calls a sweep tries
	MaxLoss         float64       // percent: the sweep's loss limit
	Idle            []int         // idle call counts (two allocations each) for memory per allocation
	IdleHold        time.Duration // how long idle calls are held
	Profile         time.Duration // length of supernode's CPU profile; 0 = none
}

// The phases, in their only sensible order: latency needs coturn's rate.
var allPhases = []string{"cpu", "profile", "rate", "latency", "idle"}

// has reports whether phase p is to run.
func (c Config) has(p string) bool {
	for _, q := range c.Phases {
		if q == p {
			return true
		}
	}
	return false
}

// rounds lists the rounds to run: 0 is the warm-up.
func (c Config) rounds() []int {
	var rs []int
	if c.Warmup {
		rs = append(rs, 0)
	}
	for r := 1; r <= c.Rounds; r++ {
		rs = append(rs, r)
	}
	return rs
}

// fixedLoad is the offered load of the CPU phase and the profile.
func (c Config) fixedLoad() Load {
	return Load{Calls: c.Calls, Ramp: c.Ramp, PPS: c.PPS, Size: c.Size, Duration: c.Duration, MaxLoss: c.MaxLoss}
}

// Metric ids, shared by the phases and the report.
const (
	mCore      = "core"     // server core busy per relayed packet (namespace mode)
	mCPU       = "cpu"      // server process CPU per relayed packet
	mCoreBusy  = "corebusy" // server core busy at the fixed load (namespace mode)
	mRate      = "rate"
	mRateBusy  = "ratebusy" // server core busy at the highest rate (namespace mode)
	mLatP50    = "lat50"
	mLatP99    = "lat99"
	mAllocRate = "allocs"
)

// mIdle is the memory metric id for n idle calls.
func mIdle(calls int) string { return fmt.Sprintf("idle%d", calls) }

// phaseCPU: server CPU per relayed packet at the fixed offered load.
func (h *Harness) phaseCPU(ctx context.Context) error {
	for _, r := range h.cfg.rounds() {
		for _, v := range roundOrder(h.variants, r) {
			run, err := h.runOne(ctx, "cpu", r, 0, v, h.cfg.fixedLoad(), false, nil)
			if err != nil {
				return err
			}
			if x := run.Result; x != nil {
				cpu := cpuPerHop(x)
				if t := serverOf(x).CPUMicrosPerPacket; !math.IsNaN(cpu) && t > 0 && math.Abs(t-cpu) > 0.05*cpu && !h.warnedCPU {
					h.warnedCPU = true
					h.note("turnload's server.cpu_us_per_packet (%.2f) differs from server CPU / (2 x delivered packets) (%.2f) in %s; its definition may have changed; this report uses the latter", t, cpu, run.Name)
				}
				h.set(mCPU, v.Name, r, Value{V: cpu, Saturated: x.Loader.Saturated,
					Detail: fmt.Sprintf("loss %.3f%%", x.Packets.LossPercent)})
				if c := run.Core; c != nil {
					h.set(mCore, v.Name, r, Value{V: positive(c.MicrosPerPkt), Saturated: x.Loader.Saturated,
						Detail: fmt.Sprintf("busy %.0f%% (ticked %.0f%%), softirq %.0f%%, %s relayed/s", 100*c.Busy, 100*c.Ticked, 100*c.SoftIRQ, thousands(c.Relayed/c.Seconds))})
					h.set(mCoreBusy, v.Name, r, Value{V: 100 * c.Busy, Saturated: x.Loader.Saturated,
						Detail: fmt.Sprintf("user %.0f%%, system %.0f%%, softirq %.0f%%", 100*c.User, 100*c.System, 100*c.SoftIRQ)})
				} else if run.CoreErr != "" {
					h.note("%s: no server core cost: %s", run.Name, firstLine(run.CoreErr))
				}
			}
		}
	}
	return nil
}

// cpuPerHop is the server's CPU in microseconds per relayed packet, counted
// per relay hop: both legs of a call are on the server, so every packet
// delivered in the steady window was relayed twice (sender's allocation to
// the other relayed address, then that allocation to the receiver). It is
// computed from turnload's raw window figures rather than taken from its
// cpu_us_per_packet, so the unit cannot drift with turnload's definition.
func cpuPerHop(x *Result) float64 {
	delivered := x.Rate.ReceivedPPS * x.Rate.WindowSeconds
	// A process that relays in the kernel may use no measurable CPU (under
	// one clock tick) in the window: that is 0, not missing.
	if x.Server == nil || x.Server.PID == 0 || serverOf(x).CPUSeconds < 0 || delivered < 1 {
		return math.NaN()
	}
	return serverOf(x).CPUSeconds * 1e6 / (2 * delivered)
}

// phaseRate: the highest packet rate relayed with loss under MaxLoss. Each
// server's first sweep brackets the limit coarsely; later sweeps start at
// the call count where the previous one settled and refine with small steps.
func (h *Harness) phaseRate(ctx context.Context) error {
	start := map[string]int{}
	for _, r := range h.cfg.rounds() {
		for _, v := range roundOrder(h.variants, r) {
			sw := Sweep{Start: h.cfg.SweepStart, Factor: 2, Steps: h.cfg.SweepSteps, Precision: 0.1,
				MinCalls: 1, MaxCalls: h.cfg.MaxCalls, MaxLoss: h.cfg.MaxLoss}
			if s, ok := start[v.Name]; ok {
				sw.Start, sw.Factor, sw.Steps, sw.Precision = s, 1.2, h.cfg.SweepRoundSteps, 0.04
			}
			step := 0
			var fatal error
			cores := map[*Result]*CoreCost{} // the server core's reading of each step
			probe := func(ctx context.Context, calls int) (*Result, error) {
				step++
				l := h.cfg.fixedLoad()
				l.Calls, l.Duration = calls, h.cfg.SweepDuration
				run, err := h.runOne(ctx, "rate", r, step, v, l, false, nil)
				if err != nil {
					fatal = err
					return nil, err
				}
				if run.Result == nil {
					return nil, fmt.Errorf("%s", run.Err)
				}
				if run.Core != nil {
					cores[run.Result] = run.Core
				}
				return run.Result, nil
			}
			best, steps, err := sw.run(ctx, probe)
			if fatal != nil {
				return fatal
			}
			if err != nil {
				return err
			}
			if best == nil {
				h.note("rate sweep, round %d, %s: no step relayed with loss under %g%% (tried %s)", r, v.Name, h.cfg.MaxLoss, stepCalls(steps))
				h.set(mRate, v.Name, r, Value{V: math.NaN(), Detail: "none passed"})
				continue
			}
			start[v.Name] = best.Calls
			d := fmt.Sprintf("%d calls, loss %.3f%%", best.Calls, best.Result.Packets.LossPercent)
			if c := cores[best.Result]; c != nil {
				d += fmt.Sprintf(", core %d busy %.0f%%", c.CPU, 100*c.Busy)
				h.set(mRateBusy, v.Name, r, Value{V: 100 * c.Busy, Saturated: best.Saturated,
					Detail: fmt.Sprintf("at %s pps; user %.0f%%, system %.0f%%, softirq %.0f%%", thousands(best.Result.Rate.ReceivedPPS), 100*c.User, 100*c.System, 100*c.SoftIRQ)})
			}
			h.set(mRate, v.Name, r, Value{V: best.Result.Rate.ReceivedPPS, Saturated: best.Saturated,
				Detail: d + "; steps " + stepCalls(steps)})
		}
	}
	return nil
}

// stepCalls lists a sweep's steps as "200✓ 400✓ 800✗".
func stepCalls(steps []Step) string {
	var parts []string
	for _, s := range steps {
		mark := "✗"
		if s.Pass {
			mark = "✓"
		}
		if s.Saturated {
			mark += "(sat)"
		}
		parts = append(parts, fmt.Sprintf("%d%s", s.Calls, mark))
	}
	return strings.Join(parts, " ")
}

// latencyCalls is the call count for the latency phase: half of coturn's
// median highest rate, or the fixed load when that rate is unknown.
func (h *Harness) latencyCalls() (calls int, why string) {
	med := spreadOf(floats(h.values[mRate][string(Coturn)])).Median
	if math.IsNaN(med) || h.cfg.PPS <= 0 {
		return h.cfg.Calls, "coturn's highest rate is unknown, so at the fixed load"
	}
	calls = max(1, int(math.Round(med/2/float64(2*h.cfg.PPS))))
	return calls, fmt.Sprintf("half of coturn's median highest rate (%s pps)", thousands(med))
}

// phaseLatency: one-way latency p50 and p99 at half of coturn's highest rate.
func (h *Harness) phaseLatency(ctx context.Context) error {
	calls, why := h.latencyCalls()
	fmt.Fprintf(h.log, "bench: latency at %d calls: %s\n", calls, why)
	l := h.cfg.fixedLoad()
	l.Calls = calls
	for _, r := range h.cfg.rounds() {
		for _, v := range roundOrder(h.variants, r) {
			run, err := h.runOne(ctx, "latency", r, 0, v, l, false, nil)
			if err != nil {
				return err
			}
			if x := run.Result; x != nil && x.Packets.Received > 0 {
				d := fmt.Sprintf("loss %.3f%%", x.Packets.LossPercent)
				h.set(mLatP50, v.Name, r, Value{V: x.LatencyMS.P50, Saturated: x.Loader.Saturated, Detail: d})
				h.set(mLatP99, v.Name, r, Value{V: x.LatencyMS.P99, Saturated: x.Loader.Saturated, Detail: d})
			}
		}
	}
	return nil
}

// phaseIdle: resident memory per idle allocation, and allocations per
// second (from the largest idle run, which sets up with --ramp 0).
func (h *Harness) phaseIdle(ctx context.Context) error {
	largest := 0
	for _, n := range h.cfg.Idle {
		largest = max(largest, n)
	}
	for _, n := range h.cfg.Idle {
		l := Load{Calls: n, Ramp: 0, PPS: 0, Size: h.cfg.Size, Duration: h.cfg.IdleHold, MaxLoss: h.cfg.MaxLoss}
		for _, r := range h.cfg.rounds() {
			for _, v := range roundOrder(h.variants, r) {
				run, err := h.runOne(ctx, "idle", r, 0, v, l, false, nil)
				if err != nil {
					return err
				}
				x := run.Result
				if x == nil {
					continue
				}
				d := fmt.Sprintf("%d/%d allocations", x.Setup.Allocations, 2*n)
				if x.Calls.Failed > 0 {
					d += fmt.Sprintf(", %d calls failed", x.Calls.Failed)
				}
				h.set(mIdle(n), v.Name, r, Value{V: positive(serverOf(x).RSSPerAllocationBytes / 1024), Saturated: x.Loader.Saturated, Detail: d})
				if n == largest {
					// turnload's saturation flag covers only the (idle) steady
					// window; its CPU over the whole run, divided by the setup
					// time, bounds how busy it was while allocating.
					if x.Setup.AllocationsPerSecond > 0 {
						setup := float64(x.Setup.Allocations) / x.Setup.AllocationsPerSecond
						d += fmt.Sprintf(", loader ≤ %.2f cores during setup", x.Loader.CPUSeconds/setup)
					}
					h.set(mAllocRate, v.Name, r, Value{V: positive(x.Setup.AllocationsPerSecond), Saturated: x.Loader.Saturated, Detail: d})
				}
			}
		}
	}
	return nil
}

// positive maps the zero a missing JSON field decodes to onto "no value".
func positive(v float64) float64 {
	if v <= 0 {
		return math.NaN()
	}
	return v
}

// floats extracts the numbers of vs.
func floats(vs []Value) []float64 {
	out := make([]float64, len(vs))
	for i, v := range vs {
		out[i] = v.V
	}
	return out
}
