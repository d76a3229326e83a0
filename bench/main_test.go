package main

import (
	"errors"
	"io"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c := o.cfg; c.Rounds != 3 || !c.Warmup || !slices.Equal(c.Phases, allPhases) || !slices.Equal(c.Idle, []int{500, 5000}) || o.out != "BENCHMARKS.md" {
		t.Errorf("defaults: %+v out %q", c, o.out)
	}

	o, err = parseFlags([]string{"-quick", "-rounds", "2", "-phases", "idle,cpu"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.Rounds != 2 || c.Warmup || c.Duration != 3*time.Second || o.out != "" || !slices.Equal(c.Idle, []int{500, 2000}) {
		t.Errorf("-quick with -rounds 2: %+v out %q", c, o.out)
	}
	if !slices.Equal(c.Phases, []string{"cpu", "idle"}) {
		t.Errorf("phases %v, want them in run order", c.Phases)
	}

	for _, bad := range [][]string{
		{"-rounds", "0"}, {"-phases", "cpu,warp"}, {"-phases", ","}, {"-idle", "500,x"}, {"-idle", "-3"},
		{"-max-loss", "0"}, {"-idle-hold", "0s"}, {"-profile", "-1s"}, {"-duration", "10ms"}, {"-ramp", "-1"}, {"-sweep-start", "5000"},
		{"extra"}, {"-nosuchflag"},
	} {
		if _, err := parseFlags(bad, io.Discard); !errors.Is(err, errFlags) {
			t.Errorf("parseFlags(%q) = %v, want a bad command line", bad, err)
		}
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"turnserver", "--log-file", "/tmp/a b/c.log", "--realm", "it's", ""})
	want := `turnserver --log-file '/tmp/a b/c.log' --realm 'it'\''s' ''`
	if got != want {
		t.Errorf("shellJoin = %s, want %s", got, want)
	}
}

func TestRelPath(t *testing.T) {
	for _, tc := range []struct{ wd, in, want string }{
		{"/work/main", "/work/main/bench/results/x/coturn.log", "bench/results/x/coturn.log"},
		{"/work/main", "/usr/bin/turnserver", "/usr/bin/turnserver"},
		{"/work/main", "/work/mainly/x", "/work/mainly/x"},
		{"/work/main", "relative/x", "relative/x"},
		{"", "/a/b", "/a/b"},
	} {
		if got := relPath(tc.wd, tc.in); got != tc.want {
			t.Errorf("relPath(%q, %q) = %q, want %q", tc.wd, tc.in, got, tc.want)
		}
	}
}

func TestParseFlagsHostile(t *testing.T) {
	o, err := parseFlags([]string{"-hostile"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := HostileConfig{Calls: 20, PPS: 50, Size: 172, Quiet: 10 * time.Second, Flood: 20 * time.Second, After: 5 * time.Second,
		Sources: 8, MaxPackets: 40_000_000, Profile: 8 * time.Second}
	if !o.hostile || !reflect.DeepEqual(o.hcfg, want) || o.out != "BENCHMARKS.md" {
		t.Errorf("defaults: %+v out %q, want %+v", o.hcfg, o.out, want)
	}
	o, err = parseFlags([]string{"-hostile", "-hostile-args", " --udp-rcvbuf 0  --unauth-rate 5 "}, io.Discard)
	if err != nil || !slices.Equal(o.hcfg.ServerArgs, []string{"--udp-rcvbuf", "0", "--unauth-rate", "5"}) {
		t.Errorf("-hostile-args: %q, %v", o.hcfg.ServerArgs, err)
	}
	for _, bad := range [][]string{
		{"-flood", "61s"}, {"-flood", "0s"}, {"-flood-sources", "0"}, {"-flood-sources", "201"},
		{"-flood-max-packets", "0"}, {"-flood-max-packets", "100000001"}, {"-hostile-calls", "0"},
		{"-hostile-quiet", "10ms"}, {"-hostile-profile", "20s"}, {"-out", ""},
	} {
		if _, err := parseFlags(append([]string{"-hostile"}, bad...), io.Discard); !errors.Is(err, errFlags) {
			t.Errorf("-hostile %v: err %v, want a flag error", bad, err)
		}
	}
}
