package main

import (
	"context"
	"math"
)

// Sweep bounds a search for the highest call count a server relays with
// loss under the limit. Calls are the unit searched; the rate reported is
// what the loader actually received in the best passing step.
type Sweep struct {
	Start     int     // first call count tried
	Factor    float64 // growth (and shrink) per step until the limit is bracketed; > 1
	Steps     int     // most turnload runs in one sweep
	Precision float64 // stop bisecting when hi-lo <= lo*Precision (fraction)
	MinCalls  int     // never go below this many calls
	MaxCalls  int     // never go above this many calls (file descriptors bound it)
	MaxLoss   float64 // percent: a step passes when its loss is below this
}

// Step is one probe of a sweep and how it was judged.
type Step struct {
	Calls     int
	Result    *Result // nil when the run failed
	Pass      bool    // loss < MaxLoss, every call set up
	Saturated bool    // turnload reported itself saturated: the figure may be the loader's limit
}

// probeFunc runs one load of calls calls and returns turnload's result, or
// an error when no result could be had (the step then counts as failing).
type probeFunc func(ctx context.Context, calls int) (*Result, error)

// passes says whether r relayed the load well enough to count.
func (sw Sweep) passes(r *Result) bool {
	return r != nil && r.Calls.Failed == 0 && r.Calls.Established > 0 &&
		r.Packets.Received > 0 && r.Packets.LossPercent < sw.MaxLoss
}

// run searches: grow by Factor from Start until a step fails, shrink by
// Factor if the first step already fails, then bisect between the highest
// passing and the lowest failing count. best is the passing step with the
// highest received packet rate (nil if none passed). A saturated loader does
// not steer the search (what was received is what the server relayed); it
// only flags the step. A context error ends the sweep early and is returned.
func (sw Sweep) run(ctx context.Context, probe probeFunc) (best *Step, steps []Step, err error) {
	lo, hi := 0, 0 // highest passing count; lowest failing count (0 = none yet)
	bestIdx := -1
	c := min(max(sw.Start, sw.MinCalls, 1), sw.MaxCalls)
	for len(steps) < sw.Steps {
		r, perr := probe(ctx, c)
		if ctx.Err() != nil {
			break
		}
		st := Step{Calls: c}
		if perr == nil {
			st.Result = r
			st.Pass = sw.passes(r)
			st.Saturated = r.Loader.Saturated
		}
		steps = append(steps, st)
		if st.Pass && (bestIdx < 0 || r.Rate.ReceivedPPS > steps[bestIdx].Result.Rate.ReceivedPPS) {
			bestIdx = len(steps) - 1
		}
		if st.Pass {
			lo = c
		} else {
			hi = c
		}
		next, done := sw.next(lo, hi)
		if done {
			break
		}
		c = next
	}
	if bestIdx >= 0 {
		best = &steps[bestIdx]
	}
	return best, steps, ctx.Err()
}

// next is the call count to try given the bracket so far, or done.
func (sw Sweep) next(lo, hi int) (int, bool) {
	floor := max(sw.MinCalls, 1)
	switch {
	case hi == 0: // everything passed so far: grow
		if lo >= sw.MaxCalls {
			return 0, true
		}
		return min(int(math.Ceil(float64(lo)*sw.Factor)), sw.MaxCalls), false
	case lo == 0: // everything failed so far: shrink
		if hi <= floor {
			return 0, true
		}
		return max(int(math.Floor(float64(hi)/sw.Factor)), floor), false
	default:
		if hi-lo <= max(1, int(float64(lo)*sw.Precision)) {
			return 0, true
		}
		return (lo + hi) / 2, false
	}
}
