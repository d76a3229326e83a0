package load

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Quantiles are latency figures in milliseconds.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90,omitempty"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func quantiles(h *Histogram, withP90 bool) Quantiles {
	q := Quantiles{P50: ms(h.Quantile(0.50)), P99: ms(h.Quantile(0.99)), Max: ms(h.Max())}
	if withP90 {
		q.P90 = ms(h.Quantile(0.90))
	}
	return q
}

// Report is the outcome of a run; its JSON form is turnload --json.
type Report struct {
	Calls struct {
		Requested   int `json:"requested"`
		Established int `json:"established"`
		Failed      int `json:"failed"`
	} `json:"calls"`
	Setup struct {
		Allocations int       `json:"allocations"`
		AllocateMS  Quantiles `json:"allocate_ms"`
		CallReadyMS Quantiles `json:"call_ready_ms"`
		// Redirects counts 300 Try Alternate answers followed to the
		// ALTERNATE-SERVER.
		Redirects int `json:"redirects"`
		// AllocationsPerSecond is successful allocations divided by the time
		// from the first Allocate sent to the last one answered.
		AllocationsPerSecond float64 `json:"allocations_per_second"`
	} `json:"setup"`
	Packets struct {
		Sent        uint64  `json:"sent"`
		Received    uint64  `json:"received"`
		Lost        uint64  `json:"lost"`
		LossPercent float64 `json:"loss_percent"`
		Duplicates  uint64  `json:"duplicates"`
	} `json:"packets"`
	LatencyMS Quantiles `json:"latency_ms"`
	JitterMS  struct {
		Mean float64 `json:"mean"`
		Max  float64 `json:"max"`
	} `json:"jitter_ms"`
	Rate struct {
		WindowSeconds float64 `json:"window_seconds"`
		SentPPS       float64 `json:"sent_pps"`
		ReceivedPPS   float64 `json:"received_pps"`
		ReceivedBPS   float64 `json:"received_bps"`
	} `json:"rate"`
	Errors map[string]uint64 `json:"errors"`
	// ErrorSamples holds the first error message of each kind.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	Loader       struct {
		CPUSeconds    float64 `json:"cpu_seconds"`
		CPUCores      float64 `json:"cpu_cores"`
		Saturated     bool    `json:"saturated"`
		SendLagP99MS  float64 `json:"send_lag_p99_ms"`
		AvailableCPUs int     `json:"available_cpus"`
		// Unsent is packets the send schedule wanted that the loader never
		// sent (it fell behind); Dropped is packets it dropped itself (a full
		// stream queue, a failed write). Neither is in Packets.Sent.
		Unsent  uint64 `json:"unsent"`
		Dropped uint64 `json:"dropped"`
	} `json:"loader"`
	Server *ServerReport `json:"server,omitempty"`
	// Interrupted is set when the run was cut short (Ctrl-C).
	Interrupted bool `json:"interrupted,omitempty"`
}

// ServerReport is what /proc said about the server process (Config.ServerPID).
type ServerReport struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUMicrosPerPacket is server CPU in the steady window divided by the
	// packets it relayed in it. Both legs of a call are on this server, so
	// every media packet delivered was relayed twice, as the server counts
	// it: client to peer (the sender's allocation to the other relayed
	// address), then peer to client (that allocation to the receiver).
	CPUMicrosPerPacket    float64 `json:"cpu_us_per_packet"`
	CPUCores              float64 `json:"cpu_cores"`
	RSSBeforeBytes        int64   `json:"rss_before_bytes"`
	RSSLoadedBytes        int64   `json:"rss_loaded_bytes"`
	RSSPerAllocationBytes float64 `json:"rss_per_allocation_bytes"`
}

// Snapshot is live progress.
type Snapshot struct {
	Elapsed                      time.Duration
	Started, Established, Failed int
	Sent, Received               uint64
	LatencyP50                   time.Duration
	CPUCores                     float64 // loader CPU since the last snapshot
	InWindow                     bool    // every call is set up; the steady window is running
	WindowLeft                   time.Duration
}

// String is the one-line progress form.
func (s Snapshot) String() string {
	loss := 0.0
	if s.Sent > 0 && s.Received <= s.Sent {
		loss = 100 * float64(s.Sent-s.Received) / float64(s.Sent)
	}
	phase := "setup"
	if s.InWindow {
		phase = fmt.Sprintf("steady, %s left", s.WindowLeft.Round(time.Second))
	}
	return fmt.Sprintf("%6.1fs %s: calls %d/%d up (%d failed), sent %d recv %d (%.2f%% in flight or lost), p50 %.2fms, loader cpu %.2f cores",
		s.Elapsed.Seconds(), phase, s.Established, s.Started, s.Failed, s.Sent, s.Received, loss, ms(s.LatencyP50), s.CPUCores)
}

// WriteTable writes the human-readable summary.
func (r *Report) WriteTable(w io.Writer) {
	var b strings.Builder
	row := func(k, format string, a ...any) { fmt.Fprintf(&b, "  %-22s "+format+"\n", append([]any{k}, a...)...) }
	q := func(x Quantiles) string {
		s := fmt.Sprintf("p50 %.3f  ", x.P50)
		if x.P90 != 0 {
			s += fmt.Sprintf("p90 %.3f  ", x.P90)
		}
		return s + fmt.Sprintf("p99 %.3f  max %.3f ms", x.P99, x.Max)
	}
	b.WriteString("turnload summary\n")
	row("calls", "%d requested, %d established, %d failed", r.Calls.Requested, r.Calls.Established, r.Calls.Failed)
	row("allocations", "%d  (%.0f/s), %d redirected", r.Setup.Allocations, r.Setup.AllocationsPerSecond, r.Setup.Redirects)
	row("allocate latency", "%s", q(r.Setup.AllocateMS))
	row("call ready latency", "%s", q(r.Setup.CallReadyMS))
	row("packets", "sent %d  received %d  lost %d (%.3f%%)  duplicates %d",
		r.Packets.Sent, r.Packets.Received, r.Packets.Lost, r.Packets.LossPercent, r.Packets.Duplicates)
	row("one-way latency", "%s", q(r.LatencyMS))
	row("jitter (RFC 3550)", "mean %.3f  max %.3f ms", r.JitterMS.Mean, r.JitterMS.Max)
	row("steady rate", "%.0f pps sent, %.0f pps received, %.2f Mbit/s received over %.1fs",
		r.Rate.SentPPS, r.Rate.ReceivedPPS, r.Rate.ReceivedBPS/1e6, r.Rate.WindowSeconds)
	if len(r.Errors) == 0 {
		row("errors", "none")
	} else {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.Errors[k]))
		}
		row("errors", "%s", strings.Join(parts, ", "))
		for _, k := range slices.Sorted(maps.Keys(r.ErrorSamples)) {
			row("", "first %s: %s", k, r.ErrorSamples[k])
		}
	}
	row("loader", "cpu %.2fs (%.2f of %d cores in the window), send lag p99 %.2f ms, unsent %d, dropped %d",
		r.Loader.CPUSeconds, r.Loader.CPUCores, r.Loader.AvailableCPUs, r.Loader.SendLagP99MS, r.Loader.Unsent, r.Loader.Dropped)
	if s := r.Server; s != nil {
		row("server cpu", "%.2fs in the window (%.2f cores), %.2f µs per relayed packet",
			s.CPUSeconds, s.CPUCores, s.CPUMicrosPerPacket)
		row("server rss", "%.1f MiB before, %.1f MiB loaded, %.0f bytes per allocation",
			float64(s.RSSBeforeBytes)/(1<<20), float64(s.RSSLoadedBytes)/(1<<20), s.RSSPerAllocationBytes)
	}
	if r.Loader.Saturated {
		b.WriteString("WARNING: turnload itself was saturated (CPU or send schedule); the figures above measure the loader, not the server. Use fewer calls per process or more cores.\n")
	}
	if r.Interrupted {
		b.WriteString("(interrupted before the steady window ended)\n")
	}
	_, _ = io.WriteString(w, b.String())
}
