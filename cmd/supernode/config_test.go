package main

import (
	"bytes"
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "supernode.conf")
	if err := os.WriteFile(conf, []byte(`# a comment
realm = file.example
min-port = 50000 # trailing comment
max-port 50100
user = a:1
user = b:2
allow-peer = 10.0.0.0/8
drain-timeout = 2m
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"SUPERNODE_CONFIG":     conf,
		"SUPERNODE_MIN_PORT":   "50010",
		"SUPERNODE_DENY_PEER":  "8.8.8.0/24, 1.1.1.0/24",
		"SUPERNODE_USER_QUOTA": "4",
	}
	o, err := parseOptions([]string{"--realm", "flag.example"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case o.relay.Realm != "flag.example":
		t.Errorf("realm %q: the command line must win", o.relay.Realm)
	case o.relay.MinPort != 50010:
		t.Errorf("min-port %d: the environment must beat the file", o.relay.MinPort)
	case o.relay.MaxPort != 50100:
		t.Errorf("max-port %d: from the file (space-separated form)", o.relay.MaxPort)
	case strings.Join(o.creds.Users, ",") != "a:1,b:2":
		t.Errorf("users %v: repeated lines make a list", o.creds.Users)
	case strings.Join(o.denyPeer, ",") != "8.8.8.0/24,1.1.1.0/24":
		t.Errorf("deny-peer %v: comma-separated in the environment", o.denyPeer)
	case o.table.UserQuota != 4 || o.drainTimeout != 2*time.Minute:
		t.Errorf("user-quota %d drain-timeout %v", o.table.UserQuota, o.drainTimeout)
	case strings.Join(o.listen, ",") != "0.0.0.0:3478":
		t.Errorf("listen %v: want the default", o.listen)
	}
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.conf")
	_ = os.WriteFile(bad, []byte("no-such-flag = 1\n"), 0o600)
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--min-port", "0"}, nil, "--min-port"},
		{[]string{"--min-port", "60000", "--max-port", "50000"}, nil, "--max-port"},
		{[]string{"--tls-listen", ":5349"}, nil, "--cert"},
		{[]string{"--user", "nopassword"}, nil, "--user"},
		{[]string{"--config", bad}, nil, "no-such-flag"},
		{nil, map[string]string{"SUPERNODE_MAX_BPS": "lots"}, "SUPERNODE_MAX_BPS"},
		{[]string{"--log-format", "xml"}, nil, "--log-format"},
		{[]string{"stray"}, nil, "stray"},
		{[]string{"--public-host", "turn.example.com:443"}, nil, "--public-host"},
		{[]string{"--public-host", "[2001:db8::1]"}, nil, "--public-host"},
		{[]string{"--public-host", "bad_name.example"}, nil, "--public-host"},
		{[]string{"--permission-lifetime", "500ms"}, nil, "--permission-lifetime"},
		{nil, map[string]string{"SUPERNODE_CHANNEL_LIFETIME": "0s"}, "--channel-lifetime"},
		{[]string{"--allocation-lifetime", "-1m"}, nil, "--allocation-lifetime"},
	} {
		_, err := parseOptions(tc.args, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: error %v, want one naming %s", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	_, err := parseOptions([]string{"--help"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	fs := newFlagSet(&options{}, &bytes.Buffer{})
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(out.String(), "-"+f.Name) {
			t.Errorf("--help does not mention --%s", f.Name)
		}
		if len(f.Usage) < 15 {
			t.Errorf("--%s has no real description", f.Name)
		}
	})
	if !strings.Contains(out.String(), "SUPERNODE_") {
		t.Error("--help does not explain the environment variables")
	}
}

func TestStartErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-listen", "0.0.0.0:0"}, "--api-token"},
		{[]string{"--relay-ip", "not-an-ip"}, "--relay-ip"},
		{[]string{"--relay-ip", "127.0.0.1", "--relay-ip", "127.0.0.2"}, "--relay-ip"},
		{[]string{"--allow-peer", "10.0.0.0/99"}, "--allow-peer"},
		{[]string{"--listen", "example.com:3478"}, "--listen"},
		{[]string{"--cert", "/nonexistent.pem", "--key", "/nonexistent.key"}, "--cert"},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--node-id", "edge:1"}, "--node-id"},
		{[]string{"--join", "127.0.0.1:7946"}, "--cluster-listen"},
		{[]string{"--cluster-listen", "0.0.0.0:0", "--cluster-key", "AAAAAAAAAAAAAAAAAAAAAA=="}, "--cluster-listen"},
		{[]string{"--cluster-listen", "192.0.2.1:0"}, "--cluster-key"},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--cluster-key", "c2hvcnQ="}, "--cluster-key"},
	} {
		args := append([]string{"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--user", "a:b"}, tc.args...)
		err := run(args, func(string) string { return "" }, &bytes.Buffer{}, &bytes.Buffer{}, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}

// TestListenPortTakenForTCP: a --listen port free for UDP but taken for TCP
// is an error naming --listen (with port 0 another port is tried instead).
func TestListenPortTakenForTCP(t *testing.T) {
	var tl net.Listener
	for tl == nil { // a TCP port whose UDP twin is free
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if u, err := net.ListenPacket("udp4", l.Addr().String()); err == nil {
			_ = u.Close()
			tl = l
		} else {
			defer l.Close() // keep it, so the next try gets another port
		}
	}
	defer tl.Close()
	args := []string{"--listen", tl.Addr().String(), "--http-listen", "127.0.0.1:0", "--user", "a:b"}
	err := run(args, func(string) string { return "" }, &bytes.Buffer{}, &bytes.Buffer{}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "--listen") || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("error %v, want --listen: address in use", err)
	}
}
