package procfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CPUTimes is one "cpu" line of /proc/stat: where a CPU's time went, in
// UserHZ ticks since boot. Guest time is already inside User and Nice, so
// the two guest columns are not kept.
type CPUTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

// Busy is the ticks the CPU spent working for anyone: user (guest time is
// already inside it), nice, system, hard and soft interrupts. Softirq is
// where a kernel data path runs, so it is the part a per-process reading
// misses. Idle, iowait and steal are not work done on this machine.
func (t CPUTimes) Busy() uint64 { return t.User + t.Nice + t.System + t.IRQ + t.SoftIRQ }

// Total is every tick counted.
func (t CPUTimes) Total() uint64 {
	return t.User + t.Nice + t.System + t.Idle + t.IOWait + t.IRQ + t.SoftIRQ + t.Steal
}

// Stat is the CPU lines of /proc/stat.
type Stat struct {
	// All is the "cpu" line: every CPU together.
	All CPUTimes
	// CPUs are the "cpuN" lines, indexed by N. An offline CPU has no line
	// and stays zero.
	CPUs []CPUTimes
}

// ParseStat reads the "cpu" and "cpuN" lines of /proc/stat; the other
// lines (intr, ctxt, ...) are skipped. Kernels before 2.6.24 had fewer
// than the 8 columns kept here and are refused.
func ParseStat(b []byte) (Stat, error) {
	var s Stat
	all := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20) // the intr line is long
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") {
			if all || len(s.CPUs) > 0 {
				break // the cpu lines come first; the rest is intr, ctxt, ...
			}
			continue
		}
		n := -1
		if f[0] != "cpu" {
			var err error
			if n, err = strconv.Atoi(f[0][3:]); err != nil || n < 0 || n > maxCPU {
				return Stat{}, fmt.Errorf("procfs: /proc/stat: bad CPU name %q", f[0])
			}
		}
		if len(f) < 9 {
			return Stat{}, fmt.Errorf("procfs: /proc/stat: %s has %d fields, want at least 8", f[0], len(f)-1)
		}
		var v [8]uint64
		for i := range v {
			var err error
			if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
				return Stat{}, fmt.Errorf("procfs: /proc/stat: %s: %w", f[0], err)
			}
		}
		t := CPUTimes{User: v[0], Nice: v[1], System: v[2], Idle: v[3], IOWait: v[4], IRQ: v[5], SoftIRQ: v[6], Steal: v[7]}
		if n < 0 {
			s.All, all = t, true
			continue
		}
		for len(s.CPUs) <= n {
			s.CPUs = append(s.CPUs, CPUTimes{})
		}
		s.CPUs[n] = t
	}
	if err := sc.Err(); err != nil {
		return Stat{}, fmt.Errorf("procfs: /proc/stat: %w", err)
	}
	if !all {
		return Stat{}, errors.New("procfs: /proc/stat: no cpu line")
	}
	if len(s.CPUs) == 0 {
		return Stat{}, errors.New("procfs: /proc/stat: no per-CPU lines")
	}
	return s, nil
}

// ReadStat reads /proc/stat.
func ReadStat() (Stat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(b)
}
