package config

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// settings is a small program's flags.
type settings struct {
	config, realm string
	port          int
	rate          float64
	wait          time.Duration
	debug, ver    bool
	users         List
}

func newFlags(s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&s.config, "config", "", "config file")
	fs.StringVar(&s.realm, "realm", "default", "realm")
	fs.IntVar(&s.port, "min-port", 1, "port")
	fs.Float64Var(&s.rate, "rate", 0, "rate")
	fs.DurationVar(&s.wait, "drain-timeout", time.Minute, "wait")
	fs.BoolVar(&s.debug, "pprof", false, "debug")
	fs.BoolVar(&s.ver, "version", false, "version")
	fs.Var(&s.users, "user", "users")
	return fs
}

func writeConf(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParsePrecedence(t *testing.T) {
	conf := writeConf(t, "realm = file\nmin-port = 5 # comment\nrate 0.5\nuser = a:1\nuser = b:2\n--pprof\nversion = true\n")
	env := map[string]string{"SUPERNODE_CONFIG": conf, "SUPERNODE_MIN_PORT": "6", "SUPERNODE_DRAIN_TIMEOUT": "2m",
		"SUPERNODE_VERSION": "1.2.3"}
	var s settings
	fs := newFlags(&s)
	origins, err := Parse(fs, []string{"--realm", "cmdline"}, func(k string) string { return env[k] }, "config", "version")
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case s.realm != "cmdline":
		t.Errorf("realm %q: the command line must win", s.realm)
	case s.port != 6:
		t.Errorf("min-port %d: the environment must beat the file", s.port)
	case s.rate != 0.5 || !s.debug:
		t.Errorf("rate %v pprof %v: from the file (space form, bare boolean)", s.rate, s.debug)
	case strings.Join(s.users, " ") != "a:1 b:2":
		t.Errorf("users %q: repeated lines make a list", s.users)
	case s.wait != 2*time.Minute:
		t.Errorf("drain-timeout %v", s.wait)
	case s.ver:
		t.Error("version taken from the environment or the file")
	}

	// A value refused after parsing names where it came from.
	for _, tc := range []struct{ err, want string }{
		{"--min-port 6: too low", "SUPERNODE_MIN_PORT: --min-port 6: too low"},
		{`--user "b:2": refused`, conf + `:5: --user "b:2": refused`},
		{"--user: none valid", conf + ":4: --user: none valid"},
		{"--realm x: from the command line", "--realm x: from the command line"},
		{"--rate 0.5: no", conf + ":3: --rate 0.5: no"},
		{"no flag named", "no flag named"},
	} {
		if got := origins.Locate(errors.New(tc.err)); got.Error() != tc.want {
			t.Errorf("Locate(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
	if origins.Locate(nil) != nil {
		t.Error("Locate(nil) is not nil")
	}

	// A list from the environment is comma-separated; the command line
	// names the file over the environment.
	s = settings{}
	env = map[string]string{"SUPERNODE_USER": " a:1, ,b:2 ", "SUPERNODE_CONFIG": "/nonexistent"}
	conf = writeConf(t, "realm = other\n")
	if _, err := Parse(newFlags(&s), []string{"--config", conf}, func(k string) string { return env[k] }, "config", "version"); err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.users, " ") != "a:1 b:2" || s.realm != "other" {
		t.Errorf("users %q realm %q", s.users, s.realm)
	}
}

func TestParseErrors(t *testing.T) {
	conf := writeConf(t, "# settings\nrealm = x\n\nmin-port = lots # oops\n")
	unknown := writeConf(t, "no-such-flag = 1\n")
	self := writeConf(t, "config = other.conf\n")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"file int", []string{"--config", conf}, nil, conf + `:4: min-port = "lots": want an integer for --min-port`},
		{"env duration", nil, map[string]string{"SUPERNODE_DRAIN_TIMEOUT": "15"},
			`SUPERNODE_DRAIN_TIMEOUT="15": want a duration such as 90s, 10m or 1h30m for --drain-timeout`},
		{"env bool", nil, map[string]string{"SUPERNODE_PPROF": "yes please"}, `SUPERNODE_PPROF="yes please": want true or false for --pprof`},
		{"env float", nil, map[string]string{"SUPERNODE_RATE": "half"}, `want a number for --rate`},
		{"flag int", []string{"--min-port", "abc"}, nil, `--min-port "abc": want an integer`},
		{"flag bool", []string{"--pprof=maybe"}, nil, `--pprof "maybe": want true or false`},
		{"unknown flag", []string{"--nope"}, nil, "flag provided but not defined: -nope"},
		{"stray argument", []string{"stray"}, nil, `unexpected argument "stray" (flags start with --)`},
		{"unknown setting", []string{"--config", unknown}, nil, unknown + `:1: unknown setting "no-such-flag"`},
		{"file names a file", []string{"--config", self}, nil, self + `:1: unknown setting "config"`},
		{"missing file", []string{"--config", "/nonexistent/c.conf"}, nil, "--config: open /nonexistent/c.conf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s settings
			_, err := Parse(newFlags(&s), tc.args, func(k string) string { return tc.env[k] }, "config", "version")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %s", err, tc.want)
			}
		})
	}
}

// TestCommentRule: the comment rule deploy/systemd/supernode.conf.example
// describes is the one the parser implements.
func TestCommentRule(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"realm = plain", "plain"},
		{"realm = a#b", "a#b"},
		{"realm = value # a comment", "value"},
		{"realm = value\t# a comment", "value"},
		{"realm = #only a comment", ""},
		{"realm=#x", ""},
		{"realm value # space form", "value"},
		{`realm = "quoted #kept" # comment`, "quoted #kept"},
		{"  # an indented comment line\nrealm = x", "x"},
	} {
		var s settings
		vals, err := ReadFile(writeConf(t, tc.line+"\n"), newFlags(&s), "config")
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
			continue
		}
		if got := vals["realm"]; len(got) != 1 || got[0].Value != tc.want {
			t.Errorf("%q: realm %+v, want %q", tc.line, got, tc.want)
		}
	}
}

// TestUnknownEnv: a variable that names no flag is reported, with the
// flag's variable when only case or underscores differ, the prefix
// included; the node's own names are checked in cmd/supernode.
func TestUnknownEnv(t *testing.T) {
	var s settings
	fs := newFlags(&s)
	for _, tc := range []struct{ name, want string }{
		{"SUPERNODE_MIN_PORT", ""},
		{"SUPERNODE_HARNESS_X", ""},
		{"PATH", ""},
		{"SUPERVISOR_PORT", ""},
		{"SUPERNODE_MINPORT", "did you mean SUPERNODE_MIN_PORT?"},
		{"supernode_min_port", "did you mean SUPERNODE_MIN_PORT?"},
		{"SuperNode_Drain_Timeout", "did you mean SUPERNODE_DRAIN_TIMEOUT?"},
		{"SUPERNODEREALM", "did you mean SUPERNODE_REALM?"},
		{"supernode_harnessx", "did you mean SUPERNODE_HARNESS_X?"},
		{"SUPERNODE_REALMS", "is not a setting and is ignored"},
		{"SUPERNODE_", "is not a setting and is ignored"},
	} {
		got := UnknownEnv(fs, []string{tc.name + "=1"}, []string{"SUPERNODE_HARNESS_X"})
		switch {
		case tc.want == "" && len(got) != 0:
			t.Errorf("%s: warned %q", tc.name, got)
		case tc.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tc.name+" is not a setting and is ignored") ||
			!strings.HasSuffix(got[0], tc.want)):
			t.Errorf("%s: %q, want a warning ending %q", tc.name, got, tc.want)
		}
	}
	if got := UnknownEnv(fs, []string{"SUPERNODE_REALMS=1", "SUPERNODE_A=1"}, nil); len(got) != 2 {
		t.Errorf("one warning per variable, in order: %q", got)
	}
}

// TestGivenEnv: the warning covers the environment the node was given, so
// in-process test nodes (given none) are not warned about the test
// process's own SUPERNODE_* variables.
func TestGivenEnv(t *testing.T) {
	environ := []string{"SUPERNODE_RELAYIP=1", "SUPERNODE_FOO=", "PATH=/bin"}
	env := map[string]string{"SUPERNODE_RELAYIP": "1", "PATH": "/bin"}
	if got := GivenEnv(environ, func(k string) string { return env[k] }); strings.Join(got, " ") != "SUPERNODE_RELAYIP=1 PATH=/bin" {
		t.Errorf("GivenEnv: %q", got)
	}
	if got := GivenEnv(environ, func(string) string { return "" }); len(got) != 0 {
		t.Errorf("GivenEnv with no environment: %q", got)
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("max-credential-ttl"); got != "SUPERNODE_MAX_CREDENTIAL_TTL" {
		t.Fatal(got)
	}
}
