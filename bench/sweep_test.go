package main

import (
	"context"
	"errors"
	"testing"
)

// fakeServer relays up to limit calls without loss; the loader saturates
// from satFrom calls on (0 = never); calls in fail error out.
type fakeServer struct {
	limit, satFrom int
	fail           map[int]bool
	tried          []int
}

func (f *fakeServer) probe(_ context.Context, calls int) (*Result, error) {
	f.tried = append(f.tried, calls)
	if f.fail[calls] {
		return nil, errors.New("server did not start")
	}
	r := &Result{}
	r.Calls.Requested, r.Calls.Established = calls, calls
	r.Packets.Sent = uint64(calls) * 1000
	r.Packets.Received = r.Packets.Sent
	if calls > f.limit {
		r.Packets.Lost = r.Packets.Sent / 100
		r.Packets.Received -= r.Packets.Lost
		r.Packets.LossPercent = 1
	}
	r.Rate.ReceivedPPS = float64(calls) * 100 * (1 - r.Packets.LossPercent/100)
	r.Loader.Saturated = f.satFrom > 0 && calls >= f.satFrom
	return r, nil
}

func TestSweep(t *testing.T) {
	base := Sweep{Start: 200, Factor: 2, Steps: 8, Precision: 0.05, MinCalls: 1, MaxCalls: 4000, MaxLoss: 0.1}
	for _, tc := range []struct {
		name      string
		sw        func(Sweep) Sweep
		srv       fakeServer
		best      int  // calls of the best step; 0 = none
		bestSat   bool // best step was saturated
		maxSteps  int
		wantTried []int // if set, the exact sequence
	}{
		{name: "grows then bisects", srv: fakeServer{limit: 650}, best: 650, maxSteps: 8,
			wantTried: []int{200, 400, 800, 600, 700, 650, 675}},
		{name: "shrinks when the start fails", srv: fakeServer{limit: 70}, best: 70, maxSteps: 8},
		{name: "nothing passes", sw: func(s Sweep) Sweep { s.Start = 4; return s }, srv: fakeServer{limit: 0}, best: 0, maxSteps: 8,
			wantTried: []int{4, 2, 1}},
		{name: "step budget", sw: func(s Sweep) Sweep { s.Steps = 3; return s }, srv: fakeServer{limit: 10000}, best: 800, maxSteps: 3},
		{name: "max calls", srv: fakeServer{limit: 10000}, best: 4000, maxSteps: 8,
			wantTried: []int{200, 400, 800, 1600, 3200, 4000}},
		{name: "a saturated loader only flags", srv: fakeServer{limit: 650, satFrom: 500}, best: 650, bestSat: true, maxSteps: 8,
			wantTried: []int{200, 400, 800, 600, 700, 650, 675}},
		{name: "a failed run counts as failing", srv: fakeServer{limit: 10000, fail: map[int]bool{800: true}}, best: 775, maxSteps: 8},
		{name: "fine steps from a known start", sw: func(s Sweep) Sweep {
			s.Start, s.Factor, s.Steps, s.Precision = 600, 1.2, 5, 0.04
			return s
		}, srv: fakeServer{limit: 650}, best: 650, maxSteps: 5,
			wantTried: []int{600, 720, 660, 630, 645}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sw := base
			if tc.sw != nil {
				sw = tc.sw(base)
			}
			srv := tc.srv
			best, steps, err := sw.run(context.Background(), srv.probe)
			if err != nil {
				t.Fatal(err)
			}
			if len(steps) > tc.maxSteps || len(steps) != len(srv.tried) {
				t.Errorf("%d steps (%v), want at most %d", len(steps), srv.tried, tc.maxSteps)
			}
			if tc.wantTried != nil && !equalInts(srv.tried, tc.wantTried) {
				t.Errorf("tried %v, want %v", srv.tried, tc.wantTried)
			}
			switch {
			case tc.best == 0 && best != nil:
				t.Errorf("best = %d calls, want none (tried %v)", best.Calls, srv.tried)
			case tc.best != 0 && best == nil:
				t.Errorf("no best, want %d calls (tried %v)", tc.best, srv.tried)
			case best != nil:
				// Bisection lands within Precision of the limit.
				if float64(tc.best-best.Calls) > float64(tc.best)*sw.Precision || best.Calls > tc.best {
					t.Errorf("best = %d calls, want about %d (tried %v)", best.Calls, tc.best, srv.tried)
				}
				if best.Saturated != tc.bestSat {
					t.Errorf("best saturated = %v, want %v", best.Saturated, tc.bestSat)
				}
				if !best.Pass || best.Result == nil {
					t.Errorf("best step did not pass: %+v", best)
				}
			}
		})
	}
}

func TestSweepCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	probe := func(ctx context.Context, calls int) (*Result, error) {
		n++
		if n == 2 {
			cancel()
			return nil, ctx.Err()
		}
		return (&fakeServer{limit: 1000}).probe(ctx, calls)
	}
	sw := Sweep{Start: 100, Factor: 2, Steps: 8, Precision: 0.05, MinCalls: 1, MaxCalls: 4000, MaxLoss: 0.1}
	best, steps, err := sw.run(ctx, probe)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if n != 2 || len(steps) != 1 || best == nil || best.Calls != 100 {
		t.Errorf("after cancel: %d probes, %d steps, best %+v", n, len(steps), best)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
