package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/load"
	"github.com/supernode/supernode/load/loadtest"
	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
)

// startFleetNodes runs n in-process nodes joined over memberlist on
// loopback, sharing one REST secret, and waits until each sees all.
func startFleetNodes(t *testing.T, n int, extra ...string) []*testNode {
	t.Helper()
	return startFleetNodesEach(t, n, func(int) []string { return extra })
}

// startFleetNodesEach is startFleetNodes with each node's own extra flags.
func startFleetNodesEach(t *testing.T, n int, extra func(i int) []string) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := range n {
		args := append([]string{"--auth-secret", "fleet-secret", "--cluster-listen", "127.0.0.1:0",
			"--node-id", fmt.Sprintf("node-%d", i)}, extra(i)...)
		if i > 0 {
			args = append(args, "--join", nodes[0].n.fleet.Cluster().Addr())
		}
		nodes = append(nodes, startNode(t, args...))
	}
	looptest.Eventually(t, "every node to see the whole fleet", func() bool {
		for _, tn := range nodes {
			if len(tn.n.fleet.Cluster().Nodes()) != n {
				return false
			}
		}
		return true
	})
	return nodes
}

// waitFleetIdle waits until every node sees every member report no
// allocations.
func waitFleetIdle(t *testing.T, nodes []*testNode) {
	t.Helper()
	looptest.Eventually(t, "every member to report no allocations", func() bool {
		for _, tn := range nodes {
			for _, m := range tn.n.fleet.Cluster().Nodes() {
				if m.Meta.Allocations != 0 {
					return false
				}
			}
		}
		return true
	})
}

// callOwnedBy finds a call id that the fleet places on node id.
func callOwnedBy(t *testing.T, tn *testNode, id string) string {
	t.Helper()
	for i := range 1000 {
		call := fmt.Sprintf("call-%d", i)
		if o, _ := tn.n.fleet.Cluster().Owner(call, ""); o.ID == id {
			return call
		}
	}
	t.Fatalf("no call placed on %s in 1000 tries", id)
	return ""
}

// crossHostCall puts the two legs of a call as user on nodes a and b, the
// first leg's client on 127.0.0.1 and the second's on 127.0.0.2 (b's
// address: the fleet's two hosts), gives each leg a permission for the
// other's relayed address once b and a allow it (the fleet peer set
// refreshes every second), and checks that echoes cross between the two.
// It returns the first leg's client and relayed connection; everything
// closes when the test ends.
func crossHostCall(t *testing.T, a, b *testNode, user, pass string) (*turn.Client, net.PacketConn) {
	t.Helper()
	ca := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), a.udp, user, pass)
	cb := newClient(t, mustListenUDP(t, "udp4", "127.0.0.2:0"), b.udp, user, pass)
	ra, err := ca.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ra.Close() })
	rb, err := cb.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rb.Close() })
	looptest.Eventually(t, "each node to allow the other's relay addresses", func() bool {
		return ca.CreatePermission(rb.LocalAddr()) == nil && cb.CreatePermission(ra.LocalAddr()) == nil
	})
	looptest.Echo(rb)
	if got := exchange(t, ra, rb.LocalAddr(), 10); got < 9 {
		t.Fatalf("%d of 10 echoes came back across the two nodes", got)
	}
	return ca, ra
}

func TestFleetPlacesCallsOnOneNode(t *testing.T) {
	nodes := startFleetNodes(t, 2)
	a, b := nodes[0], nodes[1]
	call := callOwnedBy(t, a, "node-1")
	// Any node answers with the owner's URLs and a username naming the call.
	for _, tn := range nodes {
		var r api.IceServersResponse
		if code := getJSON(t, "GET", "http://"+tn.http+"/v1/ice-servers?user=alice&call="+call, "", &r); code != http.StatusOK {
			t.Fatalf("ice-servers: %d", code)
		}
		urls := strings.Join(r.IceServers[0].URLs, " ")
		if !strings.Contains(urls, "turn:"+b.udp+"?transport=udp") {
			t.Fatalf("asked %s for a call of node-1 (%s): urls %s", tn.http, b.udp, urls)
		}
		if c, _, node, u, ok := cluster.ParseCallUser(r.IceServers[0].Username); !ok || c != call || node != "node-1" || u != "alice" {
			t.Fatalf("username %q does not carry the call", r.IceServers[0].Username)
		}
	}
	if code := getJSON(t, "GET", "http://"+a.http+"/v1/ice-servers?user=alice&call=bad~id", "", nil); code != http.StatusBadRequest {
		t.Fatalf("bad call id: %d, want 400", code)
	}
	// A user id cannot smuggle in a placement (and so pick its node).
	if code := getJSON(t, "GET", "http://"+a.http+"/v1/ice-servers?user=c%3Droom%2Bnode-1~mallory", "", nil); code != http.StatusBadRequest {
		t.Fatalf("user id shaped like a placed call: %d, want 400", code)
	}

	// turnload through node-0's endpoint: every call's two legs land on the
	// call's owner, directly.
	// 16 calls: loads are gossiped once a second, so one run's placements
	// all see the same loads, and each call lands on node-1 with
	// probability 1/2; 16 of them all on node-0 is a 1-in-65,536 event.
	cfg := loadtest.SmallLoad("")
	cfg.Username, cfg.Password, cfg.Calls = "", "", 16
	cfg.ICEServers = "http://" + a.http + "/v1/ice-servers"
	rep := loadtest.Run(t, cfg)
	loadtest.CheckClean(t, rep, cfg.Calls)
	if rep.Setup.Redirects != 0 {
		t.Fatalf("redirects %d, want none when clients use the URLs they were given", rep.Setup.Redirects)
	}
	created := a.counter("allocations_created", "udp") + b.counter("allocations_created", "udp")
	if created != float64(2*cfg.Calls) {
		t.Fatalf("allocations created %v, want %d", created, 2*cfg.Calls)
	}

	// Sent to the wrong node on purpose: the calls node-1 owns are
	// redirected there (300 Try Alternate), the others are served by node-0.
	// First the first run's allocations must be gone from the gossiped
	// loads: while one node still reports them, bounded load skips it.
	waitFleetIdle(t, nodes)
	before := [2]float64{a.counter("allocations_created", "udp"), b.counter("allocations_created", "udp")}
	cfg.Server = a.udp
	rep = loadtest.Run(t, cfg)
	loadtest.CheckClean(t, rep, cfg.Calls)
	gotB := b.counter("allocations_created", "udp") - before[1]
	gotA := a.counter("allocations_created", "udp") - before[0]
	if float64(rep.Setup.Redirects) != gotB || gotA+gotB != float64(2*cfg.Calls) || gotB == 0 {
		t.Fatalf("redirects %d; node-0 created %v, node-1 %v allocations", rep.Setup.Redirects, gotA, gotB)
	}
	if got := testutilRedirects(a); got != gotB {
		t.Fatalf("node-0 counted %v redirects, turnload followed %v", got, gotB)
	}
}

// TestFleetTLSRedirectNamesTheCertificate: over TLS the 300 Try Alternate
// carries the owner's --public-host as ALTERNATE-DOMAIN (RFC 8489 §14.16)
// and turnload checks the owner's certificate against it. node-1's
// certificate names only b.fleet.test, not its address, so the redirected
// legs set up only if the name was sent and used. Over UDP, where nothing
// verifies a certificate, no ALTERNATE-DOMAIN is sent.
func TestFleetTLSRedirectNamesTheCertificate(t *testing.T) {
	certA, keyA := writeTestCert(t)
	certB, keyB := writeCert(t, []string{"b.fleet.test"}, nil)
	nodes := startFleetNodesEach(t, 2, func(i int) []string {
		if i == 0 {
			return []string{"--tls-listen", "127.0.0.1:0", "--cert", certA, "--key", keyA}
		}
		return []string{"--tls-listen", "127.0.0.1:0", "--cert", certB, "--key", keyB, "--public-host", "b.fleet.test"}
	})
	a, b := nodes[0], nodes[1]
	roots := x509.NewCertPool()
	for _, f := range []string{certA, certB} {
		pem, err := os.ReadFile(f)
		if err != nil || !roots.AppendCertsFromPEM(pem) {
			t.Fatalf("test certificate %s: %v", f, err)
		}
	}

	// A redirect over UDP names the server only (asked first, while both
	// nodes are idle: bounded load may skip a node that still holds the
	// TLS run's allocations).
	call := callOwnedBy(t, a, "node-1")
	var r api.IceServersResponse
	if code := getJSON(t, "GET", "http://"+a.http+"/v1/ice-servers?user=alice&call="+call, "", &r); code != http.StatusOK {
		t.Fatalf("ice-servers: %d", code)
	}
	c := newRawClient(t, a.udp)
	resp := c.do(stun.MethodAllocate, r.IceServers[0].Username, r.IceServers[0].Credential, requestedTransport(17))
	if code := errCode(resp); code != int(stun.CodeTryAlternate) {
		t.Fatalf("allocate at the wrong node over UDP: code %d, want 300", code)
	}
	var alt stun.AlternateServer
	if err := alt.GetFrom(resp); err != nil || net.JoinHostPort(alt.IP.String(), strconv.Itoa(alt.Port)) != b.udp {
		t.Fatalf("ALTERNATE-SERVER %v (%v), want node-1's %s", alt, err, b.udp)
	}
	if resp.Contains(stun.AttrAlternateDomain) {
		t.Fatal("ALTERNATE-DOMAIN sent over UDP")
	}

	// Every call sent to node-0 over TLS: node-1's calls are redirected.
	cfg := loadtest.SmallLoad(a.tls)
	cfg.Username, cfg.Password, cfg.Calls = "", "", 20
	cfg.ICEServers = "http://" + a.http + "/v1/ice-servers"
	cfg.Transport, cfg.TLS = "tls", &tls.Config{RootCAs: roots}
	before := b.counter("allocations_created", "tls")
	rep := loadtest.Run(t, cfg)
	loadtest.CheckClean(t, rep, cfg.Calls)
	gotB := b.counter("allocations_created", "tls") - before
	if rep.Setup.Redirects == 0 || float64(rep.Setup.Redirects) != gotB {
		t.Fatalf("redirects %d, node-1 created %v TLS allocations", rep.Setup.Redirects, gotB)
	}
}

func TestFleetDrainingNodeGetsNoNewCalls(t *testing.T) {
	nodes := startFleetNodes(t, 2)
	a, b := nodes[0], nodes[1]
	call := callOwnedBy(t, a, "node-1")
	b.sigs <- syscall.SIGTERM // drain node-1
	looptest.Eventually(t, "node-0 to see node-1 draining", func() bool {
		for _, m := range a.n.fleet.Cluster().Nodes() {
			if m.ID == "node-1" {
				return m.Meta.Draining
			}
		}
		return false
	})
	var r api.IceServersResponse
	if code := getJSON(t, "GET", "http://"+a.http+"/v1/ice-servers?user=alice&call="+call, "", &r); code != http.StatusOK {
		t.Fatalf("ice-servers: %d", code)
	}
	if urls := strings.Join(r.IceServers[0].URLs, " "); !strings.Contains(urls, a.udp) {
		t.Fatalf("call placed on the draining node: %s", urls)
	}
	// An Allocate for that call at node-0 is served there, not redirected
	// to the draining node.
	res, err := load.Probe(t.Context(), load.Config{Server: a.udp, Username: r.IceServers[0].Username,
		Password: r.IceServers[0].Credential, SetupTimeout: 5 * time.Second})
	if err != nil && !strings.Contains(err.Error(), "relay") {
		t.Fatal(err)
	}
	if res != nil && res.Redirected {
		t.Fatal("redirected to a draining node")
	}
}

// TestFleetCrossHostLegs: two legs of a call on two members (each on its own
// loopback address, as on two hosts of a private network) relay to each
// other's relayed address although the peer policy refuses loopback, and
// the bytes are counted as cross-host; other loopback addresses stay refused.
func TestFleetCrossHostLegs(t *testing.T) {
	a := startNode(t, "--user", "alice:pw", "--cluster-listen", "127.0.0.1:0", "--node-id", "a")
	b := startNode(t, "--user", "alice:pw", "--cluster-listen", "127.0.0.2:0", "--node-id", "b",
		"--listen", "127.0.0.2:0", "--relay-ip", "127.0.0.2", "--join", a.n.fleet.Cluster().Addr())
	looptest.Eventually(t, "both members to list the other's relay address", func() bool {
		return len(a.n.fleet.Cluster().Nodes()) == 2 && len(b.n.fleet.Cluster().Nodes()) == 2
	})
	ca, ra := crossHostCall(t, a, b, "alice", "pw")
	for _, tn := range []*testNode{a, b} {
		tn.n.m.Refresh() // the kernel path's counts
		for _, dir := range metrics.Directions {
			if got := testutil.ToFloat64(tn.n.m.CrossHostBytes.For(dir)); got <= 0 {
				t.Errorf("%s: cross-host bytes %s = %v", tn.udp, dir, got)
			}
		}
	}
	// Only the member's relay ports: a service on its address outside them
	// is not reachable through node a, although the permission for the
	// address exists.
	var svc *net.UDPConn
	for port := 20000; port < 20100 && svc == nil; port++ {
		svc, _ = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: port})
	}
	if svc == nil {
		t.Fatal("no free port on 127.0.0.2 below the relay range")
	}
	defer svc.Close()
	deniedBefore := a.counter("dropped", metrics.DropPeerDenied)
	for range 3 {
		if _, err := ra.WriteTo([]byte("to the member's other service"), svc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	_ = svc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, _, err := svc.ReadFrom(make([]byte, 100)); err == nil {
		t.Fatalf("a datagram (%d bytes) reached a non-relay port of a fleet member through the relay", n)
	}
	if got := a.counter("dropped", metrics.DropPeerDenied) - deniedBefore; got < 3 {
		t.Fatalf("dropped{peer_denied} rose by %v, want 3", got)
	}
	// Not the whole range: another loopback address is still refused.
	if err := ca.CreatePermission(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 3), Port: 4000}); err == nil {
		t.Fatal("127.0.0.3 (no fleet member) was allowed as a peer")
	}
}
