package load

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/procfs"
)

// runner is one Run's shared state.
type runner struct {
	cfg   Config
	base  time.Time
	runID string
	hc    *http.Client

	sent, received, dups atomic.Uint64
	// unsent counts packets the schedule wanted that the loader never got
	// to send; loaderDrops those it dropped itself (stream queue full,
	// failed writes). Neither is counted as sent.
	unsent, loaderDrops atomic.Uint64
	allocLat, readyLat  Histogram
	latency, lag        Histogram

	started, established, failed atomic.Int64
	allocOK, redirects           atomic.Int64
	firstAlloc, lastAlloc        atomic.Int64 // ns since base; -1 until set
	stopAt                       atomic.Int64 // ns since base

	errMu      sync.Mutex
	errs       map[string]uint64
	errSamples map[string]string // the first message of each kind

	workers []*worker
	// probeEcho, set by Probe before any leg exists, sees every payload
	// instead of the media counters.
	probeEcho func([]byte)
	callsMu   sync.Mutex
	calls     []*call
}

type call struct {
	id   uint32
	legs [2]*leg
}

// worker sends media for a share of the legs on a 1 ms schedule.
type worker struct {
	mu      sync.Mutex
	pending []*leg
	legs    []*leg
}

const tick = time.Millisecond

func (r *runner) now() time.Duration { return time.Since(r.base) }

func (r *runner) countErr(kind string) { r.countErrMsg(kind, nil) }

// countErrMsg counts an error of kind and keeps the first message of each kind.
func (r *runner) countErrMsg(kind string, err error) {
	r.errMu.Lock()
	r.errs[kind]++
	if err != nil && r.errSamples[kind] == "" {
		if r.errSamples == nil {
			r.errSamples = map[string]string{}
		}
		r.errSamples[kind] = err.Error()
	}
	r.errMu.Unlock()
}

// errKind names a failure for the errors table: the stage and, for a TURN
// error response, its code (allocate_401, permission_403), else timeout or error.
func errKind(stage string, err error) string {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return stage + "_" + strconv.Itoa(int(te.ErrorCodeAttr.Code))
	}
	var ne net.Error
	// pion reports a transaction that was never answered as "all
	// retransmissions failed" (an unexported error).
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) ||
		strings.Contains(err.Error(), "retransmissions failed") {
		return stage + "_timeout"
	}
	return stage + "_error"
}

// Run drives one load run and reports what it measured. It returns an error
// only for a config it cannot run; failures of the server are in the Report.
// Cancelling ctx ends the steady window early (Report.Interrupted).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, errs: map[string]uint64{}, hc: &http.Client{Timeout: cfg.SetupTimeout}}
	r.firstAlloc.Store(-1)
	r.lastAlloc.Store(-1)
	r.stopAt.Store(math.MaxInt64)
	var srvBefore procSample
	if cfg.ServerPID != 0 {
		s, err := readProc(cfg.ServerPID)
		if err != nil {
			return nil, fmt.Errorf("%w: --server-pid: %w", ErrConfig, err)
		}
		srvBefore = s
	}
	r.base = time.Now()
	r.runID = strconv.FormatInt(r.base.UnixNano()%1e9, 36)
	cpuStart := procfs.SelfCPU()

	stopProgress := r.startProgress()
	defer stopProgress()

	var sendWG sync.WaitGroup
	if cfg.PPS > 0 {
		n := runtime.GOMAXPROCS(0)
		for range n {
			w := &worker{}
			r.workers = append(r.workers, w)
			sendWG.Go(func() { r.sendLoop(w) })
		}
	}

	// Start the calls, cfg.Ramp per second, at most SetupConcurrency at once.
	sem := make(chan struct{}, cfg.SetupConcurrency)
	var setupWG sync.WaitGroup
	interrupted := false
launch:
	for i := range cfg.Calls {
		if cfg.Ramp > 0 {
			due := time.Duration(float64(i) / cfg.Ramp * float64(time.Second))
			if d := due - r.now(); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					interrupted = true
					break launch
				}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			interrupted = true
			break launch
		}
		setupWG.Go(func() {
			defer func() { <-sem }()
			r.setupCall(ctx, uint32(i))
		})
	}
	setupWG.Wait()

	// The steady window.
	winStart := r.now()
	recv0 := r.received.Load()
	sent0 := r.sent.Load()
	cpu0 := procfs.SelfCPU()
	var srv0, srv1 procSample
	var srvErr error
	if cfg.ServerPID != 0 {
		srv0, srvErr = readProc(cfg.ServerPID)
	}
	r.stopAt.Store(int64(winStart + cfg.Duration))
	if !interrupted {
		select {
		case <-time.After(cfg.Duration):
		case <-ctx.Done():
			interrupted = true
		}
	}
	winEnd := r.now()
	r.stopAt.Store(int64(winEnd))
	recv1 := r.received.Load()
	sent1 := r.sent.Load()
	cpu1 := procfs.SelfCPU()
	if cfg.ServerPID != 0 && srvErr == nil {
		srv1, srvErr = readProc(cfg.ServerPID)
	}
	sendWG.Wait()
	if cfg.PPS > 0 && !interrupted && cfg.Drain > 0 {
		time.Sleep(cfg.Drain)
	}
	r.closeAll()
	r.hc.CloseIdleConnections()
	cpuEnd := procfs.SelfCPU()

	rep := r.report(cpuEnd-cpuStart, r.now(), winEnd-winStart, recv1-recv0, sent1-sent0, cpu1-cpu0)
	rep.Interrupted = interrupted
	if cfg.ServerPID != 0 {
		if srvErr != nil {
			r.countErr("server_pid")
			rep.Errors = r.errorsCopy()
		} else {
			// Allocations of calls that failed are gone again: count the held ones.
			rep.Server = serverReport(cfg.ServerPID, srvBefore, srv0, srv1, winEnd-winStart, recv1-recv0, 2*rep.Calls.Established)
		}
	}
	return rep, nil
}

// setupCall allocates both legs of one call, connects them to each other
// and hands them to the senders.
func (r *runner) setupCall(parent context.Context, id uint32) {
	r.started.Add(1)
	t0 := r.now()
	ctx, cancel := context.WithTimeout(parent, r.cfg.SetupTimeout)
	defer cancel()
	c := &call{id: id}
	fail := func(kind string, err error) {
		r.failed.Add(1)
		r.countErrMsg(kind, err)
		r.cfg.Logger.Debug("call setup failed", "call", id, "kind", kind, "err", err)
		for _, l := range c.legs {
			if l != nil {
				l.close()
			}
		}
	}
	creds, err := r.credentials(ctx, id)
	if err != nil {
		fail("credentials", err)
		return
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() { c.legs[i], errs[i] = r.openLeg(ctx, creds.server, id, uint8(i), creds) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			kind := errKind("allocate", err)
			if c.legs[i] == nil {
				kind = "dial_error"
			}
			fail(kind, err)
			return
		}
	}
	stages := make([]string, 2)
	for i := range 2 {
		wg.Go(func() { stages[i], errs[i] = c.legs[i].connect(ctx, c.legs[1-i].relayAP) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			fail(errKind(stages[i], err), err)
			return
		}
	}
	r.readyLat.Record(r.now() - t0)
	r.established.Add(1)
	r.callsMu.Lock()
	r.calls = append(r.calls, c)
	r.callsMu.Unlock()
	if r.cfg.PPS == 0 {
		return
	}
	startTick := int64(r.now()/tick) + 1
	for _, l := range c.legs {
		l.prepare(r.cfg.Size)
		l.start = startTick
		l.phase = int64((uint64(id)*2+uint64(l.idx))*617) % 1000
		w := r.workers[(int(id)*2+int(l.idx))%len(r.workers)]
		w.mu.Lock()
		w.pending = append(w.pending, l)
		w.mu.Unlock()
	}
}

// openLeg dials server and allocates, following one 300 Try Alternate to
// the ALTERNATE-SERVER it names. On error the leg is returned when it was
// dialled (for the caller to close), nil when dialling failed.
func (r *runner) openLeg(ctx context.Context, server string, id uint32, idx uint8, creds credentials) (*leg, error) {
	tlsName, _, _ := net.SplitHostPort(server)
	altDomain := false
	for redirected := false; ; redirected = true {
		l, err := r.dial(ctx, server, tlsName, altDomain, id, idx, creds)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", server, err)
		}
		l.server, l.redirected = server, redirected
		start := r.now()
		r.firstAlloc.CompareAndSwap(-1, int64(start))
		err = l.allocate(ctx)
		var te *stun.TurnError
		if alt := l.alternate.Load(); err != nil && alt != nil && !redirected &&
			errors.As(err, &te) && te.ErrorCodeAttr.Code == stun.CodeTryAlternate {
			// RFC 8489 section 10: try the alternate, once, checking its
			// certificate against ALTERNATE-DOMAIN if given, else against
			// the name used for the first server (section 14.16).
			r.redirects.Add(1)
			l.close()
			server = alt.server.String()
			if alt.domain != "" {
				tlsName, altDomain = alt.domain, true
			}
			continue
		}
		if err != nil {
			// The server is named: after a redirect, or with credentials
			// from an ICE endpoint, it is not the one on the command line.
			return l, fmt.Errorf("allocate on %s: %w", server, err)
		}
		done := r.now()
		l.allocTime = done - start
		r.allocLat.Record(done - start)
		r.allocOK.Add(1)
		for {
			last := r.lastAlloc.Load()
			if int64(done) <= last || r.lastAlloc.CompareAndSwap(last, int64(done)) {
				break
			}
		}
		return l, nil
	}
}

// credentials returns what call id presents: the static user, a REST
// credential minted from the secret, or an answer from the ICE endpoint.
func (r *runner) credentials(ctx context.Context, id uint32) (credentials, error) {
	user := "turnload-" + r.runID + "-" + strconv.FormatUint(uint64(id), 10)
	if r.cfg.ICEServers != "" {
		c, err := fetchICE(ctx, r.hc, r.cfg.ICEServers, r.cfg.APIToken, user, user, r.cfg.Transport)
		if err != nil {
			return c, err
		}
		if r.cfg.Server != "" {
			c.server = r.cfg.Server
		}
		return c, nil
	}
	if r.cfg.Secret != "" {
		u, p := RESTCredentials(r.cfg.Secret, user, 24*time.Hour, time.Now())
		return credentials{server: r.cfg.Server, username: u, password: p}, nil
	}
	return credentials{server: r.cfg.Server, username: r.cfg.Username, password: r.cfg.Password}, nil
}

// sendLoop runs one worker's schedule: every tick, each leg sends the
// packets its rate says are due by now, each stamped just before it is
// written. The lag between every planned tick and the moment it ran is
// recorded: a loader that cannot keep its schedule is saturated. Packets a
// leg is still owed when sending stops are counted as unsent.
func (r *runner) sendLoop(w *worker) {
	pps := int64(r.cfg.PPS)
	perTick := uint64(pps/1000 + 4) // catch-up allowance per leg and tick
	next := r.now()/tick*tick + tick
	for {
		if d := next - r.now(); d > 0 {
			time.Sleep(d)
		}
		now := r.now()
		stop := r.stopAt.Load()
		w.mu.Lock()
		w.legs = append(w.legs, w.pending...)
		w.pending = w.pending[:0]
		w.mu.Unlock()
		if int64(now) >= stop {
			// Judge the schedule two ticks before the stop, so that a
			// packet due in the very last tick is not counted against it.
			t := (stop - int64(2*tick)) / int64(tick)
			for _, l := range w.legs {
				if due := uint64(((t-l.start)*pps+l.phase)/1000) + 1; t >= l.start && due > l.nsent {
					r.unsent.Add(due - l.nsent)
				}
			}
			return
		}
		// Every tick that was due by now counts, so a long stall weighs
		// as much as the ticks it swallowed.
		for missed := next; missed <= now; missed += tick {
			r.lag.Record(now - missed)
		}
		t := int64(now / tick)
		for _, l := range w.legs {
			due := ((t-l.start)*pps + l.phase) / 1000
			if due < 0 {
				continue
			}
			for k := uint64(0); uint64(due) >= l.nsent && k < perTick; k++ {
				l.send(r.now())
			}
		}
		next = now/tick*tick + tick
	}
}

// closeAll deallocates every established call, a bounded number at once.
func (r *runner) closeAll() {
	r.callsMu.Lock()
	calls := r.calls
	r.callsMu.Unlock()
	// UDP legs send their deallocating Refresh first and keep their sockets
	// open until the server answers it (pion retransmits a Refresh the
	// server did not get: a burst of thousands overflows its socket
	// buffer), or deallocGrace passes; otherwise the allocations would stay
	// on the server until they expire.
	var wait []*leg
	for i, c := range calls {
		for _, l := range c.legs {
			if l.deallocate() {
				wait = append(wait, l)
			}
		}
		if i%32 == 31 {
			time.Sleep(time.Millisecond) // spread the burst a little
		}
	}
	grace := time.NewTimer(deallocGrace)
	defer grace.Stop()
answered:
	for _, l := range wait {
		select {
		case <-l.deallocated:
		case <-grace.C:
			break answered
		}
	}
	// Few at a time: closing a stream leg writes to its connection.
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, c := range calls {
		for _, l := range c.legs {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				l.close()
			})
		}
	}
	wg.Wait()
}

// deallocGrace bounds the wait for the server to answer the deallocating
// Refreshes at the end of a run: pion retransmits after 0.2, 0.6 and 1.4 s.
const deallocGrace = 3 * time.Second

func (r *runner) errorsCopy() map[string]uint64 {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	m := make(map[string]uint64, len(r.errs))
	for k, v := range r.errs {
		m[k] = v
	}
	return m
}

// report assembles the Report once every leg is closed.
func (r *runner) report(cpuTotal, wall, window time.Duration, recvWin, sentWin uint64, cpuWin time.Duration) *Report {
	rep := &Report{}
	rep.Calls.Requested = r.cfg.Calls
	rep.Calls.Established = int(r.established.Load())
	rep.Calls.Failed = int(r.failed.Load())
	rep.Setup.Allocations = int(r.allocOK.Load())
	rep.Setup.Redirects = int(r.redirects.Load())
	rep.Setup.AllocateMS = quantiles(&r.allocLat, false)
	rep.Setup.CallReadyMS = quantiles(&r.readyLat, false)
	if first, last := r.firstAlloc.Load(), r.lastAlloc.Load(); first >= 0 && last > first {
		rep.Setup.AllocationsPerSecond = float64(rep.Setup.Allocations) / time.Duration(last-first).Seconds()
	}
	sent, recv := r.sent.Load(), r.received.Load()
	rep.Packets.Sent, rep.Packets.Received, rep.Packets.Duplicates = sent, recv, r.dups.Load()
	if sent > recv {
		rep.Packets.Lost = sent - recv
	}
	if sent > 0 {
		rep.Packets.LossPercent = 100 * float64(rep.Packets.Lost) / float64(sent)
	}
	rep.LatencyMS = quantiles(&r.latency, true)
	var sum, maxJ time.Duration
	var n int
	for _, c := range r.calls {
		for _, l := range c.legs {
			if !l.jitter.started {
				continue
			}
			j := l.jitter.Value()
			sum += j
			maxJ = max(maxJ, j)
			n++
		}
	}
	if n > 0 {
		rep.JitterMS.Mean = ms(sum / time.Duration(n))
		rep.JitterMS.Max = ms(maxJ)
	}
	if secs := window.Seconds(); secs > 0 {
		rep.Rate.WindowSeconds = secs
		rep.Rate.SentPPS = float64(sentWin) / secs
		rep.Rate.ReceivedPPS = float64(recvWin) / secs
		rep.Rate.ReceivedBPS = rep.Rate.ReceivedPPS * float64(r.cfg.Size) * 8
	}
	rep.Errors = r.errorsCopy()
	r.errMu.Lock()
	rep.ErrorSamples = r.errSamples
	r.errMu.Unlock()
	cpus := runtime.GOMAXPROCS(0)
	rep.Loader.CPUSeconds = cpuTotal.Seconds()
	rep.Loader.AvailableCPUs = cpus
	if window > 0 {
		rep.Loader.CPUCores = cpuWin.Seconds() / window.Seconds()
	}
	rep.Loader.SendLagP99MS = ms(r.lag.Quantile(0.99))
	rep.Loader.Unsent = r.unsent.Load()
	rep.Loader.Dropped = r.loaderDrops.Load()
	// Saturated: busy cores in the window or over the whole run (a setup-
	// only run does all its work before the window), a schedule running
	// late, or packets the schedule wanted that never left.
	runCores := 0.0
	if wall > 0 {
		runCores = cpuTotal.Seconds() / wall.Seconds()
	}
	rep.Loader.Saturated = rep.Loader.CPUCores > 0.9*float64(cpus) || runCores > 0.9*float64(cpus) ||
		(r.cfg.PPS > 0 && r.lag.Quantile(0.99) > 5*time.Millisecond) ||
		rep.Loader.Unsent+rep.Loader.Dropped > sent/1000
	return rep
}

func serverReport(pid int, before, w0, w1 procSample, window time.Duration, recvWin uint64, allocations int) *ServerReport {
	s := &ServerReport{PID: pid, RSSBeforeBytes: before.rss, RSSLoadedBytes: w1.rss}
	cpu := w1.cpu - w0.cpu
	s.CPUSeconds = cpu.Seconds()
	if window > 0 {
		s.CPUCores = cpu.Seconds() / window.Seconds()
	}
	if recvWin > 0 {
		s.CPUMicrosPerPacket = float64(cpu.Microseconds()) / float64(2*recvWin)
	}
	if allocations > 0 {
		s.RSSPerAllocationBytes = float64(w1.rss-before.rss) / float64(allocations)
	}
	return s
}

// startProgress calls cfg.Progress every interval until the returned func is called.
func (r *runner) startProgress() (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(r.cfg.ProgressInterval)
		defer t.Stop()
		lastCPU, lastAt := procfs.SelfCPU(), r.now()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			cpu, at := procfs.SelfCPU(), r.now()
			s := Snapshot{
				Elapsed:     at,
				Started:     int(r.started.Load()),
				Established: int(r.established.Load()),
				Failed:      int(r.failed.Load()),
				Sent:        r.sent.Load(),
				Received:    r.received.Load(),
				LatencyP50:  r.latency.Quantile(0.5),
				CPUCores:    (cpu - lastCPU).Seconds() / (at - lastAt).Seconds(),
			}
			if stop := r.stopAt.Load(); stop != math.MaxInt64 {
				s.InWindow = true
				s.WindowLeft = max(0, time.Duration(stop)-at)
			}
			lastCPU, lastAt = cpu, at
			r.cfg.Progress(s)
		}
	}()
	return func() { close(quit); <-done }
}
