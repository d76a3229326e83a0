package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/ctl"
	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// The admin API and the subcommands that call it, against real nodes.

// ctlRun runs supernode <args> as the binary would and returns its output.
func ctlRun(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(args, func(k string) string { return env[k] }, &out, &errOut, nil, nil)
	return out.String() + errOut.String(), err
}

// listAllocations is GET /v1/allocations?query.
func listAllocations(t *testing.T, tn *testNode, query string) []relay.Session {
	t.Helper()
	var resp api.AllocationsResponse
	if code := getJSON(t, http.MethodGet, "http://"+tn.http+"/v1/allocations?"+query, "", &resp); code != http.StatusOK {
		t.Fatalf("GET /v1/allocations?%s: %d", query, code)
	}
	return resp.Allocations
}

// TestAdminKillDuringTraffic kills one user's allocation while two users
// relay media: the victim's relay stops at once, the other's does not, and
// a client of the killed allocation sees its next request fail with 437 as
// it would after expiry. Run with the kernel path on (as root) and, in
// CI's second pass, with SUPERNODE_OFFLOAD=off.
func TestAdminKillDuringTraffic(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--user", "bob:pw", "--user", "carol:pw", "--allow-peer", "127.0.0.1",
		"--log-level", "info", "--log-format", "json")
	peer := mustListenUDP(t, "udp4", "127.0.0.1:0")
	looptest.Echo(peer)

	alice := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), tn.udp, "alice", "pw")
	bob := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), tn.udp, "bob", "pw")
	ar, err := alice.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	br, err := bob.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	if got := exchange(t, ar, peer.LocalAddr(), 20); got != 20 {
		t.Fatalf("alice: %d of 20 echoes before the kill", got)
	}
	if got := exchange(t, br, peer.LocalAddr(), 20); got != 20 {
		t.Fatalf("bob: %d of 20 echoes before the kill", got)
	}

	// With the kernel path on, the echoes took it (the channel is bound
	// and permitted), so the kill has to stop the kernel's relaying too.
	kernel := tn.counter("relay_packets", metrics.ClientToPeer, "udp", metrics.PathKernel)
	if tn.n.offload != nil && kernel == 0 {
		t.Fatal("the kernel path is on, yet it relayed nothing")
	}
	t.Logf("kernel path on: %v; packets it relayed client->peer: %v", tn.n.offload != nil, kernel)

	all := listAllocations(t, tn, "")
	if len(all) != 2 {
		t.Fatalf("listed %d allocations, want 2: %+v", len(all), all)
	}
	// A datagram is counted once the relay's write returns, which can be
	// after its echo is back.
	looptest.Eventually(t, "alice's 20 echoes counted", func() bool {
		as := listAllocations(t, tn, "user=alice")
		return len(as) == 1 && as[0].PacketsToPeer >= 20 && as[0].PacketsToClient >= 20
	})
	as := listAllocations(t, tn, "user=alice&transport=udp")
	if len(as) != 1 {
		t.Fatalf("user=alice: %+v", as)
	}
	a := as[0]
	msgLen := uint64(len("supernode test message 0000"))
	if a.User != "alice" || a.Transport != "udp" || a.Relay != ar.LocalAddr().String() || a.Permissions != 1 ||
		a.PacketsToPeer < 20 || a.BytesToPeer < 20*msgLen || a.PacketsToClient < 20 || a.BytesToClient < 20*msgLen ||
		!a.Expires.After(a.Created) {
		t.Fatalf("alice's allocation: %+v", a)
	}
	if got := listAllocations(t, tn, "transport=tcp"); len(got) != 0 {
		t.Fatalf("transport=tcp: %+v", got)
	}

	out, err := ctlRun(t, nil, "allocations", "--api", "http://"+tn.http)
	if err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, "bob") || !strings.Contains(out, "2 allocations") {
		t.Fatalf("supernode allocations: %v\n%s", err, out)
	}
	out, err = ctlRun(t, nil, "kill", "--api", "http://"+tn.http, "--user", "alice")
	if err != nil || !strings.Contains(out, "ended 1 allocations") {
		t.Fatalf("supernode kill: %v\n%s", err, out)
	}
	looptest.Eventually(t, "alice's allocation to go", func() bool { return len(listAllocations(t, tn, "user=alice")) == 0 })
	if got := exchange(t, ar, peer.LocalAddr(), 1); got != 0 {
		t.Fatal("alice's relay still relays after the kill")
	}
	if got := exchange(t, br, peer.LocalAddr(), 10); got != 10 {
		t.Fatalf("bob: %d of 10 echoes after alice's kill", got)
	}

	// A client's next request for a killed allocation fails as after expiry.
	raw := newRawClient(t, tn.udp)
	raw.allocate("carol", "pw")
	var kr api.KillResponse
	if code := getJSON(t, http.MethodDelete, "http://"+tn.http+"/v1/allocations?user=carol", "", &kr); code != 200 || kr.Killed != 1 {
		t.Fatalf("DELETE ?user=carol: %d %+v", code, kr)
	}
	looptest.Eventually(t, "carol's allocation to go", func() bool { return len(listAllocations(t, tn, "user=carol")) == 0 })
	if code := errCode(raw.do(stun.MethodRefresh, "carol", "pw", lifetime(600))); code != int(stun.CodeAllocMismatch) {
		t.Fatalf("Refresh after the kill: code %d, want 437", code)
	}

	// A record is logged just after its allocation leaves the list.
	var killed []map[string]any
	looptest.Eventually(t, "the session records of both kills", func() bool {
		killed = nil
		for _, l := range relaytest.SessionRecords(tn.logs.String()) {
			if l["reason"] == relay.EndKilled {
				killed = append(killed, l)
			}
		}
		return len(killed) >= 2
	})
	if len(killed) != 2 || killed[0]["user"] != "alice" || killed[0]["transport"] != "udp" ||
		killed[0]["packets_to_peer"].(float64) < 20 || killed[0]["client"] != a.Client {
		t.Fatalf("session records of the kills: %+v", killed)
	}
}

// TestAdminAPIErrors: every bad request names the parameter at fault, and
// the token guards the admin endpoints as it guards /v1/*.
func TestAdminAPIErrors(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--api-token", "tok")
	for _, tc := range []struct {
		method, path string
		token        string
		code         int
		want         string
	}{
		{"GET", "/v1/allocations", "", 401, "--api-token"},
		{"GET", "/v1/allocations?transport=sctp", "tok", 400, "transport"},
		{"GET", "/v1/allocations?usr=alice", "tok", 400, `unknown parameter "usr"`},
		{"GET", "/v1/allocations?call=a%20b", "tok", 400, "call"},
		{"DELETE", "/v1/allocations", "tok", 400, "user or call"},
		{"DELETE", "/v1/allocations?transport=udp", "tok", 400, `unknown parameter "transport"`},
		{"DELETE", "/v1/allocations?user=", "tok", 400, "user"},
		{"POST", "/v1/drain?now=1", "tok", 400, `unknown parameter "now"`},
		{"GET", "/v1/fleet", "", 401, "--api-token"},
		{"DELETE", "/v1/drain", "", 401, "--api-token"},
	} {
		var e struct{ Error string }
		code := getJSON(t, tc.method, "http://"+tn.http+tc.path, tc.token, &e)
		if code != tc.code || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s %s: %d %q, want %d naming %q", tc.method, tc.path, code, e.Error, tc.code, tc.want)
		}
	}
	out, err := ctlRun(t, nil, "allocations", "--api", "http://"+tn.http)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without a token: %v %s", err, out)
	}
	out, err = ctlRun(t, map[string]string{"SUPERNODE_API_TOKEN": "tok"}, "allocations", "--api", "http://"+tn.http, "--json")
	var resp api.AllocationsResponse
	if err != nil || json.Unmarshal([]byte(out), &resp) != nil || resp.Allocations == nil {
		t.Fatalf("--json with SUPERNODE_API_TOKEN: %v %s", err, out)
	}
	if _, err := ctlRun(t, nil, "allocations", "--api", "ftp://x"); err == nil || !strings.Contains(err.Error(), "--api") {
		t.Fatalf("bad --api: %v", err)
	}
}

// TestAdminDrainOverHTTP starts and cancels a drain without a signal.
func TestAdminDrainOverHTTP(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--log-level", "info", "--log-format", "json")
	ready := func() int {
		resp, err := http.Get("http://" + tn.http + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// A web page in a browser on the node's host cannot drain it (no token
	// is needed on loopback): a cross-site POST or DELETE is refused.
	for _, m := range []string{http.MethodPost, http.MethodDelete} {
		req, err := http.NewRequest(m, "http://"+tn.http+"/v1/drain", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		req.Header.Set("Origin", "http://evil.example")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("cross-site %s /v1/drain: %d, want 403", m, resp.StatusCode)
		}
	}
	if ready() != http.StatusOK {
		t.Fatal("a cross-site POST /v1/drain drained the node")
	}
	out, err := ctlRun(t, nil, "drain", "--api", "http://"+tn.http)
	if err != nil || !strings.Contains(out, "draining") {
		t.Fatalf("supernode drain: %v %s", err, out)
	}
	if ready() != http.StatusServiceUnavailable {
		t.Fatal("/readyz is not 503 while draining")
	}
	if code := errCode(newRawClient(t, tn.udp).do(stun.MethodAllocate, "alice", "pw", requestedTransport(17))); code != int(stun.CodeInsufficientCapacity) {
		t.Fatalf("Allocate while draining: code %d, want 508", code)
	}
	var d api.DrainResponse
	if code := getJSON(t, http.MethodDelete, "http://"+tn.http+"/v1/drain", "", &d); code != 200 || d.Draining {
		t.Fatalf("DELETE /v1/drain: %d %+v", code, d)
	}
	if ready() != http.StatusOK {
		t.Fatal("/readyz is not 200 after the drain was cancelled")
	}
	newRawClient(t, tn.udp).allocate("alice", "pw")
	out, err = ctlRun(t, nil, "drain", "--status", "--api", "http://"+tn.http)
	if err != nil || !strings.Contains(out, "not draining") || !strings.Contains(out, "1 allocations") {
		t.Fatalf("supernode drain --status: %v %s", err, out)
	}
	if _, err := ctlRun(t, nil, "drain", "--cancel", "--api", "http://"+tn.http); err != nil {
		t.Fatal(err)
	}
	// A node stopped while draining ends what is left as drained.
	if code := getJSON(t, http.MethodPost, "http://"+tn.http+"/v1/drain", "", &d); code != 200 || !d.Draining || d.Allocations != 1 {
		t.Fatalf("POST /v1/drain: %d %+v", code, d)
	}
	tn.stop()
	if l := relaytest.SessionRecords(tn.logs.String()); len(l) != 1 || l[0]["reason"] != relay.EndDrained || l[0]["user"] != "alice" {
		t.Fatalf("session records after a drained stop: %v", l)
	}
}

// TestAdminCannotCancelSignalDrain: a drain SIGTERM started ends in an
// exit, so the API and the CLI refuse to cancel it with 409, saying why.
func TestAdminCannotCancelSignalDrain(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw")
	newRawClient(t, tn.udp).allocate("alice", "pw") // keeps the node from exiting at once
	tn.sigs <- syscall.SIGTERM
	looptest.Eventually(t, "the SIGTERM drain", func() bool {
		var d api.DrainResponse
		return getJSON(t, http.MethodGet, "http://"+tn.http+"/v1/drain", "", &d) == 200 && d.Draining
	})
	var e struct {
		Error string `json:"error"`
	}
	if code := getJSON(t, http.MethodDelete, "http://"+tn.http+"/v1/drain", "", &e); code != http.StatusConflict || !strings.Contains(e.Error, "SIGTERM") {
		t.Fatalf("DELETE /v1/drain during a SIGTERM drain: %d %q, want 409 naming SIGTERM", code, e.Error)
	}
	if out, err := ctlRun(t, nil, "drain", "--cancel", "--api", "http://"+tn.http); err == nil || !strings.Contains(err.Error(), "DELETE /v1/drain: 409") {
		t.Fatalf("supernode drain --cancel during a SIGTERM drain: %v %s", err, out)
	}
	var d api.DrainResponse
	if code := getJSON(t, http.MethodGet, "http://"+tn.http+"/v1/drain", "", &d); code != 200 || !d.Draining {
		t.Fatalf("after the refused cancel: %d %+v", code, d)
	}
}

// TestAdminFleetView: each member of a three-node fleet lists all three,
// and sees one drained over HTTP as draining.
func TestAdminFleetView(t *testing.T) {
	nodes := startFleetNodes(t, 3)
	var d api.DrainResponse
	if code := getJSON(t, http.MethodPost, "http://"+nodes[2].http+"/v1/drain", "", &d); code != 200 || !d.Draining {
		t.Fatalf("POST /v1/drain: %d %+v", code, d)
	}
	looptest.Eventually(t, "node-0 to see node-2 draining", func() bool {
		var f api.FleetResponse
		getJSON(t, http.MethodGet, "http://"+nodes[0].http+"/v1/fleet", "", &f)
		return len(f.Members) == 3 && f.Members[2].State == "draining"
	})
	var f api.FleetResponse
	getJSON(t, http.MethodGet, "http://"+nodes[0].http+"/v1/fleet", "", &f)
	for i, m := range f.Members {
		if m.ID != []string{"node-0", "node-1", "node-2"}[i] || m.Self != (i == 0) || m.Host == "" || m.Version != version ||
			(i < 2 && m.State != "active") {
			t.Fatalf("member %d: %+v", i, m)
		}
	}
	out, err := ctlRun(t, nil, "fleet", "--api", "http://"+nodes[1].http)
	if err != nil || !strings.Contains(out, "node-1 (this node)") || !strings.Contains(out, "draining") || !strings.Contains(out, "3 members") {
		t.Fatalf("supernode fleet: %v\n%s", err, out)
	}
}

// TestCredentialsSubcommand mints credentials offline that a node with the
// same secret accepts.
func TestCredentialsSubcommand(t *testing.T) {
	tn := startNode(t, "--auth-secret", "a-long-enough-secret")
	out, err := ctlRun(t, nil, "credentials", "--secret", "a-long-enough-secret", "--user", "dave", "--ttl", "1h")
	if err != nil {
		t.Fatal(err, out)
	}
	f := strings.Fields(out)
	if len(f) != 4 || f[0] != "-u" || f[2] != "-w" || !strings.HasSuffix(f[1], ":dave") {
		t.Fatalf("credentials: %q", out)
	}
	newRawClient(t, tn.udp).allocate(f[1], f[3])
	if got := listAllocations(t, tn, "user=dave"); len(got) != 1 {
		t.Fatalf("dave's allocation: %+v", got)
	}

	// The secret from the environment is split as the node splits it.
	out, err = ctlRun(t, map[string]string{"SUPERNODE_AUTH_SECRET": " a-long-enough-secret , old"}, "credentials", "--user", "erin",
		"--call", "call-1", "--url", "turn:"+tn.udp+"?transport=udp")
	var ice api.IceServersResponse
	if err != nil || json.Unmarshal([]byte(out), &ice) != nil || len(ice.IceServers) != 1 || ice.TTL != 86400 ||
		!strings.HasSuffix(ice.IceServers[0].Username, ":c=call-1~erin") {
		t.Fatalf("credentials --url: %v %s", err, out)
	}
	raw := newRawClient(t, tn.udp)
	raw.allocate(ice.IceServers[0].Username, ice.IceServers[0].Credential)
	if got := listAllocations(t, tn, "call=call-1"); len(got) != 1 || got[0].User != "erin" || got[0].Call != "call-1" {
		t.Fatalf("call=call-1: %+v", got)
	}
}

// TestHelpListsSubcommands: supernode --help names every subcommand.
func TestHelpListsSubcommands(t *testing.T) {
	var out bytes.Buffer
	_, _ = parseOptions([]string{"--help"}, func(string) string { return "" }, &out)
	for _, n := range ctl.Commands() {
		if !strings.Contains(out.String(), "  "+n+" ") {
			t.Errorf("--help does not list %s:\n%s", n, out.String())
		}
	}
}
