package relaytest

import (
	"bufio"
	"encoding/json"
	"strings"
)

// SessionRecords returns the session records (one line per ended
// allocation, "session ended") among JSON log lines, each as its fields.
func SessionRecords(logs string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "session ended" {
			out = append(out, m)
		}
	}
	return out
}
