package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/supernode/supernode/procfs"
)

// CPUSample is one reading of the machine's CPU accounting and of the
// loader-side veth's packet counters.
type CPUSample struct {
	At     time.Time
	CPUs   []procfs.CPUTimes // /proc/stat per CPU
	NetRX  []uint64          // /proc/softirqs NET_RX per CPU
	NetTX  []uint64          // /proc/softirqs NET_TX per CPU
	Net    []procfs.Softnet  // /proc/net/softnet_stat per CPU
	RxPkts uint64            // packets the loader's veth received (server to loader)
	TxPkts uint64            // packets the loader's veth sent (loader to server)
}

// readCPUSample reads /proc/stat, /proc/softirqs and dev's statistics (in
// this process's network namespace; "" reads no device).
func readCPUSample(dev string) (CPUSample, error) {
	s := CPUSample{At: time.Now()}
	st, err := procfs.ReadStat()
	if err != nil {
		return s, err
	}
	s.CPUs = st.CPUs
	rows, err := procfs.ReadSoftirqs("NET_RX", "NET_TX")
	if err != nil {
		return s, err
	}
	s.NetRX, s.NetTX = rows["NET_RX"], rows["NET_TX"]
	if s.Net, err = procfs.ReadSoftnet(); err != nil {
		return s, err
	}
	if dev != "" {
		if s.RxPkts, err = readCounter(dev, "rx_packets"); err != nil {
			return s, err
		}
		if s.TxPkts, err = readCounter(dev, "tx_packets"); err != nil {
			return s, err
		}
	}
	return s, nil
}

// readCounter reads /sys/class/net/dev/statistics/name.
func readCounter(dev, name string) (uint64, error) {
	b, err := os.ReadFile("/sys/class/net/" + dev + "/statistics/" + name)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// sampleEvery is how often the sampler reads /proc/stat during a run: fine
// enough to place turnload's steady window to a tenth of a second, cheap
// enough (three small reads) not to matter on the loader's core.
const sampleEvery = 100 * time.Millisecond

// sampler reads CPUSamples every sampleEvery until stopped.
type sampler struct {
	mu      sync.Mutex
	samples []CPUSample
	err     error
	stop    context.CancelFunc
	done    chan struct{}
}

// startSampler starts sampling dev's counters and the CPUs; the samples are
// bounded by the run's timeout (at 10/s, an hour is 36,000 samples).
func startSampler(ctx context.Context, dev string) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			x, err := readCPUSample(dev)
			s.mu.Lock()
			if err != nil && s.err == nil {
				s.err = err
			}
			if err == nil {
				s.samples = append(s.samples, x)
			}
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling (after one last sample) and returns the samples.
func (s *sampler) Stop() ([]CPUSample, error) {
	s.stop()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples, s.err
}

// steadyMargin is cut from each end of turnload's steady window, as located
// from the samples, so no sample from the setup or the wind-down counts.
const steadyMargin = 250 * time.Millisecond

// steadySpan finds the samples i < j that bracket turnload's steady window.
// turnload stops sending the moment its window ends, so the window's end is
// the last sample interval in which the loader still sent at least half its
// peak rate; its start is window before that. Both ends are pulled in by
// steadyMargin. ok is false when the samples do not show a window of at
// least half the expected length.
func steadySpan(s []CPUSample, window time.Duration) (i, j int, ok bool) {
	if len(s) < 3 || window <= 0 {
		return 0, 0, false
	}
	rate := func(k int) float64 { // loader send rate in interval (k-1, k]
		dt := s[k].At.Sub(s[k-1].At).Seconds()
		if dt <= 0 || s[k].TxPkts < s[k-1].TxPkts {
			return 0
		}
		return float64(s[k].TxPkts-s[k-1].TxPkts) / dt
	}
	peak := 0.0
	for k := 1; k < len(s); k++ {
		peak = max(peak, rate(k))
	}
	if peak <= 0 {
		return 0, 0, false
	}
	last := -1
	for k := 1; k < len(s); k++ {
		if rate(k) >= peak/2 {
			last = k
		}
	}
	end := s[last].At
	from, to := end.Add(-window+steadyMargin), end.Add(-steadyMargin)
	i, j = -1, -1
	for k := range s {
		if i < 0 && !s[k].At.Before(from) {
			i = k
		}
		if !s[k].At.After(to) {
			j = k
		}
	}
	if i < 0 || j <= i || s[j].At.Sub(s[i].At) < window/2 {
		return 0, 0, false
	}
	return i, j, true
}

// CoreCost is what one core did over the steady window of a run, with the
// packets the server relayed in that time.
type CoreCost struct {
	CPU          int              `json:"cpu"`             // the server's core
	Seconds      float64          `json:"seconds"`         // span measured (inside turnload's window)
	BusySeconds  float64          `json:"busy_seconds"`    // the span less CPU's idle, iowait and steal time
	Busy         float64          `json:"busy"`            // BusySeconds / Seconds
	Ticked       float64          `json:"busy_ticked"`     // fraction of the span that ticks charged to user+nice+system+irq+softirq (at most Busy)
	SoftIRQ      float64          `json:"softirq"`         // fraction of CPU's ticks in softirq
	System       float64          `json:"system"`          // fraction in system (kernel on behalf of a process)
	User         float64          `json:"user"`            // fraction in user and nice
	Delivered    uint64           `json:"delivered"`       // packets the loader's veth received in the span
	Sent         uint64           `json:"sent"`            // packets the loader's veth sent in the span
	Relayed      float64          `json:"relayed"`         // relay hops: 2 x delivered
	MicrosPerPkt float64          `json:"us_per_packet"`   // BusySeconds / Relayed, µs; 0 without packets
	OtherBusy    []float64        `json:"busy_per_cpu"`    // busy fraction of every CPU, the server's included
	NetRX        []uint64         `json:"net_rx_per_cpu"`  // NET_RX softirqs per CPU in the span
	NetTX        []uint64         `json:"net_tx_per_cpu"`  // NET_TX softirqs per CPU in the span
	Softnet      []procfs.Softnet `json:"softnet_per_cpu"` // backlog processing per CPU in the span
	Samples      int              `json:"samples"`         // samples inside the span
	BusyBefore   float64          `json:"busy_before_run"` // the server's core busy fraction just before turnload started (the server idle): noise from elsewhere; 0 if unread
}

// busySeconds is how long a CPU worked between two readings taken seconds
// apart: the time it was not idle (nor waiting for I/O, nor stolen by the
// hypervisor). It is not the sum of the busy fields: with tick-based
// accounting (CONFIG_TICK_CPU_ACCOUNTING, no IRQ_TIME_ACCOUNTING) and a
// tickless idle CPU, work done between two ticks that wakes the CPU from
// idle and lets it sleep again — a kernel data path's softirq on a mostly
// idle core — is charged to no field at all, while idle time is measured
// exactly when the CPU leaves it. Measured here: a kernel-path run at
// 20,000 pps left 10% of the core's wall time in no field.
func busySeconds(a, b procfs.CPUTimes, seconds float64) float64 {
	notBusy := float64((b.Idle+b.IOWait+b.Steal)-(a.Idle+a.IOWait+a.Steal)) / procfs.UserHZ
	return min(max(seconds-notBusy, 0), seconds)
}

// coreCost computes CoreCost for cpu between samples a and b. Every packet
// the loader received crossed the server twice (sender's allocation to the
// other relayed address, then that allocation to the receiver).
func coreCost(a, b CPUSample, cpu int) (CoreCost, error) {
	c := CoreCost{CPU: cpu, Seconds: b.At.Sub(a.At).Seconds()}
	if cpu < 0 || cpu >= len(a.CPUs) || cpu >= len(b.CPUs) {
		return c, fmt.Errorf("bench: no CPU %d in /proc/stat", cpu)
	}
	if c.Seconds <= 0 {
		return c, errors.New("bench: samples out of order")
	}
	frac := func(x, y, total uint64) float64 {
		if total == 0 || y < x {
			return 0
		}
		return float64(y-x) / float64(total)
	}
	ta, tb := a.CPUs[cpu], b.CPUs[cpu]
	if tb.Total() < ta.Total() || tb.Busy() < ta.Busy() {
		return c, errors.New("bench: /proc/stat went backwards")
	}
	total := tb.Total() - ta.Total()
	c.BusySeconds = busySeconds(ta, tb, c.Seconds)
	c.Busy = c.BusySeconds / c.Seconds
	c.Ticked = float64(tb.Busy()-ta.Busy()) / procfs.UserHZ / c.Seconds
	c.SoftIRQ = frac(ta.SoftIRQ, tb.SoftIRQ, total)
	c.System = frac(ta.System, tb.System, total)
	c.User = frac(ta.User+ta.Nice, tb.User+tb.Nice, total)
	for k := 0; k < len(a.CPUs) && k < len(b.CPUs); k++ {
		c.OtherBusy = append(c.OtherBusy, busySeconds(a.CPUs[k], b.CPUs[k], c.Seconds)/c.Seconds)
	}
	for k := 0; k < len(a.NetRX) && k < len(b.NetRX); k++ {
		c.NetRX = append(c.NetRX, b.NetRX[k]-a.NetRX[k])
	}
	for k := 0; k < len(a.NetTX) && k < len(b.NetTX); k++ {
		c.NetTX = append(c.NetTX, b.NetTX[k]-a.NetTX[k])
	}
	for k := 0; k < len(a.Net) && k < len(b.Net); k++ {
		c.Softnet = append(c.Softnet, procfs.Softnet{
			Processed:   b.Net[k].Processed - a.Net[k].Processed,
			Dropped:     b.Net[k].Dropped - a.Net[k].Dropped,
			ReceivedRPS: b.Net[k].ReceivedRPS - a.Net[k].ReceivedRPS,
		})
	}
	if b.RxPkts >= a.RxPkts {
		c.Delivered = b.RxPkts - a.RxPkts
	}
	if b.TxPkts >= a.TxPkts {
		c.Sent = b.TxPkts - a.TxPkts
	}
	c.Relayed = 2 * float64(c.Delivered)
	if c.Relayed > 0 {
		c.MicrosPerPkt = c.BusySeconds * 1e6 / c.Relayed
	}
	return c, nil
}

// steadyCost is coreCost over the steady window found in samples, with the
// core's busy fraction over the samples taken before loadStart (the server
// up and idle, turnload not started) as a reading of background noise.
func steadyCost(samples []CPUSample, window time.Duration, cpu int, loadStart time.Time) (CoreCost, error) {
	i, j, ok := steadySpan(samples, window)
	if !ok {
		return CoreCost{CPU: cpu}, fmt.Errorf("bench: could not place turnload's %s steady window in %d CPU samples", window, len(samples))
	}
	c, err := coreCost(samples[i], samples[j], cpu)
	c.Samples = j - i + 1
	if k := lastBefore(samples, loadStart); k > 0 {
		if b, berr := coreCost(samples[0], samples[k], cpu); berr == nil {
			c.BusyBefore = b.Busy
		}
	}
	return c, err
}

// lastBefore is the index of the last sample taken before t, -1 if none.
func lastBefore(s []CPUSample, t time.Time) int {
	k := -1
	for i := range s {
		if s[i].At.Before(t) {
			k = i
		}
	}
	return k
}
