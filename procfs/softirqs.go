package procfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// ParseSoftirqs returns the per-CPU counts of the rows of /proc/softirqs
// named in rows (e.g. "NET_RX"), indexed by the CPU columns of its header
// line. A named row that is missing is an error.
func ParseSoftirqs(b []byte, rows ...string) (map[string][]uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	if !sc.Scan() {
		return nil, errors.New("procfs: /proc/softirqs: empty")
	}
	ncpu := len(strings.Fields(sc.Text()))
	if ncpu == 0 {
		return nil, errors.New("procfs: /proc/softirqs: no CPU columns")
	}
	out := map[string][]uint64{}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 1+ncpu {
			continue
		}
		name := strings.TrimSuffix(f[0], ":")
		if !slices.Contains(rows, name) {
			continue
		}
		v := make([]uint64, ncpu)
		for i := range v {
			n, err := strconv.ParseUint(f[1+i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("procfs: /proc/softirqs: %s: %w", name, err)
			}
			v[i] = n
		}
		out[name] = v
	}
	for _, r := range rows {
		if out[r] == nil {
			return nil, fmt.Errorf("procfs: /proc/softirqs: no %s row", r)
		}
	}
	return out, nil
}

// ReadSoftirqs reads the rows named in rows of /proc/softirqs.
func ReadSoftirqs(rows ...string) (map[string][]uint64, error) {
	b, err := os.ReadFile("/proc/softirqs")
	if err != nil {
		return nil, err
	}
	return ParseSoftirqs(b, rows...)
}
