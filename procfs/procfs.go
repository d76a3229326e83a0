// Package procfs reads the Linux /proc files that supernode's load
// generator (load), bench harness (bench) and the relay's receive-buffer
// tests measure with: a process's CPU time and resident memory
// (/proc/PID/stat, /proc/PID/status), the machine's CPU time accounting
// (/proc/stat), softirq counts (/proc/softirqs), each CPU's input backlog
// (/proc/net/softnet_stat), the kernel's per-socket UDP drop counts
// (/proc/net/udp) and the load average (/proc/loadavg).
//
// The files it parses have Parse functions over their bytes, tested against
// lines captured from real kernels, and Read functions that read the live
// files (ReadProcess reads both of a process's).
// A Read function returns the *fs.PathError of a file it cannot read as it
// is, so a caller can tell "no such process" from a file it cannot parse.
// /proc is the kernel's own report, not untrusted input: the parsers check
// the shape they need and say which file and line were wrong, nothing more.
package procfs

import (
	"errors"
	"syscall"
	"time"
)

// UserHZ is the unit of the CPU times in /proc/stat and /proc/PID/stat:
// USER_HZ ticks per second, fixed at 100 by the Linux ABI on every
// architecture Go supports.
const UserHZ = 100

// ErrNoMemory reports a /proc/PID/status without a VmRSS line: a zombie
// (exited, not yet reaped) or a kernel thread.
var ErrNoMemory = errors.New("procfs: no VmRSS (a zombie or kernel thread?)")

// maxCPU bounds the CPU numbers the parsers accept, so a garbled line
// cannot make them allocate without limit.
const maxCPU = 4096

// SelfCPU is this process's user + system CPU time so far (getrusage: no
// file to read, so it is cheap enough to call every tick of a load run).
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
