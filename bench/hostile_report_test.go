package main

import (
	"strings"
	"testing"
	"time"
)

func TestWithHostile(t *testing.T) {
	sec := func(body string) string { return hostileStart + "\n" + body + "\n" + hostileEnd }
	for _, tc := range []struct{ name, doc, want string }{
		{"empty file", "", sec("new") + "\n"},
		{"appended after the rest", "# B\n\ntext\n", "# B\n\ntext\n\n" + sec("new") + "\n"},
		{"replaced in place", "# B\n\n" + sec("old") + "\n\ntail\n", "# B\n\n" + sec("new") + "\n\ntail\n"},
		{"no end marker: replaces the rest", "# B\n" + hostileStart + "\nold\nmore\n", "# B\n" + sec("new") + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := withHostile(tc.doc, sec("new")); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestHostileAnalysisKept(t *testing.T) {
	doc := "x\n" + hostileStart + "\ntable\n" + hostileAnalysisStart + "\nMy words.\n\nTwo.\n" + hostileAnalysisEnd + "\n" + hostileEnd + "\n"
	if got := hostileAnalysis(doc); got != "My words.\n\nTwo." {
		t.Errorf("got %q", got)
	}
	for _, d := range []string{"", "x", hostileStart + "\n" + hostileAnalysisStart + "\n\n" + hostileAnalysisEnd + hostileEnd,
		// The bench's own analysis markers are not the hostile section's.
		"<!-- analysis -->\nbench words\n<!-- /analysis -->\n"} {
		if got := hostileAnalysis(d); got != hostileAnalysisStub {
			t.Errorf("hostileAnalysis(%q) = %q, want the stub", d, got)
		}
	}
	if got := hostileBlock("a " + hostileStart + " b " + hostileEnd + " c"); got != hostileStart+" b "+hostileEnd {
		t.Errorf("hostileBlock = %q", got)
	}
}

func fixedHostile() *HostileResult {
	r := &HostileResult{
		Date: time.Date(2026, 11, 30, 14, 0, 0, 0, time.UTC), Elapsed: 65,
		Machine:      Machine{Cores: 2, CPU: "Test CPU", Kernel: "6.1.0", Commit: "abc123", Go: "go1.26"},
		Config:       HostileConfig{Calls: 20, PPS: 50, Size: 172, Quiet: 10 * time.Second, Flood: 20 * time.Second, After: 5 * time.Second, Sources: 8, MaxPackets: 40_000_000},
		LoadAvgStart: "1.00 2.00 3.00", LoadAvgEnd: "4.00 5.00 6.00",
		Quiet: &Result{}, Flooded: &Result{},
		QuietWin: &Window{Seconds: 10, Machine: CPUShare{Busy: 40, User: 30, System: 8, SoftIRQ: 2}, ServerCores: 0.3, Drops: map[string]float64{"rcvbuf": 0}},
		FloodWin: &Window{Seconds: 20, Machine: CPUShare{Busy: 100, User: 50, System: 40, SoftIRQ: 10}, ServerCores: 0.9,
			Drops: map[string]float64{"rcvbuf": 2_000_000, "malformed": 100_000}, Requests: map[string]float64{"binding/success": 5000}, Received: 300_000, Softnet: 7},
		Flood:  &FloodResult{Sent: 4_000_000, Bytes: 400 << 20, Seconds: 20, PPS: 200_000, CPUSeconds: 16, ByKind: map[string]int64{"garbage": 500_000}},
		Probes: []ProbeRun{{At: 4, OK: true, AllocateMS: 12.5, RoundMS: 3}, {At: 8, End: 21, Error: "allocate: timeout\nmore"}},
		Idle:   Point{RSSBytes: 10 << 20}, Before: Point{RSSBytes: 20 << 20, Goroutines: 53}, Peak: Point{T: 7, RSSBytes: 30 << 20},
		Samples:    []Point{{T: -1, RSSBytes: 1}, {T: 1, RSSBytes: 21 << 20, Goroutines: 54}},
		ServerArgs: []string{"--listen", "127.0.0.1:1"}, LoadArgs: []string{"--calls", "20"},
	}
	r.Quiet.Calls.Requested, r.Quiet.Calls.Established = 20, 20
	r.Flooded.Packets.LossPercent = 12.3456
	r.Flooded.LatencyMS = Quantiles{P50: 275.5, P99: 2500, Max: 2700}
	r.Flooded.Loader.CPUCores = 0.1
	return r
}

func TestHostileMarkdown(t *testing.T) {
	md := fixedHostile().Markdown("Kept words.", "bench/results/hostile-x")
	for _, want := range []string{
		hostileStart + "\n## Hostile flood",
		"| commit | `abc123` |",
		"| load average | 1.00 2.00 3.00 at the start, 4.00 5.00 6.00 at the end",
		"| established | 20 / 20 | 0 / 0 |",
		"| **loss** | **0.000%** | **12.346%** |",
		"| one-way latency p50 / p99 / max | 0.000 / 0.000 / 0.0 ms | 275.500 / 2500.000 / 2700.0 ms |",
		"| machine CPU busy (user / system / irq+softirq) | 40% (30 / 8 / 2) | 100% (50 / 40 / 10) |",
		// 2 cores busy: 0.9 supernode, 0.1 turnload, 0.8 the flooder, 0.2 the rest.
		"| 2.00 of 2: 0.90 / 0.10 / 0.80 / 0.20 |",
		"| datagrams the node read (STUN and ChannelData + malformed) | 0 + 0 | 300,000 + 100,000 |",
		"| dropped by the kernel: full receive buffer (`rcvbuf`) | 0 | 2,000,000 |",
		"**200,000 per second**",
		"| rcvbuf | 2,000,000 | 100,000 |",
		"binding/success 5,000",
		"t=4s ok, allocate 12.5 ms",
		"t=8s **failed**: allocate: timeout (ended at t=21s, after the flood).",
		"| highest RSS sampled during the flood (t=7s) | 30.0 |",
		"1: 21.0 / 54.",
		"bin/supernode --listen 127.0.0.1:1\nbin/turnload --calls 20",
		hostileAnalysisStart + "\nKept words.\n" + hostileAnalysisEnd + "\n" + hostileEnd,
	} {
		if !strings.Contains(md, want) {
			t.Errorf("section lacks %q\n%s", want, md)
		}
	}
	if strings.Contains(md, "-1: ") {
		t.Error("a sample from before the flood is in the flood's samples")
	}
	// Rewriting the section keeps its analysis, and the rest of the file.
	doc := withHostile("# Benchmarks\n\nbody\n", md)
	again := withHostile(doc, fixedHostile().Markdown(hostileAnalysis(doc), "bench/results/hostile-x"))
	if again != doc {
		t.Errorf("rewriting changed the file:\n%s", again)
	}
}

// TestBenchKeepsHostile: `make bench` regenerates BENCHMARKS.md and keeps
// the hostile section as it was.
func TestBenchKeepsHostile(t *testing.T) {
	section := fixedHostile().Markdown("Kept words.", "x")
	r := fixedReport()
	prev := withHostile(r.Markdown(), section)
	r.Hostile = hostileBlock(prev)
	md := r.Markdown()
	if !strings.Contains(md, "\n"+section+"\n") {
		t.Errorf("the regenerated report lost the hostile section:\n%s", md)
	}
	if extractAnalysis(md) != "My analysis." {
		t.Errorf("the bench analysis became %q", extractAnalysis(md))
	}
}
