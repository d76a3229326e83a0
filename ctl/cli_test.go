package ctl

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/supernode/supernode/allocation"
)

// The command line without a node: flags, their defaults, argument checks
// and usage text. The commands against a running node are tested with the
// binary, in cmd/supernode.

// runCtl runs supernode <args> as the binary would, with env as its
// environment, and returns what it printed to stdout and to stderr.
func runCtl(env map[string]string, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = Run(args[0], args[1:], func(k string) string { return env[k] }, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestCommands(t *testing.T) {
	if got := strings.Join(Commands(), " "); got != "allocations kill drain fleet credentials" {
		t.Errorf("Commands() = %q", got)
	}
	for _, n := range Commands() {
		if !IsCommand(n) {
			t.Errorf("IsCommand(%q) = false", n)
		}
	}
	// What the daemon takes as its own: flags, and nothing.
	for _, n := range []string{"", "--help", "-version", "--listen", "allocation", "Kill"} {
		if IsCommand(n) {
			t.Errorf("IsCommand(%q) = true", n)
		}
	}
	if _, _, err := runCtl(nil, "bogus"); err == nil || !strings.Contains(err.Error(), `unknown command "bogus"`) {
		t.Errorf("Run(bogus): %v", err)
	}
}

// TestUsage pins the command list supernode --help prints.
func TestUsage(t *testing.T) {
	want := "" +
		"  allocations  list a node's allocations (filters: --user, --call, --transport)\n" +
		"  kill         end a user's or a call's allocations at once (--user U | --call C)\n" +
		"  drain        start a node's drain, or cancel it with --cancel\n" +
		"  fleet        list the fleet's members as a node sees them\n" +
		"  credentials  mint TURN REST credentials offline (--secret S --user U [--ttl D])\n"
	if got := Usage(); got != want {
		t.Errorf("Usage() =\n%s\nwant\n%s", got, want)
	}
}

// TestCommandHelp: supernode <command> --help prints the command's summary
// and its flags to stderr, nothing to stdout, and ends in flag.ErrHelp
// (which main turns into exit status 0).
func TestCommandHelp(t *testing.T) {
	api := []string{"-api URL", "-api-token string", "-json", "-timeout duration"}
	for name, flags := range map[string][]string{
		"allocations": append([]string{"-user string", "-call string", "-transport string"}, api...),
		"kill":        append([]string{"-user string", "-call string"}, api...),
		"drain":       append([]string{"-cancel", "-status"}, api...),
		"fleet":       api,
		"credentials": {"-secret secret", "-user string", "-call string", "-ttl duration", "-url URL", "-json"},
	} {
		for _, h := range []string{"--help", "-h"} {
			out, usage, err := runCtl(nil, name, h)
			if !errors.Is(err, flag.ErrHelp) || out != "" {
				t.Errorf("%s %s: %v, stdout %q", name, h, err, out)
			}
			sc, _ := lookup(name)
			header := "supernode " + name + ": " + sc.summary + ".\n\nUsage: supernode " + name + " [flags]\n\nFlags:\n"
			if !strings.HasPrefix(usage, header) {
				t.Errorf("%s %s: usage starts\n%s\nwant\n%s", name, h, usage, header)
			}
			if n := strings.Count(usage, "\n  -"); n != len(flags) {
				t.Errorf("%s %s: %d flags, want %d:\n%s", name, h, n, len(flags), usage)
			}
			for _, f := range flags {
				if !strings.Contains(usage, "\n  "+f+"\n") {
					t.Errorf("%s %s: no %q in\n%s", name, h, f, usage)
				}
			}
		}
	}
	_, usage, _ := runCtl(nil, "credentials", "--help")
	if !strings.Contains(usage, `(default 24h0m0s)`) {
		t.Errorf("credentials --ttl default:\n%s", usage)
	}
	_, usage, _ = runCtl(nil, "fleet", "--help")
	if !strings.Contains(usage, `(default 10s)`) {
		t.Errorf("--timeout default:\n%s", usage)
	}
}

// TestAPIDefault: --api defaults to SUPERNODE_API, else to http:// and
// SUPERNODE_HTTP_LISTEN (inside the node's own environment), else to the
// default --http-listen; --api-token to SUPERNODE_API_TOKEN.
func TestAPIDefault(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "http://127.0.0.1:9641"},
		{map[string]string{"SUPERNODE_HTTP_LISTEN": "127.0.0.1:9000"}, "http://127.0.0.1:9000"},
		{map[string]string{"SUPERNODE_API": "https://node-1:9641", "SUPERNODE_HTTP_LISTEN": "127.0.0.1:9000"}, "https://node-1:9641"},
	} {
		for _, name := range []string{"allocations", "kill", "drain", "fleet"} {
			_, usage, _ := runCtl(tc.env, name, "--help")
			if !strings.Contains(usage, `(default "`+tc.want+`")`) {
				t.Errorf("%s with %v: --api default is not %s:\n%s", name, tc.env, tc.want, usage)
			}
		}
	}
	for _, tc := range []struct {
		env   map[string]string
		args  []string
		token string
	}{
		{nil, nil, ""},
		{map[string]string{"SUPERNODE_API_TOKEN": "tok"}, nil, "tok"},
		{map[string]string{"SUPERNODE_API_TOKEN": "tok"}, []string{"--api-token", "flag"}, "flag"},
	} {
		c := &command{name: "fleet", getenv: func(k string) string { return tc.env[k] }, fs: flag.NewFlagSet("fleet", flag.ContinueOnError)}
		c.apiFlags()
		if err := c.parse(tc.args); err != nil || c.client.Token != tc.token {
			t.Errorf("%v %v: token %q, %v; want %q", tc.env, tc.args, c.client.Token, err, tc.token)
		}
	}
}

// TestArgumentErrors: what is wrong with a command's arguments is said
// before any node is called, naming the flag at fault.
func TestArgumentErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"credentials", "--user", "x"}, "--secret"},
		{[]string{"credentials", "--secret", "s"}, "--user"},
		{[]string{"credentials", "--secret", "s", "--user", "x", "--ttl", "-1s"}, "--ttl"},
		{[]string{"credentials", "--secret", "s", "--user", "x", "--ttl", "500ms"}, "--ttl 500ms: want at least 1s"},
		{[]string{"credentials", "--secret", "s", "--user", "x", "--json"}, "--url"},
		{[]string{"credentials", "--secret", "s", "--user", "x", "--call", "a b"}, "--call"},
		{[]string{"kill", "--user", "x", "--call", "y"}, "one of --user or --call"},
		{[]string{"fleet", "extra"}, "unexpected argument"},
		// Exactly as they were before they moved from cmd/supernode.
		{[]string{"kill"}, "kill: give one of --user or --call"},
		{[]string{"drain", "--cancel", "--status"}, "drain: give at most one of --cancel and --status"},
		{[]string{"allocations", "extra", "--user", "x"}, `allocations: unexpected argument "extra" (flags start with --)`},
		{[]string{"credentials", "--secret", "s", "--user", "x", "--ttl", "1d"}, `invalid value "1d" for flag -ttl`},
	} {
		if _, _, err := runCtl(nil, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
	// An unknown flag: the usage, and the error once (main prints it last).
	out, usage, err := runCtl(nil, "allocations", "--bogus")
	if err == nil || !strings.Contains(err.Error(), "-bogus") || strings.Contains(out+usage, "bogus") || !strings.Contains(out+usage, "Usage: supernode allocations") {
		t.Errorf("allocations --bogus: %v, printed:\n%s", err, out+usage)
	}
}

// TestCredentialsFlags: the checks of supernode credentials' flags, in the
// order they are made, and the REST id they mint for.
func TestCredentialsFlags(t *testing.T) {
	ok := credentialsFlags{secret: "s", user: "alice", ttl: time.Hour}
	with := func(change func(f *credentialsFlags)) credentialsFlags {
		f := ok
		change(&f)
		return f
	}
	for _, tc := range []struct {
		name    string
		f       credentialsFlags
		id, err string
	}{
		{"user", ok, "alice", ""},
		{"call", with(func(f *credentialsFlags) { f.call = "call-1" }), "c=call-1~alice", ""},
		{"json with a url", with(func(f *credentialsFlags) { f.json, f.urls = true, []string{"turn:192.0.2.1:3478"} }), "alice", ""},
		{"user of 128 bytes", with(func(f *credentialsFlags) { f.user = strings.Repeat("u", 128) }), strings.Repeat("u", 128), ""},
		{"ttl of 1s", with(func(f *credentialsFlags) { f.ttl = time.Second }), "alice", ""},
		{"no secret", with(func(f *credentialsFlags) { f.secret, f.user = "", "" }), "",
			"credentials: --secret is required (or SUPERNODE_AUTH_SECRET)"},
		{"no user", with(func(f *credentialsFlags) { f.user, f.ttl = "", 0 }), "", "credentials: --user is required"},
		{"user of 129 bytes", with(func(f *credentialsFlags) { f.user = strings.Repeat("u", 129) }), "",
			"credentials: --user: at most 128 bytes, no control characters"},
		{"user with a newline", with(func(f *credentialsFlags) { f.user = "a\nb" }), "",
			"credentials: --user: at most 128 bytes, no control characters"},
		{"user with a CR", with(func(f *credentialsFlags) { f.user = "a\rb" }), "",
			"credentials: --user: at most 128 bytes, no control characters"},
		{"user with a NUL", with(func(f *credentialsFlags) { f.user = "a\x00b" }), "",
			"credentials: --user: at most 128 bytes, no control characters"},
		{"reserved user", with(func(f *credentialsFlags) { f.user, f.call = "c=room~bob", "room" }), "",
			"credentials: --user may not start with c= (reserved for placed calls; pass --call)"},
		{"ttl under 1s", with(func(f *credentialsFlags) { f.ttl = 999 * time.Millisecond }), "",
			"credentials: --ttl 999ms: want at least 1s (credentials expire on a whole second)"},
		{"negative ttl", with(func(f *credentialsFlags) { f.ttl = -time.Second }), "",
			"credentials: --ttl -1s: want at least 1s (credentials expire on a whole second)"},
		{"json without a url", with(func(f *credentialsFlags) { f.json = true }), "", "credentials: --json needs at least one --url"},
		{"bad call", with(func(f *credentialsFlags) { f.call = "a b" }), "", `credentials: --call "a b": 1-64 of A-Z a-z 0-9 . - _`},
		{"call too long", with(func(f *credentialsFlags) { f.call = strings.Repeat("c", 65) }), "",
			`credentials: --call "` + strings.Repeat("c", 65) + `": 1-64 of A-Z a-z 0-9 . - _`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.f.restID()
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("got %q, %v; want the error %q", id, err, tc.err)
				}
				return
			}
			if err != nil || id != tc.id {
				t.Fatalf("got %q, %v; want %q", id, err, tc.id)
			}
		})
	}
}

// TestCredentialsSecret: --secret beats SUPERNODE_AUTH_SECRET, whose first
// entry is used, split as the node splits it.
func TestCredentialsSecret(t *testing.T) {
	for _, tc := range []struct {
		env    string
		args   []string
		secret string
	}{
		{" s3cret , old", nil, "s3cret"},
		{"s3cret", nil, "s3cret"},
		{"s3cret,old", []string{"--secret", "flag"}, "flag"},
		{"", []string{"--secret", "flag"}, "flag"},
	} {
		args := append([]string{"credentials", "--user", "alice"}, tc.args...)
		out, usage, err := runCtl(map[string]string{"SUPERNODE_AUTH_SECRET": tc.env}, args...)
		f := strings.Fields(out)
		if err != nil || usage != "" || len(f) != 4 || f[3] != allocation.RESTPassword(tc.secret, f[1]) {
			t.Errorf("SUPERNODE_AUTH_SECRET=%q %v: %v %q %q, want a password from %q", tc.env, tc.args, err, out, usage, tc.secret)
		}
	}
	for _, env := range []string{"", " , "} {
		if _, _, err := runCtl(map[string]string{"SUPERNODE_AUTH_SECRET": env}, "credentials", "--user", "alice"); err == nil ||
			err.Error() != "credentials: --secret is required (or SUPERNODE_AUTH_SECRET)" {
			t.Errorf("SUPERNODE_AUTH_SECRET=%q: %v", env, err)
		}
	}
}
