package load

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/supernode/supernode/procfs"
)

// ErrNoProcess reports a --server-pid that /proc does not know.
var ErrNoProcess = errors.New("load: no such process")

// procSample is one reading of a process's CPU time and resident memory.
type procSample struct {
	cpu time.Duration // user + system, all threads
	rss int64         // bytes
}

// readProc reads /proc/PID/stat and /proc/PID/status.
func readProc(pid int) (procSample, error) {
	p, err := procfs.ReadProcess(pid)
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		return procSample{}, fmt.Errorf("%w: pid %d: %v", ErrNoProcess, pid, err)
	}
	if err != nil {
		return procSample{}, fmt.Errorf("load: %w", err)
	}
	return procSample{cpu: p.CPU(), rss: p.RSS}, nil
}
