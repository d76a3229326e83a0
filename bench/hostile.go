package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/supernode/supernode/procfs"
)

// HostileConfig is the hostile-flood measurement (bench -hostile): calls
// established on a fresh supernode, first alone, then while one process
// floods its listener with malformed and unauthenticated datagrams.
type HostileConfig struct {
	Calls      int           // established calls (two allocations each)
	PPS        int           // packets per second per leg
	Size       int           // payload bytes
	Quiet      time.Duration // the same calls without a flood, for comparison
	Flood      time.Duration // how long the flood lasts
	After      time.Duration // how long the node is watched after the flood
	Sources    int           // flood source addresses, 127.0.0.2 upwards
	MaxPackets int64         // the flood's other bound
	Profile    time.Duration // supernode's CPU profile during the flood; 0 = none
	ServerArgs []string      // more supernode flags, to compare settings
}

// Point is the server's state at one moment.
type Point struct {
	T          float64   `json:"t"` // seconds since the flood started (negative before)
	Phase      string    `json:"phase"`
	RSSBytes   int64     `json:"rss_bytes"`
	Goroutines float64   `json:"goroutines"`
	HeapInuse  float64   `json:"heap_inuse_bytes"`
	CPUSeconds float64   `json:"server_cpu_seconds"`
	at         time.Time // when
	metrics    Series
	machine    procfs.CPUTimes
	softnet    uint64
}

// Window is one stretch of calls: how the machine and the server spent it.
type Window struct {
	Seconds     float64            `json:"seconds"`
	Machine     CPUShare           `json:"machine_cpu"`
	ServerCores float64            `json:"server_cores"`
	Drops       map[string]float64 `json:"drops_by_reason"`       // packets_dropped_total growth
	Requests    map[string]float64 `json:"requests"`              // requests_total growth, method/result
	Received    float64            `json:"client_messages_udp"`   // STUN and ChannelData the node read
	Softnet     uint64             `json:"softnet_backlog_drops"` // dropped before any socket
}

// ProbeRun is one `turnload probe` (a new allocation) during the flood.
type ProbeRun struct {
	At         float64 `json:"t"`   // started, seconds into the flood
	End        float64 `json:"end"` // ended
	OK         bool    `json:"ok"`
	AllocateMS float64 `json:"allocate_ms,omitempty"`
	RoundMS    float64 `json:"round_trip_ms,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// HostileResult is everything one hostile run measured.
type HostileResult struct {
	Date       time.Time     `json:"date"`
	Elapsed    float64       `json:"elapsed_seconds"`
	Machine    Machine       `json:"machine"`
	Config     HostileConfig `json:"config"`
	ResultsDir string        `json:"results_dir"`
	ServerArgs []string      `json:"server_args"`
	LoadArgs   []string      `json:"load_args"`
	Quiet      *Result       `json:"quiet_calls"`
	Flooded    *Result       `json:"flooded_calls"`
	QuietWin   *Window       `json:"quiet_window"`
	FloodWin   *Window       `json:"flood_window"`
	Flood      *FloodResult  `json:"flood"`
	Probes     []ProbeRun    `json:"probes"`
	Idle       Point         `json:"idle"`   // the fresh server, no calls
	Before     Point         `json:"before"` // calls up, flood about to start
	Peak       Point         `json:"peak"`   // highest RSS sampled during the flood
	End        Point         `json:"end"`    // as the flood stopped
	After      Point         `json:"after"`  // calls ended, After later
	Samples    []Point       `json:"samples"`
	ProfileTop string        `json:"profile_top,omitempty"`
	// LoadAvgStart and LoadAvgEnd are /proc/loadavg's first three fields:
	// what else was running on this shared machine.
	LoadAvgStart string   `json:"loadavg_start"`
	LoadAvgEnd   string   `json:"loadavg_end"`
	Notes        []string `json:"notes,omitempty"`
}

// hostileRun holds one run's server and files.
type hostileRun struct {
	cfg      HostileConfig
	srv      *Server
	turnload string
	dir      string
	log      io.Writer
	res      *HostileResult
	t0       time.Time      // the flood's start; zero before
	side     sync.WaitGroup // the profile and probes beside the flood

	mu      sync.Mutex
	samples []Point
	phase   string
}

// runHostile does one hostile run and returns what it measured.
func runHostile(ctx context.Context, cfg HostileConfig, supernode, turnload, dir string, log io.Writer) (*HostileResult, error) {
	start := time.Now()
	h := &hostileRun{cfg: cfg, turnload: turnload, dir: dir, log: log, phase: "idle",
		res: &HostileResult{Date: start, Machine: describeMachine(""), Config: cfg, ResultsDir: dir}}
	srv, err := startServer(ctx, Supernode, supernode, filepath.Join(dir, "server"), cfg.Profile > 0, 15*time.Second, nil, cfg.ServerArgs...)
	if err != nil {
		return nil, err
	}
	h.srv = srv
	defer func() {
		if err := srv.Stop(5 * time.Second); err != nil {
			h.note("%v", err)
		}
	}()
	h.res.ServerArgs = srv.Args
	h.res.LoadAvgStart = procfs.LoadAvg()
	if h.res.Idle, err = h.point(ctx); err != nil {
		return nil, err
	}

	sctx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { h.sample(sctx) })
	defer func() { stopSampling(); wg.Wait() }()

	fmt.Fprintf(log, "bench: hostile: %d calls at %d pps for %s, no flood\n", cfg.Calls, cfg.PPS, cfg.Quiet)
	h.res.Quiet, h.res.QuietWin, err = h.calls(ctx, "quiet", cfg.Quiet, nil)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "bench: hostile: %d calls at %d pps while %d sources flood for %s\n", cfg.Calls, cfg.PPS, cfg.Sources, cfg.Flood)
	h.res.Flooded, h.res.FloodWin, err = h.calls(ctx, "flood", cfg.Flood, h.flood)
	if err != nil {
		return nil, err
	}
	h.setPhase("after")
	select {
	case <-time.After(cfg.After):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if h.res.After, err = h.point(ctx); err != nil {
		return nil, err
	}
	if srv.Exited() {
		return nil, fmt.Errorf("bench: supernode exited during the hostile run: %v\n%s", srv.err, tail(srv.logFiles(), 15))
	}
	stopSampling()
	wg.Wait()
	h.mu.Lock()
	h.res.Samples = h.samples
	h.mu.Unlock()
	for _, p := range []*Point{&h.res.Idle, &h.res.Before, &h.res.End, &h.res.After} {
		p.T = p.at.Sub(h.t0).Seconds()
	}
	for i := range h.res.Samples {
		h.res.Samples[i].T = h.res.Samples[i].at.Sub(h.t0).Seconds()
	}
	for _, p := range h.res.Samples {
		if p.Phase == "flood" && p.RSSBytes > h.res.Peak.RSSBytes {
			h.res.Peak = p
		}
	}
	if _, err := os.Stat(h.profileFile()); err == nil {
		top, err := pprofTop(ctx, supernode, h.profileFile())
		if err != nil {
			h.note("%v", err)
		}
		h.res.ProfileTop = top
	}
	h.res.LoadAvgEnd = procfs.LoadAvg()
	h.res.Elapsed = time.Since(start).Seconds()
	return h.res, nil
}

// calls runs turnload's calls; once they are all set up it takes a point,
// runs during (or waits window), takes another and returns the calls'
// report and what happened in between.
func (h *hostileRun) calls(ctx context.Context, name string, window time.Duration, during func(context.Context) error) (*Result, *Window, error) {
	// turnload's steady window starts when its calls are set up; ours a
	// moment later, once the node shows them. A second more covers ours.
	l := Load{Calls: h.cfg.Calls, PPS: h.cfg.PPS, Size: h.cfg.Size, Duration: window + time.Second, MaxLoss: 100}
	args := l.args(benchUser, benchPassword, benchRealm, h.srv.Addr, h.srv.PID())
	h.res.LoadArgs = args
	type out struct {
		r   *Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		r, _, err := runLoad(ctx, h.turnload, args, l.timeout(),
			filepath.Join(h.dir, name+"-turnload.json"), filepath.Join(h.dir, name+"-turnload.log"))
		done <- out{r, err}
	}()
	fail := func(err error) (*Result, *Window, error) {
		o := <-done // turnload ends by itself within its timeout
		if o.err != nil {
			err = errors.Join(err, o.err)
		}
		return nil, nil, err
	}
	if err := waitMetric(ctx, h.srv.HTTP, "supernode_channels_active", 2*h.cfg.Calls, 30*time.Second); err != nil {
		return fail(err)
	}
	a, err := h.point(ctx)
	if err != nil {
		return fail(err)
	}
	if name == "flood" {
		h.res.Before = a
		h.mu.Lock()
		h.t0 = a.at
		h.mu.Unlock()
	}
	h.setPhase(name)
	if during != nil {
		if err := during(ctx); err != nil {
			return fail(err)
		}
	} else {
		select {
		case <-time.After(window):
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	b, err := h.point(ctx)
	if err != nil {
		return fail(err)
	}
	if name == "flood" {
		h.res.End = b
	}
	h.setPhase(name + "-end")
	h.side.Wait()
	o := <-done
	if o.err != nil {
		return nil, nil, o.err
	}
	return o.r, window2(a, b), nil
}

// flood floods the server for the configured time. Alongside, on h.side,
// it takes a CPU profile from the middle of the flood and runs three probes
// (new allocations) while it lasts.
func (h *hostileRun) flood(ctx context.Context) error {
	target, err := netip.ParseAddrPort(h.srv.Addr)
	if err != nil {
		return err
	}
	f := Flood{Target: target, Duration: h.cfg.Flood, Packets: h.cfg.MaxPackets}
	for i := range h.cfg.Sources {
		f.Sources = append(f.Sources, netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}))
	}
	start := time.Now()
	if secs := int(h.cfg.Profile / time.Second); secs > 0 {
		h.side.Go(func() {
			if !sleepUntil(ctx, start.Add((h.cfg.Flood-time.Duration(secs)*time.Second)/2)) {
				return
			}
			if err := fetchProfile(ctx, h.srv.HTTP, secs, h.profileFile()); err != nil {
				h.note("no CPU profile: %v", err)
			}
		})
	}
	// At a fifth, two fifths and three fifths of the flood, each on its own
	// and giving up within a fifth, so that all three end while it lasts.
	for i := 1; i <= 3; i++ {
		h.side.Go(func() {
			if !sleepUntil(ctx, start.Add(h.cfg.Flood*time.Duration(i)/5)) {
				return
			}
			p := h.probe(ctx, start, h.cfg.Flood/5)
			h.mu.Lock()
			h.res.Probes = append(h.res.Probes, p)
			slices.SortFunc(h.res.Probes, func(a, b ProbeRun) int { return cmp.Compare(a.At, b.At) })
			h.mu.Unlock()
		})
	}
	h.res.Flood, err = f.Run(ctx)
	return err
}

// sleepUntil waits for t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	select {
	case <-time.After(time.Until(t)):
		return true
	case <-ctx.Done():
		return false
	}
}

func (h *hostileRun) profileFile() string { return filepath.Join(h.dir, "supernode-flood.cpu.pprof") }

// probe runs one `turnload probe`: can a new call allocate during the
// flood? It gives up after limit.
func (h *hostileRun) probe(ctx context.Context, floodStart time.Time, limit time.Duration) ProbeRun {
	p := ProbeRun{At: time.Since(floodStart).Seconds()}
	ctx, cancel := context.WithTimeout(ctx, limit+5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, h.turnload, "probe", "--server", h.srv.Addr, "--user", benchUser,
		"--password", benchPassword, "--realm", benchRealm, "--setup-timeout", limit.String(), "--json").Output()
	var r struct {
		AllocateMS float64 `json:"allocate_ms"`
		RoundMS    float64 `json:"round_trip_ms"`
		Error      string  `json:"error"`
	}
	if jerr := json.Unmarshal(out, &r); jerr != nil && err == nil {
		err = jerr
	}
	switch {
	case r.Error != "":
		p.Error = r.Error
	case err != nil:
		p.Error = err.Error()
	default:
		p.OK, p.AllocateMS, p.RoundMS = true, r.AllocateMS, r.RoundMS
	}
	p.End = time.Since(floodStart).Seconds()
	return p
}

// point reads the server's state now.
func (h *hostileRun) point(ctx context.Context) (Point, error) {
	p := Point{at: time.Now()}
	h.mu.Lock()
	p.Phase = h.phase
	h.mu.Unlock()
	proc, err := readProc(h.srv.PID())
	if err != nil {
		return p, fmt.Errorf("bench: supernode's /proc: %w", err)
	}
	p.RSSBytes, p.CPUSeconds = proc.RSSBytes, proc.CPUSeconds
	if p.metrics, err = scrape(ctx, h.srv.HTTP); err != nil {
		return p, err
	}
	p.Goroutines = p.metrics["go_goroutines"]
	p.HeapInuse = p.metrics["go_memstats_heap_inuse_bytes"]
	st, err := procfs.ReadStat()
	if err != nil {
		return p, err
	}
	p.machine = st.All
	softnet, _ := procfs.ReadSoftnet()
	p.softnet = procfs.SoftnetDropped(softnet)
	return p, nil
}

// sample takes a point every second until ctx ends.
func (h *hostileRun) sample(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, err := h.point(ctx)
		if err != nil {
			continue // a scrape that timed out under the flood is itself a finding: see the gaps
		}
		p.metrics = nil
		h.mu.Lock()
		h.samples = append(h.samples, p)
		h.mu.Unlock()
	}
}

func (h *hostileRun) setPhase(p string) {
	h.mu.Lock()
	h.phase = p
	h.mu.Unlock()
}

func (h *hostileRun) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.mu.Lock()
	h.res.Notes = append(h.res.Notes, msg)
	h.mu.Unlock()
	fmt.Fprintf(h.log, "bench: hostile: note: %s\n", msg)
}

// window2 is what happened between two points.
func window2(a, b Point) *Window {
	w := &Window{Seconds: b.at.Sub(a.at).Seconds(), Machine: cpuShare(a.machine, b.machine)}
	if w.Seconds > 0 {
		w.ServerCores = (b.CPUSeconds - a.CPUSeconds) / w.Seconds
	}
	d := b.metrics.Delta(a.metrics)
	w.Drops = d.Labelled("supernode_packets_dropped_total", "reason")
	w.Requests = map[string]float64{}
	for k, v := range d {
		if n, ls := splitSeries(k); n == "supernode_requests_total" && v != 0 {
			w.Requests[ls["method"]+"/"+ls["result"]] += v
		}
	}
	w.Received = d.Labelled("supernode_client_messages_received_total", "transport")["udp"]
	if b.softnet >= a.softnet {
		w.Softnet = b.softnet - a.softnet
	}
	return w
}

// saveJSON writes v as indented JSON.
func saveJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// mib formats bytes as MiB.
func mib(b float64) string { return strconv.FormatFloat(b/(1<<20), 'f', 1, 64) }
