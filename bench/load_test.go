package main

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDecodeResult(t *testing.T) {
	b, err := os.ReadFile("testdata/turnload.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeResult(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Calls.Established != 200 || r.Setup.Allocations != 400 || r.Packets.LossPercent < 1 ||
		r.Rate.ReceivedPPS < 19000 || !r.Loader.Saturated || serverOf(r).CPUMicrosPerPacket < 1 ||
		serverOf(r).RSSPerAllocationBytes < 1 || r.LatencyMS.P99 < r.LatencyMS.P50 {
		t.Errorf("decoded %+v", r)
	}
	for _, bad := range []string{"", "progress only\n", "{\"calls\": ", "{\"calls\": \"many\"}"} {
		if _, err := decodeResult([]byte(bad)); err == nil {
			t.Errorf("decodeResult(%q) accepted", bad)
		}
	}
}

func TestLoadArgs(t *testing.T) {
	l := Load{Calls: 500, Ramp: 0, PPS: 0, Size: 172, Duration: 3 * time.Second, MaxLoss: 0.1}
	got := strings.Join(l.args("bench", "pw", "bench.test", "127.0.0.1:1234", 42), " ")
	want := "--server 127.0.0.1:1234 --user bench --password pw --realm bench.test --transport udp " +
		"--calls 500 --ramp 0 --pps 0 --size 172 --duration 3s --max-loss 0.1 --json --server-pid 42"
	if got != want {
		t.Errorf("args:\n got %s\nwant %s", got, want)
	}
}

// TestRunLoad runs stand-ins for turnload: its exit statuses 0, 1 and 2,
// output that is not JSON, and a hang.
func TestRunLoad(t *testing.T) {
	dir := t.TempDir()
	json, err := os.ReadFile("testdata/turnload.json")
	if err != nil {
		t.Fatal(err)
	}
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	jsonFile := filepath.Join(dir, "out.json")
	if err := os.WriteFile(jsonFile, json, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		body     string
		code     int
		wantErr  error
		anyErr   bool
		wantJSON bool
	}{
		{name: "ok", body: "echo progress >&2; cat " + jsonFile, code: 0, wantJSON: true},
		{name: "loss is a result, not an error", body: "cat " + jsonFile + "; exit 1", code: 1, wantJSON: true},
		{name: "usage", body: "echo 'flag provided but not defined' >&2; exit 2", code: 2, wantErr: errUsage},
		{name: "no JSON", body: "echo crashed; exit 1", code: 1, anyErr: true},
		{name: "hang", body: "exec sleep 30", code: -1, anyErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := script(strings.ReplaceAll(tc.name, " ", "-"), tc.body)
			out := filepath.Join(dir, tc.name+".json")
			res, code, err := runLoad(context.Background(), bin, nil, 500*time.Millisecond, out, filepath.Join(dir, tc.name+".log"))
			if code != tc.code {
				t.Errorf("code = %d, want %d", code, tc.code)
			}
			switch {
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			case tc.anyErr && err == nil:
				t.Error("no error")
			case !tc.anyErr && tc.wantErr == nil && err != nil:
				t.Errorf("err = %v", err)
			}
			if tc.wantJSON != (res != nil) {
				t.Errorf("result = %v, want one: %v", res, tc.wantJSON)
			}
			if tc.wantJSON {
				if saved, _ := os.ReadFile(out); len(saved) != len(json) {
					t.Errorf("saved %d bytes of JSON, want %d", len(saved), len(json))
				}
			}
		})
	}
}

func TestCPUPerHop(t *testing.T) {
	b, err := os.ReadFile("testdata/turnload.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeResult(b)
	if err != nil {
		t.Fatal(err)
	}
	// testdata comes from a turnload that divided by delivered packets;
	// per relay hop it is half that.
	if got, want := cpuPerHop(r), serverOf(r).CPUMicrosPerPacket/2; math.Abs(got-want) > 0.01*want {
		t.Errorf("cpuPerHop = %.3f, want %.3f", got, want)
	}
	if v := cpuPerHop(&Result{}); !math.IsNaN(v) {
		t.Errorf("cpuPerHop(empty) = %v, want NaN", v)
	}
}
