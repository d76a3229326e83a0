package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/supernode/supernode/load"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// Result is turnload's --json report (load.Report defines the JSON).
type Result = load.Report

// Quantiles is a latency summary in milliseconds.
type Quantiles = load.Quantiles

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

// serverOf is the server part of a result, zero when turnload could not
// read the server's /proc (it then leaves "server" out).
func serverOf(r *Result) load.ServerReport {
	if r.Server == nil {
		return load.ServerReport{}
	}
	return *r.Server
}
