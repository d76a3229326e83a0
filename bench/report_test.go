package main

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExtractAnalysis(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"no file", "", analysisStub},
		{"no markers", "# Benchmarks\n\nold table\n", analysisStub},
		{"kept", "x\n<!-- analysis -->\nHand written.\n\nTwo paragraphs.\n<!-- /analysis -->\ny\n", "Hand written.\n\nTwo paragraphs."},
		{"empty between markers", "<!-- analysis -->\n\n<!-- /analysis -->", analysisStub},
		{"no end marker keeps the rest", "<!-- analysis -->\nkeep me\nand me\n", "keep me\nand me"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := extractAnalysis(tc.doc); got != tc.want {
				t.Errorf("extractAnalysis = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFmtNum(t *testing.T) {
	for _, tc := range []struct {
		v      float64
		digits int
		want   string
	}{
		{0, 0, "0"}, {999, 0, "999"}, {1000, 0, "1,000"}, {65432.4, 0, "65,432"},
		{1234567.891, 2, "1,234,567.89"}, {-12345, 0, "-12,345"}, {0.0425, 3, "0.043"},
		{math.NaN(), 2, "–"}, {math.Inf(1), 0, "–"},
	} {
		if got := fmtNum(tc.v, tc.digits); got != tc.want {
			t.Errorf("fmtNum(%v, %d) = %q, want %q", tc.v, tc.digits, got, tc.want)
		}
	}
}

// fixedReport is a report built from fixed inputs, as the harness would.
func fixedReport() *Report {
	cfg := Config{Rounds: 3, Warmup: true, Phases: allPhases, Calls: 200, PPS: 50, Size: 172, Ramp: 200,
		Duration: 10 * time.Second, SweepDuration: 5 * time.Second, SweepStart: 200, SweepSteps: 7, SweepRoundSteps: 5,
		MaxCalls: 4000, MaxLoss: 0.1, Idle: []int{500, 5000}, IdleHold: 3 * time.Second, Profile: 10 * time.Second}
	h := &Harness{cfg: cfg}
	for i, v := range []float64{12, 11, 13} {
		h.set(mCPU, "supernode", i+1, Value{V: v})
		h.set(mCPU, "coturn", i+1, Value{V: v / 2})
	}
	for i, v := range []float64{40000, 42000, 41000} {
		h.set(mRate, "supernode", i+1, Value{V: v, Detail: "410 calls"})
		h.set(mRate, "coturn", i+1, Value{V: v * 2, Saturated: i == 1})
	}
	h.set(mLatP50, "supernode", 2, Value{V: 0.25}) // rounds 1 and 3 failed
	h.set(mCPU, "supernode", 0, Value{V: 1000})    // warm-up: discarded
	return &Report{
		Date: time.Date(2026, 11, 25, 1, 2, 0, 0, time.UTC), Elapsed: 13 * time.Minute,
		Machine: Machine{Cores: 2, Kernel: "6.1.0", CPU: "Test CPU", Commit: "abc123", Go: "go1.26", Coturn: "4.6.1"},
		Config:  cfg, ResultsDir: "bench/results/x", LatCalls: 410, LatencyWhy: "half of coturn's median highest rate (82000 pps)",
		Defs: metricDefs(cfg, 410, loopbackNet("test")), Values: h.values, Variants: []string{"supernode", "coturn"},
		Commands: []string{"bin/supernode --listen 127.0.0.1:1"},
		Loader:   []string{"cpu phase, supernode: 4 runs"},
		Profile:  &Profile{Seconds: 10, Load: cfg.fixedLoad(), File: "p.pprof", Top: "flat flat%\n1s 50% foo"},
		Notes:    []string{"a note"},
		Analysis: "My analysis.",
	}
}

func TestMarkdown(t *testing.T) {
	md := fixedReport().Markdown()
	for _, want := range []string{
		"| server process CPU per relayed packet at 20,000 pps offered | µs | lower | 11.00 / 12.00 / 13.00 | 5.50 / 6.00 / 6.50 | 2.00 |",
		"| highest rate relayed with loss < 0.1% † | packets/s | higher | 40,000 / 41,000 / 42,000 | 80,000 / 82,000 / 84,000 | 0.50 |",
		"| one-way latency p50 at 41,000 pps | ms | lower | 0.250 / 0.250 / 0.250 (1 of 3 rounds) | no data | – |",
		"| resident memory per idle allocation, 10,000 allocations | KiB | lower | no data | no data | – |",
		"allocations per second (10,000 allocations, --ramp 0)",
		"| 40,000 (410 calls) | 42,000 (410 calls) | 41,000 (410 calls) |",
		"| 84,000 † |",
		"2 cores, Test CPU, kernel 6.1.0",
		"`abc123`",
		"3 measured, after one discarded warm-up round",
		"The loader reported itself saturated",
		"bin/supernode --listen 127.0.0.1:1",
		"- a note",
		"1s 50% foo",
		"<!-- analysis -->\nMy analysis.\n<!-- /analysis -->\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q\n%s", want, md)
		}
	}
	if strings.Contains(md, "1,000.00") {
		t.Error("the warm-up round's value reached the report")
	}
	// Regenerating keeps the analysis byte for byte.
	r := fixedReport()
	r.Analysis = extractAnalysis(md)
	if again := r.Markdown(); again != md {
		t.Errorf("regenerated report differs")
	}
}

func TestMarkdownWithoutProfileOrSaturation(t *testing.T) {
	r := fixedReport()
	r.Profile = &Profile{Err: "profiling disabled (-profile 0)"}
	delete(r.Values, mRate)
	md := r.Markdown()
	if strings.Contains(md, "†") {
		t.Error("† without a saturated run")
	}
	if !strings.Contains(md, "No profile: profiling disabled (-profile 0).") {
		t.Error("missing the reason there is no profile")
	}
}

// TestMarkdownNetns: three variants in the namespace mode get the server
// core rows, a column each and a ratio to coturn each; the placement lines
// and the method paragraph say what the code does.
func TestMarkdownNetns(t *testing.T) {
	r := fixedReport()
	r.Net = &Net{Mode: "netns", ServerIP: "10.201.0.2", LoaderIP: "10.201.0.1", Subnet: "10.201.0.0/30", ServerCPU: 1, LoaderCPU: 0,
		Netns: "sn-bench-srv", HostDev: "snb-host", SrvDev: "snb-srv", RPS: []string{"snb-host rx-0=1", "snb-srv rx-0=2"}}
	r.Variants = []string{"supernode-kernel", "supernode-user", "coturn"}
	r.Defs = metricDefs(r.Config, 410, r.Net)
	h := &Harness{cfg: r.Config}
	for i, v := range []float64{1.5, 2, 2.5} {
		h.set(mCore, "supernode-kernel", i+1, Value{V: v})
		h.set(mCore, "supernode-user", i+1, Value{V: 10 * v})
		h.set(mCore, "coturn", i+1, Value{V: 8 * v})
		h.set(mRateBusy, "supernode-kernel", i+1, Value{V: 40})
		h.set(mRateBusy, "coturn", i+1, Value{V: 98})
	}
	r.Values = h.values
	r.Placement = []string{"supernode-user: CPU 0 busy 60%, NET_RX 28,000/s"}
	md := r.Markdown()
	for _, want := range []string{
		"| metric | unit | better | supernode-kernel min / median / max | supernode-user min / median / max | coturn min / median / max | supernode-kernel / coturn (medians) | supernode-user / coturn (medians) |",
		"| server cost per relayed packet at 20,000 pps offered (core 1 busy, softirq included) | µs | lower | 1.50 / 2.00 / 2.50 | 15.00 / 20.00 / 25.00 | 12.00 / 16.00 / 20.00 | 0.12 | 1.25 |",
		"| core 1 busy at that highest rate | % | – | 40 / 40 / 40 | no data | 98 / 98 / 98 | – | – |",
		"highest rate one core relays with loss < 0.1%",
		"network namespace of its own (`sn-bench-srv`)",
		"`rps_cpus` picks the CPU",
		"Cost = CPU 1's busy time",
		"- supernode-user: CPU 0 busy 60%, NET_RX 28,000/s",
		"turnload runs on CPU 0 alone",
		"| setup | server in network namespace `sn-bench-srv` at 10.201.0.2 on CPU 1; loader at 10.201.0.1 on CPU 0; veth pair with RPS (snb-host rx-0=1; snb-srv rx-0=2) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q\n%s", want, md)
		}
	}
	// Loopback: no server-core rows.
	for _, d := range metricDefs(r.Config, 410, loopbackNet("test")) {
		if d.ID == mCore || d.ID == mCoreBusy || d.ID == mRateBusy {
			t.Errorf("loopback mode has the %s row", d.ID)
		}
	}
}

func TestPlacementLines(t *testing.T) {
	runs := []Run{
		{Phase: "cpu", Variant: "coturn", Core: &CoreCost{Seconds: 2, OtherBusy: []float64{0.6, 0.7}, NetRX: []uint64{40000, 80000}, Sent: 40000, Delivered: 39990, BusyBefore: 0.02}},
		{Phase: "cpu", Variant: "coturn", Core: &CoreCost{Seconds: 2, OtherBusy: []float64{0.5, 0.8}, NetRX: []uint64{44000, 84000}, Sent: 40000, Delivered: 40000, BusyBefore: 0.02}},
		{Phase: "rate", Variant: "coturn", Core: &CoreCost{Seconds: 2, OtherBusy: []float64{1, 1}}},
		{Phase: "cpu", Variant: "supernode-user"}, // no core reading
	}
	vs, _ := parseVariants("supernode-user,coturn")
	got := placementLines(runs, vs)
	want := []string{"coturn: CPU 0 busy 55%, NET_RX 21,000/s; CPU 1 busy 75%, NET_RX 41,000/s; packets to the server 20,000/s, to the loader 19,998/s; server core busy 2% just before the runs"}
	if !slices.Equal(got, want) {
		t.Errorf("placementLines =\n%q\nwant\n%q", got, want)
	}
}
