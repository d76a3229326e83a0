package main

import (
	"math"
	"strings"
	"testing"

	"github.com/supernode/supernode/procfs"
)

const metricsPage = `# HELP supernode_packets_dropped_total Packets the node received and did not relay or answer, by reason.
# TYPE supernode_packets_dropped_total counter
supernode_packets_dropped_total{reason="malformed"} 17813
supernode_packets_dropped_total{reason="rcvbuf"} 5.8598e+05
supernode_requests_total{method="binding",result="success"} 12
supernode_requests_total{method="allocate",result="unauthorized"} 3 1700000000000
weird_total{path="a,b}c",quote="say \"hi\""} 2
go_goroutines 53

supernode_client_messages_received_total{transport="udp"} 32367
supernode_client_messages_received_total{transport="tcp"} 1
`

func TestParseSeries(t *testing.T) {
	s, err := parseSeries(strings.NewReader(metricsPage))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]float64{
		`supernode_packets_dropped_total{reason="rcvbuf"}`:                  585980,
		`supernode_requests_total{method="allocate",result="unauthorized"}`: 3, // the timestamp is not the value
		`go_goroutines`: 53,
		`weird_total{path="a,b}c",quote="say \"hi\""}`: 2,
	} {
		if got, ok := s[key]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
		}
	}
	if len(s) != 8 {
		t.Errorf("%d series, want 8: %v", len(s), s)
	}
	drops := s.Labelled("supernode_packets_dropped_total", "reason")
	if drops["malformed"] != 17813 || drops["rcvbuf"] != 585980 || len(drops) != 2 {
		t.Errorf("drops by reason: %v", drops)
	}
	if got := s.Labelled("weird_total", "path")["a,b}c"]; got != 2 {
		t.Errorf("a label value holding a comma and a brace: %v", s.Labelled("weird_total", "path"))
	}
	if got := s.Sum("supernode_client_messages_received_total"); got != 32368 {
		t.Errorf("Sum = %v, want 32368", got)
	}
	if got := s.Sum("supernode_client_messages"); got != 0 {
		t.Errorf("Sum of a name prefix = %v, want 0", got)
	}
	before := Series{`go_goroutines`: 50, `supernode_packets_dropped_total{reason="rcvbuf"}`: 980}
	d := s.Delta(before)
	if d[`go_goroutines`] != 3 || d[`supernode_packets_dropped_total{reason="rcvbuf"}`] != 585000 || d[`supernode_requests_total{method="binding",result="success"}`] != 12 {
		t.Errorf("Delta: %v", d)
	}
}

func TestParseSeriesErrors(t *testing.T) {
	for _, tc := range []struct{ name, page string }{
		{"no value", "go_goroutines\n"},
		{"bad value", "go_goroutines many\n"},
		{"unclosed labels", `x{a="b" 1` + "\n"},
		{"labels, no value", `x{a="b"}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := parseSeries(strings.NewReader(tc.page)); err == nil {
				t.Errorf("parsed %q as %v", tc.page, s)
			}
		})
	}
	s, err := parseSeries(strings.NewReader("x NaN\ny +Inf\n"))
	if err != nil || !math.IsNaN(s["x"]) || !math.IsInf(s["y"], 1) {
		t.Errorf("NaN and +Inf: %v %v", s, err)
	}
}

func TestSplitSeries(t *testing.T) {
	name, ls := splitSeries(`supernode_requests_total{method="binding",result="success"}`)
	if name != "supernode_requests_total" || ls["method"] != "binding" || ls["result"] != "success" || len(ls) != 2 {
		t.Errorf("got %q %v", name, ls)
	}
	if name, ls := splitSeries("go_goroutines"); name != "go_goroutines" || ls != nil {
		t.Errorf("bare name: %q %v", name, ls)
	}
}

func TestCPUShare(t *testing.T) {
	a := procfs.CPUTimes{User: 1000, Nice: 10, System: 300, Idle: 5000, IOWait: 20, IRQ: 5, SoftIRQ: 65}
	// 200 ticks later: 100 user, 40 system, 20 softirq, 40 idle.
	b := a
	b.User += 100
	b.System += 40
	b.SoftIRQ += 20
	b.Idle += 40
	got := cpuShare(a, b)
	if want := (CPUShare{Busy: 80, User: 50, System: 20, SoftIRQ: 10, Idle: 20}); got != want {
		t.Errorf("cpuShare = %+v, want %+v", got, want)
	}
	if got := cpuShare(a, a); got != (CPUShare{}) {
		t.Errorf("no time passed: %+v", got)
	}
}
