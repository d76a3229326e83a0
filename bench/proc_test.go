package main

import (
	"os"
	"testing"
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

func TestSumMetric(t *testing.T) {
	text := `# HELP supernode_allocations_active Allocations currently live.
# TYPE supernode_allocations_active gauge
supernode_allocations_active{transport="tcp"} 2
supernode_allocations_active{transport="udp"} 398
supernode_allocations_active_other 7
supernode_allocations_created_total{transport="udp"} 400
`
	got, err := sumMetric(stringsReader(text), "supernode_allocations_active")
	if err != nil || got != 400 {
		t.Errorf("sumMetric = %v, %v; want 400", got, err)
	}
	if _, err := sumMetric(stringsReader("other 1\n"), "supernode_allocations_active"); err == nil {
		t.Error("sumMetric found a metric that is not there")
	}
}
