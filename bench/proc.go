package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, which is
// 100 on every Linux ABI Go runs on.
const userHZ = 100

// ProcSample is what the harness reads of a server process itself, as a
// cross-check of what turnload reports.
type ProcSample struct {
	CPUSeconds float64 // utime+stime since the process started
	RSSBytes   int64   // VmRSS
	HWMBytes   int64   // VmHWM: peak resident set
}

// readProc samples /proc/PID/stat and /proc/PID/status.
func readProc(pid int) (ProcSample, error) {
	var p ProcSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, err
	}
	if p.CPUSeconds, err = parseStatCPU(stat); err != nil {
		return p, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	p.RSSBytes = statusKB(status, "VmRSS:") * 1024
	p.HWMBytes = statusKB(status, "VmHWM:") * 1024
	return p, nil
}

// parseStatCPU returns utime+stime in seconds from a /proc/PID/stat line.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(stat []byte) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("bench: /proc/PID/stat: no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("bench: /proc/PID/stat: too few fields")
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("bench: /proc/PID/stat: %w", err)
	}
	return float64(u+s) / userHZ, nil
}

// statusKB returns the kB value of key in /proc/PID/status, 0 if absent.
func statusKB(status []byte, key string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
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
