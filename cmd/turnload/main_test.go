package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code = run(ctx, args, &o, &e, false)
	return code, o.String(), e.String()
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"--calls", "3"}, "--server"},
		{[]string{"--server", "127.0.0.1:3478"}, "--user"},
		{[]string{"--server", "127.0.0.1:3478", "--user", "u", "--password", "p", "--transport", "sctp"}, "--transport"},
		{[]string{"--server", "127.0.0.1:3478", "--user", "u", "--password", "p", "--size", "8"}, "--size"},
		{[]string{"--server", "127.0.0.1:3478", "--user", "u", "--password", "p", "--pps", "-1"}, "--pps"},
		{[]string{"--server", "127.0.0.1:3478", "--user", "u", "--password", "p", "--max-loss", "101"}, "--max-loss"},
		{[]string{"--server", "127.0.0.1:3478", "--user", "u", "--password", "p", "--insecure"}, "--transport tls"},
		{[]string{"--server", "127.0.0.1:3478", "--user", "u", "--password", "p", "--transport", "tls", "--ca", "/nonexistent"}, "--ca"},
		{[]string{"--server", "127.0.0.1:3478", "--user", "u", "--password", "p", "--server-pid", "1073741824"}, "--server-pid"},
		{[]string{"--server", "127.0.0.1:3478", "--user", "u", "--password", "p", "--calls", "0"}, "--calls"},
		{[]string{"--server", "127.0.0.1:3478", "--user", "u", "--password", "p", "--duration", "0s"}, "--duration"},
		{[]string{"--server", "127.0.0.1:3478", "--user", "u", "--password", "p", "--setup-timeout", "0s"}, "--setup-timeout"},
		{[]string{"--server", "127.0.0.1:3478", "--user", "u", "--password", "p", "--drain", "-1s"}, "--drain"},
		{[]string{"--bogus"}, "bogus"},
		{[]string{"stray"}, "unexpected argument"},
		{[]string{"probe", "--server", "127.0.0.1:3478"}, "--user"},
		{[]string{"probe", "--calls", "3"}, "calls"}, // load flags are not probe flags
	} {
		code, _, stderr := runCLI(t, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d mentioning %q", tc.args, code, stderr, exitUsage, tc.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	code, _, stderr := runCLI(t, "-h")
	if code != exitOK || !strings.Contains(stderr, "--max-loss") || !strings.Contains(stderr, "turnload probe") {
		t.Errorf("-h: exit %d, %q", code, stderr)
	}
	code, stdout, _ := runCLI(t, "--version")
	if code != exitOK || !strings.HasPrefix(stdout, "turnload ") {
		t.Errorf("--version: exit %d, %q", code, stdout)
	}
}

// TestUnreachableServer: nothing answers on the port, so every call fails
// to set up and the exit status says so, with the JSON still printed.
func TestUnreachableServer(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // a port that swallows everything
	code, stdout, stderr := runCLI(t, "--server", c.LocalAddr().String(), "--user", "u", "--password", "p",
		"--calls", "2", "--ramp", "0", "--duration", "100ms", "--setup-timeout", "500ms", "--json", "--quiet")
	if code != exitFailed || !strings.Contains(stderr, "2 of 2 calls failed") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var rep struct {
		Calls  struct{ Failed int }
		Errors map[string]int
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, stdout)
	}
	if rep.Calls.Failed != 2 || rep.Errors["allocate_timeout"] != 2 {
		t.Fatalf("report %+v", rep)
	}
	code, _, stderr = runCLI(t, "probe", "--server", c.LocalAddr().String(), "--user", "u", "--password", "p", "--setup-timeout", "500ms")
	if code != exitFailed || !strings.Contains(stderr, "allocate") {
		t.Fatalf("probe: exit %d, stderr %q", code, stderr)
	}
}
