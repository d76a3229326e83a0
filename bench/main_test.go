package main

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

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
