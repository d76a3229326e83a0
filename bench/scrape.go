package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/supernode/supernode/procfs"
)

// Series are the samples of one /metrics page, keyed by the series as
// printed: name{label="value",...}, or the bare name without labels.
type Series map[string]float64

// parseSeries reads Prometheus text exposition. Comments and blank lines
// are skipped, a trailing timestamp is ignored; a line whose value does
// not parse is an error.
func parseSeries(r io.Reader) (Series, error) {
	out := Series{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		var key, rest string
		if i := strings.IndexByte(line, '{'); i >= 0 && (strings.IndexByte(line, ' ') < 0 || i < strings.IndexByte(line, ' ')) {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("bench: /metrics line %d: unclosed labels: %q", n, line)
			}
			key, rest = line[:j+1], line[j+1:]
		} else {
			key, rest, _ = strings.Cut(line, " ")
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("bench: /metrics line %d: no value: %q", n, line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("bench: /metrics line %d: %w", n, err)
		}
		out[key] = v
	}
	return out, sc.Err()
}

// scrape GETs http://addr/metrics.
func scrape(ctx context.Context, addr string) (Series, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: GET /metrics: %s", res.Status)
	}
	return parseSeries(res.Body)
}

// waitMetric polls a node's /metrics until the series of name, summed over
// their labels, reach n (every call is set up, every channel bound), or
// timeout passes.
func waitMetric(ctx context.Context, addr, name string, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := 0.0
	for {
		if s, err := scrape(ctx, addr); err == nil {
			if last = s.Sum(name); last >= float64(n) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: %s is %.0f, not %d, after %s", name, last, n, timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Labelled returns the value of every series of name, keyed by the value
// of label, e.g. Labelled("supernode_packets_dropped_total", "reason").
func (s Series) Labelled(name, label string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range s {
		if n, ls := splitSeries(k); n == name {
			if lv, ok := ls[label]; ok {
				out[lv] += v
			}
		}
	}
	return out
}

// splitSeries splits name{a="x",b="y"} into its name and labels. Label
// values are unquoted; a pair that does not parse is left out.
func splitSeries(key string) (string, map[string]string) {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return key, nil
	}
	ls := map[string]string{}
	for _, pair := range splitLabels(strings.TrimSuffix(key[i+1:], "}")) {
		if n, val, ok := strings.Cut(pair, "="); ok {
			if u, err := strconv.Unquote(val); err == nil {
				ls[strings.TrimSpace(n)] = u
			}
		}
	}
	return key[:i], ls
}

// Sum adds every series of name, whatever its labels.
func (s Series) Sum(name string) float64 {
	var sum float64
	for k, v := range s {
		if k == name || strings.HasPrefix(k, name+"{") {
			sum += v
		}
	}
	return sum
}

// Delta is after minus before for every series of after; series that only
// grew from nothing count from zero.
func (s Series) Delta(before Series) Series {
	out := Series{}
	for k, v := range s {
		out[k] = v - before[k]
	}
	return out
}

// splitLabels splits a="x",b="y" at the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// sortedKeys lists m's keys in order, for stable reports.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// CPUShare is how the machine's CPU time was spent between two samples, in
// percent of all cores (100 = every core busy the whole time).
type CPUShare struct {
	Busy    float64 `json:"busy_pct"`
	User    float64 `json:"user_pct"` // user + nice
	System  float64 `json:"system_pct"`
	SoftIRQ float64 `json:"softirq_pct"` // irq + softirq: packet processing not charged to a system call
	Steal   float64 `json:"steal_pct"`
	Idle    float64 `json:"idle_pct"` // idle + iowait
}

// cpuShare compares two samples.
func cpuShare(a, b procfs.CPUTimes) CPUShare {
	total := float64(b.Total() - a.Total())
	if total <= 0 {
		return CPUShare{}
	}
	pct := func(x uint64) float64 { return 100 * float64(x) / total }
	s := CPUShare{
		User:    pct(b.User + b.Nice - a.User - a.Nice),
		System:  pct(b.System - a.System),
		SoftIRQ: pct(b.IRQ + b.SoftIRQ - a.IRQ - a.SoftIRQ),
		Steal:   pct(b.Steal - a.Steal),
		Idle:    pct(b.Idle + b.IOWait - a.Idle - a.IOWait),
	}
	s.Busy = 100 - s.Idle
	return s
}
