package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Process is one reading of a process's /proc/PID/stat and
// /proc/PID/status.
type Process struct {
	// CPUTicks is utime + stime (all threads), in UserHZ ticks.
	CPUTicks uint64
	// RSS is VmRSS, the resident set now, in bytes.
	RSS int64
	// HWM is VmHWM, the peak resident set, in bytes; 0 when absent.
	HWM int64
}

// CPU is CPUTicks as a duration.
func (p Process) CPU() time.Duration {
	return time.Duration(p.CPUTicks) * time.Second / UserHZ
}

// ReadProcess reads /proc/PID/stat and /proc/PID/status. A file that
// cannot be read (the process is gone) is returned as its *fs.PathError.
// A process without a VmRSS line returns its CPU time with an error that
// wraps ErrNoMemory.
func ReadProcess(pid int) (Process, error) {
	var p Process
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, err
	}
	if p.CPUTicks, err = ParseStatCPU(stat); err != nil {
		return p, fmt.Errorf("procfs: /proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	p.RSS, p.HWM, err = ParseStatusMemory(status)
	if errors.Is(err, ErrNoMemory) {
		return p, fmt.Errorf("%w: pid %d", err, pid)
	}
	if err != nil {
		return p, fmt.Errorf("procfs: /proc/%d/status: %w", pid, err)
	}
	return p, nil
}

// ParseStatCPU returns utime + stime (fields 14 and 15) of a
// /proc/PID/stat line, in UserHZ ticks. The command name (field 2) may
// hold spaces and parentheses, so fields are counted from the last ')'.
func ParseStatCPU(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	f := bytes.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, errors.New("too few fields")
	}
	var ticks uint64
	for _, s := range f[11:13] { // fields 14 (utime) and 15 (stime)
		v, err := strconv.ParseUint(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time %q: %w", s, err)
		}
		ticks += v
	}
	return ticks, nil
}

// ParseStatusMemory returns VmRSS and VmHWM of a /proc/PID/status file in
// bytes. Without a VmRSS line it returns ErrNoMemory; a missing VmHWM
// reads as 0.
func ParseStatusMemory(status []byte) (rss, hwm int64, err error) {
	found := false
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		key, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok || (string(key) != "VmRSS" && string(key) != "VmHWM") {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, 0, fmt.Errorf("%s line %q", key, line)
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s %q: %w", key, f[0], err)
		}
		if string(key) == "VmRSS" {
			rss, found = kb*1024, true
		} else {
			hwm = kb * 1024
		}
	}
	if !found {
		return 0, hwm, ErrNoMemory
	}
	return rss, hwm, nil
}
