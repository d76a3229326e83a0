package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Profile is supernode's CPU profile under the fixed load.
type Profile struct {
	Load    Load
	Variant string // the variant profiled
	Seconds int
	File    string // the raw profile, for go tool pprof
	Top     string // the head of go tool pprof -top
	Err     string // why there is no profile
}

// topLines is how much of go tool pprof -top goes into the report.
const topLines = 30

// phaseProfile runs supernode with --pprof at the fixed load, outside the
// measured rounds (profiling costs CPU), and fetches a CPU profile once
// every call is set up.
func (h *Harness) phaseProfile(ctx context.Context) (*Profile, error) {
	secs := int(h.cfg.Profile / time.Second)
	p := &Profile{Seconds: secs}
	if secs < 1 {
		p.Err = "profiling disabled (-profile 0)"
		return p, nil
	}
	// The user-space path is what a Go profile shows; the kernel path's
	// work is not in it.
	i := slices.IndexFunc(h.variants, func(v Variant) bool { return v.Kind == Supernode && !slices.Contains(v.Args, "on") })
	if i < 0 {
		p.Err = "no supernode variant with its user-space data path among -variants"
		return p, nil
	}
	p.Variant = h.variants[i].Name
	l := h.cfg.fixedLoad()
	l.Duration = time.Duration(secs+3) * time.Second
	p.Load = l
	p.File = filepath.Join(h.dir, "supernode.cpu.pprof")
	during := func(ctx context.Context, s *Server) error {
		if err := waitMetric(ctx, s.HTTP, "supernode_allocations_active", 2*l.Calls, l.timeout()); err != nil {
			return err
		}
		return fetchProfile(ctx, s.HTTP, secs, p.File)
	}
	run, err := h.runOne(ctx, "profile", 0, 0, h.variants[i], l, true, during)
	if err != nil {
		return p, err
	}
	if _, serr := os.Stat(p.File); serr != nil {
		p.Err = "no profile was fetched"
		if run.Err != "" {
			p.Err += ": " + run.Err
		}
		return p, nil
	}
	top, err := pprofTop(ctx, h.bins[Supernode], p.File)
	if err != nil {
		p.Err = err.Error()
	}
	p.Top = top
	return p, nil
}

// fetchProfile saves /debug/pprof/profile?seconds=secs to path.
func fetchProfile(ctx context.Context, addr string, secs int, path string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+15)*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// Off loopback supernode runs with --api-token, which guards pprof.
	req.Header.Set("Authorization", "Bearer "+benchAPIToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: profile: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("bench: profile: GET %s: %s %s", url, res.Status, strings.TrimSpace(string(b)))
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("bench: profile: %w", err)
	}
	return os.WriteFile(path, b, 0o644)
}

// pprofTop runs go tool pprof -top on the profile and keeps its head.
func pprofTop(ctx context.Context, bin, profile string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount="+strconv.Itoa(topLines), bin, profile).CombinedOutput()
	if err != nil {
		return strings.TrimSpace(string(out)), fmt.Errorf("bench: go tool pprof -top: %w", err)
	}
	return strings.TrimRight(string(out), "\n"), nil
}
