package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Softnet is one CPU's row of /proc/net/softnet_stat: what its backlog
// (or NAPI) processing did since boot, or over a span when one reading is
// subtracted from a later one. The JSON names are those of the bench's
// reports.
type Softnet struct {
	Processed   uint64 `json:"processed"`    // packets taken off its backlog and processed
	Dropped     uint64 `json:"dropped"`      // packets dropped because its backlog was full, before any socket saw them
	ReceivedRPS uint64 `json:"received_rps"` // times another CPU woke it (IPI) to process packets RPS steered to it
}

// ParseSoftnet reads /proc/net/softnet_stat: hex columns, one row per
// online CPU, at least 10 columns (every kernel since RPS, 2.6.35). Since Linux 5.10 the
// 13th column is the CPU's number; before, the row's position is. The
// result is indexed by CPU; an offline CPU stays zero.
func ParseSoftnet(b []byte) ([]Softnet, error) {
	var out []Softnet
	sc := bufio.NewScanner(bytes.NewReader(b))
	for row := 0; sc.Scan(); row++ {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			return nil, fmt.Errorf("procfs: /proc/net/softnet_stat: %d columns, want at least 10", len(f))
		}
		var v [13]uint64
		for i := 0; i < len(v) && i < len(f); i++ {
			n, err := strconv.ParseUint(f[i], 16, 64)
			if err != nil {
				return nil, fmt.Errorf("procfs: /proc/net/softnet_stat: %w", err)
			}
			v[i] = n
		}
		cpu := row
		if len(f) >= 13 {
			cpu = int(v[12])
		}
		if cpu > maxCPU {
			return nil, fmt.Errorf("procfs: /proc/net/softnet_stat: CPU %d", cpu)
		}
		for len(out) <= cpu {
			out = append(out, Softnet{})
		}
		out[cpu] = Softnet{Processed: v[0], Dropped: v[1], ReceivedRPS: v[9]}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("procfs: /proc/net/softnet_stat: %w", err)
	}
	return out, nil
}

// ReadSoftnet reads /proc/net/softnet_stat.
func ReadSoftnet() ([]Softnet, error) {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return nil, err
	}
	return ParseSoftnet(b)
}

// SoftnetDropped is the packets every CPU's full input backlog dropped:
// the Dropped column summed over the rows.
func SoftnetDropped(rows []Softnet) uint64 {
	var sum uint64
	for _, r := range rows {
		sum += r.Dropped
	}
	return sum
}
