package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestReadProcSelf(t *testing.T) {
	p, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.RSSBytes <= 0 || p.HWMBytes < p.RSSBytes || p.CPUSeconds < 0 {
		t.Errorf("readProc(self) = %+v", p)
	}
	if _, err := readProc(-1); err == nil {
		t.Error("readProc(-1) found a process")
	}
}

func TestCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: X\nmodel name\t: Some CPU @ 2.0GHz\nprocessor\t: 1\nmodel name\t: Some CPU @ 2.0GHz\n"
	if got := cpuModel([]byte(info)); got != "Some CPU @ 2.0GHz" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := cpuModel(nil); got != "unknown" {
		t.Errorf("cpuModel(nil) = %q", got)
	}
}

// TestWaitMetric: waitMetric sums a metric over its labels (and only that
// metric) from a real /metrics endpoint, and says how far it got when the
// target is not reached.
func TestWaitMetric(t *testing.T) {
	text := `# HELP supernode_allocations_active Allocations currently live.
# TYPE supernode_allocations_active gauge
supernode_allocations_active{transport="tcp"} 2
supernode_allocations_active{transport="udp"} 398
supernode_allocations_active_other 7
supernode_allocations_created_total{transport="udp"} 400
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, text) }))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if err := waitMetric(context.Background(), addr, "supernode_allocations_active", 400, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	err := waitMetric(context.Background(), addr, "supernode_allocations_active", 401, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "supernode_allocations_active is 400, not 401") {
		t.Fatalf("waitMetric for 401: %v", err)
	}
}
