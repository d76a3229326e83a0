package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// Result is the part of turnload's --json report the harness reads. Fields
// turnload does not print stay zero; the raw JSON is saved next to it.
type Result struct {
	Calls struct {
		Requested   int `json:"requested"`
		Established int `json:"established"`
		Failed      int `json:"failed"`
	} `json:"calls"`
	Setup struct {
		Allocations          int       `json:"allocations"`
		AllocateMS           Quantiles `json:"allocate_ms"`
		CallReadyMS          Quantiles `json:"call_ready_ms"`
		AllocationsPerSecond float64   `json:"allocations_per_second"`
	} `json:"setup"`
	Packets struct {
		Sent        int64   `json:"sent"`
		Received    int64   `json:"received"`
		Lost        int64   `json:"lost"`
		LossPercent float64 `json:"loss_percent"`
		Duplicates  int64   `json:"duplicates"`
	} `json:"packets"`
	LatencyMS Quantiles `json:"latency_ms"`
	Rate      struct {
		WindowSeconds float64 `json:"window_seconds"`
		SentPPS       float64 `json:"sent_pps"`
		ReceivedPPS   float64 `json:"received_pps"`
		ReceivedBPS   float64 `json:"received_bps"`
	} `json:"rate"`
	Errors map[string]int64 `json:"errors"`
	Loader struct {
		CPUSeconds   float64 `json:"cpu_seconds"`
		CPUCores     float64 `json:"cpu_cores"`
		Saturated    bool    `json:"saturated"`
		SendLagP99MS float64 `json:"send_lag_p99_ms"`
		Unsent       int64   `json:"unsent"`  // packets the schedule wanted but the loader never sent
		Dropped      int64   `json:"dropped"` // packets the loader dropped itself
	} `json:"loader"`
	Server struct {
		PID                   int     `json:"pid"`
		CPUSeconds            float64 `json:"cpu_seconds"`
		CPUMicrosPerPacket    float64 `json:"cpu_us_per_packet"`
		RSSBeforeBytes        int64   `json:"rss_before_bytes"`
		RSSLoadedBytes        int64   `json:"rss_loaded_bytes"`
		RSSPerAllocationBytes float64 `json:"rss_per_allocation_bytes"`
	} `json:"server"`
}

// Quantiles is a latency summary in milliseconds.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Load is one turnload invocation: the offered load, nothing about servers.
type Load struct {
	Calls    int           `json:"calls"`       // calls (two allocations each)
	Ramp     int           `json:"ramp"`        // calls started per second; 0 = as fast as setup allows
	PPS      int           `json:"pps"`         // packets per second per leg; 0 = idle calls
	Size     int           `json:"size"`        // payload bytes per packet
	Duration time.Duration `json:"duration_ns"` // steady window after the last call is set up
	MaxLoss  float64       `json:"max_loss"`    // percent; above it turnload exits 1 (the JSON is still read)
}

// args is the turnload command line for this load against server addr, pid.
func (l Load) args(user, password, realm, addr string, pid int) []string {
	return []string{
		"--server", addr, "--user", user, "--password", password, "--realm", realm,
		"--transport", "udp",
		"--calls", strconv.Itoa(l.Calls), "--ramp", strconv.Itoa(l.Ramp),
		"--pps", strconv.Itoa(l.PPS), "--size", strconv.Itoa(l.Size),
		"--duration", l.Duration.String(), "--max-loss", strconv.FormatFloat(l.MaxLoss, 'g', -1, 64),
		"--json", "--server-pid", strconv.Itoa(pid),
	}
}

// errUsage reports turnload's exit status 2: the harness built a command line
// turnload does not accept, so every later run would fail the same way.
var errUsage = errors.New("bench: turnload rejected its command line (exit status 2)")

// runLoad runs turnload and decodes its JSON. The JSON is read whatever the
// exit status (1 means loss above --max-loss or a call that failed to set up,
// which is a measurement, not an error). stdout is saved to jsonPath and
// stderr to logPath.
func runLoad(ctx context.Context, bin string, args []string, timeout time.Duration, jsonPath, logPath string) (*Result, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, -1, fmt.Errorf("bench: turnload log: %w", err)
	}
	defer logf.Close()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout = &out
	cmd.Stderr = logf
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	if werr := os.WriteFile(jsonPath, out.Bytes(), 0o644); werr != nil {
		return nil, -1, fmt.Errorf("bench: save turnload output: %w", werr)
	}
	code := 0
	if runErr != nil {
		var exit *exec.ExitError
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return nil, -1, fmt.Errorf("bench: turnload did not finish within %s (log %s): %w", timeout, logPath, ctx.Err())
		case ctx.Err() != nil:
			return nil, -1, fmt.Errorf("bench: turnload interrupted: %w", ctx.Err())
		case errors.As(runErr, &exit):
			code = exit.ExitCode()
		default:
			return nil, -1, fmt.Errorf("bench: run turnload: %w", runErr)
		}
	}
	if code == 2 {
		return nil, code, fmt.Errorf("%w; see %s", errUsage, logPath)
	}
	res, err := decodeResult(out.Bytes())
	if err != nil {
		return nil, code, fmt.Errorf("bench: turnload exited %d: %w (log %s)", code, err, logPath)
	}
	return res, code, nil
}

// decodeResult reads turnload's one JSON object. Anything before the object
// (there should be nothing) is skipped; unknown fields are ignored.
func decodeResult(b []byte) (*Result, error) {
	i := bytes.IndexByte(b, '{')
	if i < 0 {
		return nil, errors.New("no JSON object on stdout")
	}
	var r Result
	if err := json.Unmarshal(b[i:], &r); err != nil {
		return nil, fmt.Errorf("decode turnload JSON: %w", err)
	}
	return &r, nil
}
