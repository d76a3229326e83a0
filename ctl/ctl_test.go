package ctl

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/relay"
)

func TestTraffic(t *testing.T) {
	for _, tc := range []struct {
		bytes, packets uint64
		want           string
	}{
		{0, 0, "0B/0p"},
		{1023, 3, "1023B/3p"},
		{1024, 4, "1.0KiB/4p"},
		{5 << 20, 5000, "5.0MiB/5000p"},
		{3 << 40, 1, "3.0TiB/1p"},
		{5 << 50, 1, "5120.0TiB/1p"},
	} {
		if got := traffic(tc.bytes, tc.packets); got != tc.want {
			t.Errorf("traffic(%d, %d) = %q, want %q", tc.bytes, tc.packets, got, tc.want)
		}
	}
}

func TestRoundDuration(t *testing.T) {
	if got := roundDuration(90*time.Second + 400*time.Millisecond); got != "1m30s" {
		t.Errorf("got %q", got)
	}
	if got := roundDuration(-time.Second); got != "-" {
		t.Errorf("a time past: %q", got)
	}
}

func TestTables(t *testing.T) {
	var out bytes.Buffer
	c := &Client{Out: &out}
	now := time.Now()
	err := c.allocationsTable(api.AllocationsResponse{Allocations: []relay.Session{
		{User: "alice", Call: "room", Transport: "udp", Client: "192.0.2.1:5000", Relay: "10.0.0.1:50000",
			RelayProtocol: "udp", Expires: now.Add(time.Minute + 500*time.Millisecond), AgeSeconds: 61, Permissions: 2, Channels: 1},
		{User: "bob", Transport: "tcp", Client: "192.0.2.2:5001", Relay: "10.0.0.1:50001", RelayProtocol: "tcp",
			Expires: now.Add(-time.Second)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "USER") || lines[3] != "2 allocations" {
		t.Fatalf("allocations table:\n%s", out.String())
	}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != "alice room udp 192.0.2.1:5000 10.0.0.1:50000 1m1s 1m0s 2 1 0B/0p 0B/0p" {
		t.Errorf("alice's row %q", f)
	}
	if f := strings.Fields(lines[2]); f[1] != "-" || f[4] != "10.0.0.1:50001/tcp" || f[6] != "-" {
		t.Errorf("bob's row %q: no call, a TCP relay, expired", f)
	}

	out.Reset()
	if err := c.fleetTable(api.FleetResponse{Members: []api.Member{
		{ID: "a", Self: true, State: "active", Host: "turn.example", Allocations: 3, LoadShare: 0.75, Capacity: 1,
			BitsPerSecond: 2_500_000, Version: "v1"},
		{ID: "b", State: "draining", Zone: "eu", Host: "10.0.0.2", Allocations: 1, LoadShare: 0.25, Capacity: 2},
	}}); err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || lines[3] != "2 members" {
		t.Fatalf("fleet table:\n%s", out.String())
	}
	if got := strings.Join(strings.Fields(lines[1]), " "); got != "a (this node) active - turn.example 3 75% 1 2.5 v1" {
		t.Errorf("a's row %q", got)
	}
	if got := strings.Join(strings.Fields(lines[2]), " "); got != "b draining eu 10.0.0.2 1 25% 2 0.0" {
		t.Errorf("b's row %q", got)
	}
}

func TestClientAPIErrors(t *testing.T) {
	// A port nobody listens on: bound, then closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	_ = ln.Close()
	for api, want := range map[string]string{
		"127.0.0.1:9641":       `--api "127.0.0.1:9641": want http://host:port or https://host:port`,
		"ftp://127.0.0.1:9641": `--api "ftp://127.0.0.1:9641": want http://host:port`,
		"http://":              `--api "http://": want http://host:port`,
		closed:                 "--api " + closed + ": ",
	} {
		c := &Client{API: api, Timeout: 5 * time.Second, Out: &bytes.Buffer{}}
		if err := c.Fleet(); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("--api %s: %v, want %s", api, err, want)
		}
	}
}

func TestCredentials(t *testing.T) {
	var out bytes.Buffer
	if err := Credentials(&out, "s3cret", "alice", time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out.String())
	if len(f) != 4 || f[0] != "-u" || f[2] != "-w" || !strings.HasSuffix(f[1], ":alice") {
		t.Fatalf("uclient form %q", out.String())
	}
	if f[3] != allocation.RESTPassword("s3cret", f[1]) {
		t.Fatalf("password %q is not the REST password of %q", f[3], f[1])
	}
	expiry, id, ok := allocation.ParseRESTUsername(f[1])
	if !ok || id != "alice" || time.Until(expiry) > time.Hour || time.Until(expiry) < 59*time.Minute {
		t.Fatalf("username %q: expiry %v", f[1], expiry)
	}

	out.Reset()
	if err := Credentials(&out, "s3cret", "c=room~bob", 2*time.Hour, []string{"turn:192.0.2.1:3478?transport=udp"}); err != nil {
		t.Fatal(err)
	}
	var ice api.IceServersResponse
	if err := json.Unmarshal(out.Bytes(), &ice); err != nil || len(ice.IceServers) != 1 || ice.TTL != 7200 {
		t.Fatalf("JSON form %v: %s", err, out.String())
	}
	s := ice.IceServers[0]
	if len(s.URLs) != 1 || !strings.HasSuffix(s.Username, ":c=room~bob") || s.Credential != allocation.RESTPassword("s3cret", s.Username) {
		t.Fatalf("ice server %+v", s)
	}
}
