package main

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/supernode/supernode/procfs"
)

// statAt is a /proc/stat for 2 CPUs whose cpu1 line is given.
func statAt(t *testing.T, cpu1 string) []procfs.CPUTimes {
	t.Helper()
	s, err := procfs.ParseStat([]byte("cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 1000 0 500 9000 0 0 100 0 0 0\ncpu1 " + cpu1 + "\nintr 1 2 3\nctxt 99\n"))
	if err != nil {
		t.Fatal(err)
	}
	return s.CPUs
}

func TestCoreCost(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	a := CPUSample{At: t0, NetRX: []uint64{100, 200}, NetTX: []uint64{0, 0}, RxPkts: 1000, TxPkts: 1000}
	b := CPUSample{At: t0.Add(2 * time.Second), NetRX: []uint64{40100, 80200}, NetTX: []uint64{0, 5}, RxPkts: 41000, TxPkts: 41100}
	// cpu1 over 2 s = 200 ticks: +60 user, +40 system, +30 softirq, +70 idle.
	a.CPUs = statAt(t, "5000 10 3000 20000 0 0 700 0 0 0")
	b.CPUs = statAt(t, "5060 10 3040 20070 0 0 730 0 0 0")
	b.CPUs[0].Idle += 200 // cpu0 idle throughout
	c, err := coreCost(a, b, 1)
	if err != nil {
		t.Fatal(err)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	// 1.3 busy seconds over 2 x 40,000 relayed packets = 16.25 µs.
	if !near(c.BusySeconds, 1.3) || !near(c.Busy, 0.65) || !near(c.SoftIRQ, 0.15) || !near(c.System, 0.2) || !near(c.User, 0.3) {
		t.Errorf("busy %v (%v), softirq %v, system %v, user %v", c.BusySeconds, c.Busy, c.SoftIRQ, c.System, c.User)
	}
	if c.Delivered != 40000 || c.Sent != 40100 || c.Relayed != 80000 || !near(c.MicrosPerPkt, 16.25) {
		t.Errorf("delivered %d sent %d relayed %v µs/pkt %v", c.Delivered, c.Sent, c.Relayed, c.MicrosPerPkt)
	}
	if !slices.Equal(c.NetRX, []uint64{40000, 80000}) || !slices.Equal(c.NetTX, []uint64{0, 5}) || len(c.OtherBusy) != 2 || c.OtherBusy[0] != 0 {
		t.Errorf("per CPU: rx %v tx %v busy %v", c.NetRX, c.NetTX, c.OtherBusy)
	}
	if !near(c.Ticked, 0.65) {
		t.Errorf("ticked %v, want 0.65 (every busy moment was ticked)", c.Ticked)
	}
	// A tickless CPU that wakes for short softirq bursts: over 1 s (100
	// ticks) the fields moved by 10 softirq and 80 idle; the 10 ticks'
	// worth no field got was work too.
	u := CPUSample{At: t0.Add(3 * time.Second), CPUs: slices.Clone(b.CPUs), RxPkts: b.RxPkts + 10000}
	u.CPUs[1].SoftIRQ += 10
	u.CPUs[1].Idle += 80
	u.CPUs[0].Idle += 100
	if c, err := coreCost(b, u, 1); err != nil || !near(c.Busy, 0.2) || !near(c.Ticked, 0.1) || !near(c.MicrosPerPkt, 10) {
		t.Errorf("unticked work: busy %v ticked %v µs/pkt %v (%v), want 0.2, 0.1, 10", c.Busy, c.Ticked, c.MicrosPerPkt, err)
	}
	if _, err := coreCost(a, b, 2); err == nil {
		t.Error("a CPU beyond /proc/stat accepted")
	}
	if _, err := coreCost(b, a, 1); err == nil {
		t.Error("samples out of order accepted")
	}
	// No packets: no cost, no division by zero.
	b.RxPkts = a.RxPkts
	if c, err := coreCost(a, b, 1); err != nil || c.MicrosPerPkt != 0 || c.Relayed != 0 {
		t.Errorf("no packets: %+v, %v", c, err)
	}
}

// series builds samples every 100 ms: the loader sends at rate(k) packets/s
// in interval k and the server's core is busy busy(k) of its 10 ticks.
func series(n int, rate func(k int) float64, busy func(k int) uint64) []CPUSample {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	var s []CPUSample
	var tx, b, total uint64
	for k := range n {
		if k > 0 {
			tx += uint64(rate(k) / 10)
			b += busy(k)
			total += 10
		}
		s = append(s, CPUSample{
			At:     t0.Add(time.Duration(k) * 100 * time.Millisecond),
			CPUs:   []procfs.CPUTimes{{Idle: total}, {User: b, Idle: total - b}},
			TxPkts: tx, RxPkts: tx,
		})
	}
	return s
}

func TestSteadySpan(t *testing.T) {
	// 0.3 s idle, 1 s of ramp-up, a 3 s window (intervals 14-43), then
	// nothing but the drain: the window ends at sample 43.
	rate := func(k int) float64 {
		switch {
		case k <= 3:
			return 0
		case k <= 13:
			return float64(k-3) * 2000
		case k <= 43:
			return 20000
		}
		return 0
	}
	busy := func(k int) uint64 {
		if k >= 14 && k <= 43 {
			return 7
		}
		return 1
	}
	s := series(60, rate, busy)
	i, j, ok := steadySpan(s, 3*time.Second)
	// end = sample 43 (4.3 s); span = [1.3+0.25, 4.3-0.25] = samples 16..40.
	if !ok || i != 16 || j != 40 {
		t.Fatalf("steadySpan = %d, %d, %v; want 16, 40", i, j, ok)
	}
	c, err := steadyCost(s, 3*time.Second, 1, s[3].At.Add(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(c.Busy-0.7) > 1e-9 || c.Delivered != 48000 || c.Samples != 25 || math.Abs(c.BusyBefore-0.1) > 1e-9 {
		t.Errorf("steadyCost = %+v", c)
	}

	// A loader that never sent, too few samples, a window longer than the run.
	if _, _, ok := steadySpan(series(60, func(int) float64 { return 0 }, busy), 3*time.Second); ok {
		t.Error("found a window without traffic")
	}
	if _, _, ok := steadySpan(s[:2], 3*time.Second); ok {
		t.Error("found a window in 2 samples")
	}
	if _, _, ok := steadySpan(s, 30*time.Second); ok {
		t.Error("found a 30 s window in 6 s of samples")
	}
	if _, err := steadyCost(s[:2], time.Second, 1, time.Time{}); err == nil || !strings.Contains(err.Error(), "steady window") {
		t.Errorf("steadyCost without a window: %v", err)
	}
}
