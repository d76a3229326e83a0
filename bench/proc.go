package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/supernode/supernode/procfs"
)

// ProcSample is what the harness reads of a server process itself, as a
// cross-check of what turnload reports.
type ProcSample struct {
	CPUSeconds float64 // utime+stime since the process started
	RSSBytes   int64   // VmRSS
	HWMBytes   int64   // VmHWM: peak resident set
}

// readProc samples /proc/PID/stat and /proc/PID/status. A process without
// memory lines (a zombie) reads as 0 bytes.
func readProc(pid int) (ProcSample, error) {
	p, err := procfs.ReadProcess(pid)
	if err != nil && !errors.Is(err, procfs.ErrNoMemory) {
		return ProcSample{}, err
	}
	return ProcSample{CPUSeconds: p.CPU().Seconds(), RSSBytes: p.RSS, HWMBytes: p.HWM}, nil
}

// Machine describes where the numbers were taken.
type Machine struct {
	Cores  int
	Kernel string
	CPU    string
	Commit string // git rev-parse HEAD, with "-dirty" when the tree has changes
	Go     string
	Coturn string
}

// describeMachine gathers Machine; missing pieces read "unknown". An empty
// turnserver leaves coturn's version out.
func describeMachine(turnserver string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Kernel: "unknown", CPU: "unknown", Commit: "unknown", Coturn: "unknown"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU = cpuModel(b)
	}
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
			m.Commit += "-dirty"
		}
	}
	if turnserver == "" {
		m.Coturn = ""
	} else if out, err := exec.Command(turnserver, "--version").CombinedOutput(); err == nil || len(out) > 0 {
		if v := lastLine(out); v != "" {
			m.Coturn = v
		}
	}
	return m
}

// cpuModel is the first "model name" in /proc/cpuinfo.
func cpuModel(cpuinfo []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// lastLine is the last non-empty line of b, trimmed.
func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
