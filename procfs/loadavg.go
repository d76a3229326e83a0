package procfs

import (
	"os"
	"strings"
)

// LoadAvg is the first three fields of /proc/loadavg (the 1, 5 and 15
// minute load averages, as text), or "unknown": the bench harness records
// it beside its results to say how busy the machine was.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}
