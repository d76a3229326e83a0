package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/config"
	"github.com/supernode/supernode/looptest"
)

// TestConfigValueErrorsNameWhereAndType: a value that does not parse names
// the file and line, the variable or the flag, and the type it wants.
func TestConfigValueErrorsNameWhereAndType(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "supernode.conf")
	if err := os.WriteFile(conf, []byte("# settings\nrealm = example\n\nmax-bps = lots # oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"file int", []string{"--config", conf}, nil, []string{conf + ":4:", "max-bps", `"lots"`, "want an integer"}},
		{"env duration", nil, map[string]string{"SUPERNODE_DRAIN_TIMEOUT": "15"}, []string{"SUPERNODE_DRAIN_TIMEOUT", "want a duration", "--drain-timeout"}},
		{"env bool", nil, map[string]string{"SUPERNODE_PPROF": "yes please"}, []string{"SUPERNODE_PPROF", "want true or false"}},
		{"env float", nil, map[string]string{"SUPERNODE_CAPACITY": "half"}, []string{"SUPERNODE_CAPACITY", "want a number"}},
		{"env int", nil, map[string]string{"SUPERNODE_UDP_SOCKETS": "4.5"}, []string{"SUPERNODE_UDP_SOCKETS", "want an integer"}},
		{"flag int", []string{"--min-port", "abc"}, nil, []string{`--min-port "abc": want an integer`}},
		{"flag duration", []string{"--drain-timeout=15"}, nil, []string{`--drain-timeout "15": want a duration`}},
		{"flag bool", []string{"--pprof=maybe"}, nil, []string{`--pprof "maybe": want true or false`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseOptions(tc.args, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
			errorSays(t, err, tc.want...)
		})
	}
}

// errorSays fails t unless err contains every one of want.
func errorSays(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

// offHostIP is an address on no host (TEST-NET-1), which relay sockets
// cannot bind.
const offHostIP = "192.0.2.1"

// needUnbindable fails t at once if offHostIP can be bound here (with
// net.ipv4.ip_nonlocal_bind=1 any address can), rather than let a node
// that should have refused to start run until the test times out.
func needUnbindable(t *testing.T) {
	t.Helper()
	if pc, err := net.ListenPacket("udp4", offHostIP+":0"); err == nil {
		_ = pc.Close()
		t.Fatalf("%s can be bound on this host (net.ipv4.ip_nonlocal_bind=1?): the test needs an address that cannot", offHostIP)
	}
}

// TestUsageBeforeError: an unknown flag prints the usage and returns the
// error for main to print last; --help prints the usage alone.
func TestUsageBeforeError(t *testing.T) {
	var out bytes.Buffer
	_, err := parseOptions([]string{"--relay-IP", "1.2.3.4"}, func(string) string { return "" }, &out)
	if err == nil || !strings.Contains(err.Error(), "relay-IP") {
		t.Fatalf("error %v, want one naming -relay-IP", err)
	}
	if !strings.Contains(out.String(), "Usage: supernode") || strings.Contains(out.String(), "relay-IP") {
		t.Errorf("want the usage only, the error to come last from main; printed:\n%s", out.String())
	}
	out.Reset()
	_, err = parseOptions([]string{"--help"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "Usage: supernode") || strings.Contains(out.String(), "flag provided") {
		t.Errorf("--help: error %v, printed:\n%s", err, out.String())
	}
}

func TestUnknownEnv(t *testing.T) {
	got := unknownEnv([]string{
		"PATH=/bin", "SUPERNODE_RELAY_IP=10.0.0.1", "SUPERNODE_RELAYIP=10.0.0.1", "SUPERNODE_API_TOKENS=x",
		"SUPERNODE_VERSION=1.2", "SUPERNODE_REQUIRE_INTEROP=1", "SUPERNODE_OFFLOAD_OPTIONAL=1",
		"SUPERNODE_REQUIRE_BROWSER=1", "SUPERNODE_Log_Level=debug", "SUPERNODE_=",
		"supernode_relay_ip=1", "Supernode_Max_Bps=1", "SUPERNODERELAY_IP=1", "supernode_api=x", "SUPERVISOR_X=1",
	})
	want := []string{
		"SUPERNODE_RELAYIP is not a setting and is ignored; did you mean SUPERNODE_RELAY_IP?",
		"SUPERNODE_API_TOKENS is not a setting and is ignored",
		"SUPERNODE_Log_Level is not a setting and is ignored; did you mean SUPERNODE_LOG_LEVEL?",
		"SUPERNODE_ is not a setting and is ignored",
		"supernode_relay_ip is not a setting and is ignored; did you mean SUPERNODE_RELAY_IP?",
		"Supernode_Max_Bps is not a setting and is ignored; did you mean SUPERNODE_MAX_BPS?",
		"SUPERNODERELAY_IP is not a setting and is ignored; did you mean SUPERNODE_RELAY_IP?",
		"supernode_api is not a setting and is ignored; did you mean SUPERNODE_API?",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestMisconfigRefusedAtStart: each of these used to start a node that
// failed later or not at all; now the start fails naming the setting.
func TestMisconfigRefusedAtStart(t *testing.T) {
	needUnbindable(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "auth-secrets")
	// The first line of deploy/kubernetes/secret.yaml's auth-secrets.
	if err := os.WriteFile(secretFile, []byte("# rotated in May\nCHANGE-ME-rest-secret-generate-with-openssl-rand-base64-32\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := "0123456789abcdef0123"
	// Off loopback: the checks run before any socket is opened, so nothing
	// listens on 0.0.0.0.
	off := []string{"--listen", "0.0.0.0:0"}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"relay ip not on host", []string{"--relay-ip", offHostIP}, []string{"--relay-ip " + offHostIP, "cannot bind"}},
		{"short secret", append(off, "--auth-secret", "demo-secret"), []string{"--auth-secret", "11 bytes", "at least 16"}},
		{"placeholder secret", append(off, "--auth-secret", good, "--auth-secret", "CHANGE-ME-old-secret-0123"), []string{"--auth-secret", "secret 2", "CHANGE-ME"}},
		{"placeholder secret file", append(off, "--auth-secret-file", secretFile), []string{"--auth-secret-file " + secretFile, "secret 1", "CHANGE-ME"}},
		{"placeholder api token", append(off, "--auth-secret", good, "--api-token", "CHANGE-ME-api-token-generate-with-openssl-rand-base64-32"), []string{"--api-token", "CHANGE-ME"}},
		{"short api token", append(off, "--auth-secret", good, "--api-token", "tok"), []string{"--api-token", "3 bytes"}},
		{"placeholder cluster key", append(off, "--auth-secret", good, "--cluster-listen", "127.0.0.1:0", "--cluster-key", "CHANGE-ME-base64-of-32-random-bytes"), []string{"--cluster-key", "CHANGE-ME"}},
		{"placeholder password", append(off, "--user", "alice:CHANGE-ME"), []string{"alice", "CHANGE-ME"}},
		{"http off loopback", []string{"--auth-secret", good, "--http-listen", "0.0.0.0:0", "--api-token", "short"}, []string{"--api-token", "5 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--user", "a:b"}, tc.args...)
			errorSays(t, runRefused(t, args, func(string) string { return "" }), tc.want...)
		})
	}
}

// runRefused runs a node that must refuse to start, and returns its error.
// One that starts after all is stopped and fails the test at once (rather
// than leaving run waiting for a signal until go test's timeout).
func runRefused(t *testing.T, args []string, getenv func(string) string) error {
	t.Helper()
	sigs, ready, done := make(chan os.Signal, 1), make(chan *node, 1), make(chan error, 1)
	go func() { done <- run(args, getenv, &bytes.Buffer{}, &bytes.Buffer{}, sigs, ready) }()
	select {
	case err := <-done:
		return err
	case <-ready:
		sigs <- os.Interrupt
		<-done
		t.Fatalf("the node started; want it refused (args %q)", args)
		return nil
	}
}

// TestBadValueNamesItsOrigin: a value that parses but is refused later
// (check, or while starting) names the config file line or the variable
// it came from; one from the command line names the flag only.
func TestBadValueNamesItsOrigin(t *testing.T) {
	dir := t.TempDir()
	conf := func(body string) string {
		f, err := os.CreateTemp(dir, "*.conf")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(body); err != nil {
			t.Fatal(err)
		}
		return f.Name()
	}
	base := []string{"--listen", "127.0.0.1:0", "--http-listen", "", "--user", "a:b"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"file relay-ip", []string{"--config", conf("realm = x\n\nrelay-ip = 10.9.8.300\n")}, nil, ".conf:3: --relay-ip \"10.9.8.300\": not an IP address"},
		{"file min-port", []string{"--config", conf("min-port = 70000\n")}, nil, ".conf:1: --min-port 70000"},
		{"file list, second line", []string{"--config", conf("allow-peer = 10.1.0.0/16\nallow-peer = 10.0.0.0/33\n")}, nil, ".conf:2: --allow-peer \"10.0.0.0/33\""},
		{"env offload", nil, map[string]string{"SUPERNODE_OFFLOAD": "maybe"}, "SUPERNODE_OFFLOAD: --offload \"maybe\": want auto, on or off"},
		{"env log-format", nil, map[string]string{"SUPERNODE_LOG_FORMAT": "jsn"}, "SUPERNODE_LOG_FORMAT: --log-format \"jsn\""},
		{"command line", []string{"--min-port", "70000"}, nil, "--min-port 70000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runRefused(t, append(append([]string{}, base...), tc.args...), func(k string) string { return tc.env[k] })
			errorSays(t, err, tc.want)
			if tc.name == "command line" && !strings.HasPrefix(err.Error(), "--min-port") {
				t.Errorf("a command-line value's error %q names an origin", err)
			}
		})
	}
}

// TestShortSecretsOnLoopback: tests and demos on loopback keep their short
// secrets.
func TestShortSecretsOnLoopback(t *testing.T) {
	tn := startNode(t, "--auth-secret", "demo-secret", "--api-token", "tok", "--cluster-listen", "127.0.0.1:0")
	if tn.http == "" {
		t.Fatal("no HTTP listener")
	}
}

// TestBinaryMisconfigMessages runs the real binary: an unknown flag's error
// is the last line it prints; a misspelt SUPERNODE_* variable is warned
// about before a relay IP not on the host stops the start.
func TestBinaryMisconfigMessages(t *testing.T) {
	needUnbindable(t)
	bin := buildBinary(t)
	out, err := exec.Command(bin, "--relay-IP", "127.0.0.1").CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err == nil || !strings.Contains(lines[len(lines)-1], "flag provided but not defined: -relay-IP") ||
		!strings.Contains(string(out), "Usage: supernode") {
		t.Errorf("unknown flag: %v, printed:\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--listen", "127.0.0.1:0", "--http-listen", "", "--relay-ip", offHostIP, "--user", "a:b")
	cmd.Env = append(os.Environ(), "SUPERNODE_RELAYIP=127.0.0.1")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "SUPERNODE_RELAYIP is not a setting and is ignored; did you mean SUPERNODE_RELAY_IP?") ||
		!strings.Contains(string(out), "supernode: --relay-ip "+offHostIP) {
		t.Errorf("exit %v, printed:\n%s", err, out)
	}
}

// TestConfigCommentRule: the shipped example config reads as the node's
// settings, and describes the trailing-comment rule it is read with (the
// rule itself is tested in package config).
func TestConfigCommentRule(t *testing.T) {
	example := "../../deploy/systemd/supernode.conf.example"
	vals, err := config.ReadFile(example, newFlagSet(&options{}, &bytes.Buffer{}), "config")
	if err != nil {
		t.Fatalf("%s: %v", example, err)
	}
	if len(vals["listen"]) == 0 {
		t.Errorf("%s: no listen line read: %v", example, vals)
	}
	text, _ := os.ReadFile(example)
	if !strings.Contains(string(text), "follows a space or tab") {
		t.Errorf("%s does not describe the trailing-comment rule", example)
	}
}

// TestReloadRefusesPlaceholder: a SIGHUP that would load a placeholder
// secret on a node off loopback keeps the old secrets and says why. (The
// node is not started: only its options say it listens on 0.0.0.0.)
func TestReloadRefusesPlaceholder(t *testing.T) {
	file := filepath.Join(t.TempDir(), "auth-secrets")
	good := "0123456789abcdef0123456789"
	if err := os.WriteFile(file, []byte(good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseOptions([]string{"--listen", "0.0.0.0:3478", "--auth-secret-file", file}, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := o.creds.Load()
	if err != nil {
		t.Fatal(err)
	}
	var logs looptest.Log
	n := &node{o: o, log: slog.New(slog.NewTextHandler(&logs, nil)), store: allocation.NewStore("r", creds, nil)}
	if err := os.WriteFile(file, []byte("CHANGE-ME-rest-secret-generate-with-openssl-rand-base64-32\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.reload()
	if got := n.store.Current().Secrets; len(got) != 1 || got[0] != good {
		t.Errorf("secrets after reload %q, want the old one kept", got)
	}
	if !strings.Contains(logs.String(), "reload failed") || !strings.Contains(logs.String(), "CHANGE-ME") {
		t.Errorf("reload log:\n%s", logs.String())
	}
}
