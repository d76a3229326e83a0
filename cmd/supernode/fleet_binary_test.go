package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/load"
)

// freePortOn returns a port free a moment ago on ip for UDP and TCP.
func freePortOn(t *testing.T, ip string) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp4", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		if u, err := net.ListenPacket("udp4", addr); err == nil {
			_ = u.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

type fleetProc struct {
	id, listen, http string
	cmd              *exec.Cmd
	exited           chan error
	logs             *syncWriter
}

// TestBinaryFleet runs three real supernode processes, each on its own
// loopback address as on three hosts, joined by gossip: calls placed
// through /v1/ice-servers land with both legs on one node and flow; a node
// killed with SIGKILL stops being chosen; a node drained with SIGTERM in the
// middle of a load run drops none of its calls.
func TestBinaryFleet(t *testing.T) {
	bin := buildBinary(t)
	var nodes []*fleetProc
	var seed string
	for i := range 3 {
		ip := fmt.Sprintf("127.0.0.%d", i+1)
		p := &fleetProc{id: fmt.Sprintf("n%d", i+1), listen: freePortOn(t, ip), http: freePortOn(t, ip),
			exited: make(chan error, 1), logs: &syncWriter{}}
		gossip := freePortOn(t, ip)
		args := []string{"--node-id", p.id, "--listen", p.listen, "--relay-ip", ip, "--http-listen", p.http,
			"--cluster-listen", gossip, "--auth-secret", "fleet-secret", "--realm", "fleet.test",
			"--log-level", "info", "--drain-timeout", "1m"}
		if seed != "" {
			args = append(args, "--join", seed)
		} else {
			seed = gossip
		}
		p.cmd = exec.Command(bin, args...)
		p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.exited <- p.cmd.Wait() }()
		t.Cleanup(func() {
			_ = p.cmd.Process.Kill()
			<-p.exited
			if t.Failed() {
				t.Logf("%s log:\n%s", p.id, p.logs.String())
			}
		})
		nodes = append(nodes, p)
		waitFor(t, p.id+" to serve", func() bool {
			resp, err := http.Get("http://" + p.http + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	waitFor(t, "every node to see three alive members", func() bool {
		for _, p := range nodes {
			if scrape(t, p.http, `supernode_fleet_members{state="alive"}`) != 3 {
				return false
			}
		}
		return true
	})
	created := func(p *fleetProc) float64 {
		return scrape(t, p.http, `supernode_allocations_created_total{transport="udp"}`)
	}
	crossHost := func(p *fleetProc) float64 {
		return scrape(t, p.http, `supernode_fleet_cross_host_bytes_total{direction="client_to_peer"}`)
	}

	// 1,000 calls through one node's /v1/ice-servers: every call's two
	// legs on one node (no cross-host traffic, no redirect), media flowing.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := load.Config{ICEServers: "http://" + nodes[0].http + "/v1/ice-servers", Calls: 1000, Ramp: 250,
		PPS: 5, Duration: 2 * time.Second, Drain: 500 * time.Millisecond}
	rep, err := load.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Media flows. On a shared 2-core machine three relays and the loader
	// can lose a few tenths of a percent of the ~36,000 packets to full
	// socket buffers while 2,000 allocations are set up; loss is not what
	// this checks (the benchmark measures it).
	if rep.Calls.Established != 1000 || rep.Packets.LossPercent > 1 || rep.Packets.Received == 0 || rep.Setup.Redirects != 0 {
		t.Fatalf("calls %+v packets %+v redirects %d errors %v", rep.Calls, rep.Packets, rep.Setup.Redirects, rep.ErrorSamples)
	}
	total := 0.0
	for _, p := range nodes {
		c := created(p)
		if c < 2000/3/2 { // each should hold about a third; far less means placement is broken
			t.Errorf("%s created %v allocations of 2000", p.id, c)
		}
		if x := crossHost(p); x != 0 {
			t.Errorf("%s relayed %v bytes to other members: legs were split", p.id, x)
		}
		total += c
	}
	if total != 2000 {
		t.Fatalf("allocations created %v, want 2000", total)
	}

	// Sent to the wrong node on purpose (--server n2 for calls placed by
	// n1's endpoint): the calls owned elsewhere are redirected and land on
	// their owner, counted on both sides.
	// First every member must see the 1,000 calls' allocations gone: while
	// some still report theirs, bounded load skips them and could place
	// all 30 calls on n2 (then none is redirected). A node's share of the
	// fleet's load reads 1 when it sees no allocations anywhere.
	waitFor(t, "every member to see the fleet idle", func() bool {
		for _, p := range nodes {
			if scrape(t, p.http, "supernode_fleet_load_share_ratio") != 1 {
				return false
			}
		}
		return true
	})
	wrong := cfg
	wrong.Server, wrong.Calls, wrong.Ramp = nodes[1].listen, 30, 100
	rep, err = load.Run(ctx, wrong)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Calls.Established != 30 || rep.Setup.Redirects == 0 || rep.Packets.LossPercent > 1 {
		t.Fatalf("wrong node: calls %+v redirects %d packets %+v", rep.Calls, rep.Setup.Redirects, rep.Packets)
	}
	if got := scrape(t, nodes[1].http, "supernode_fleet_redirects_total"); got != float64(rep.Setup.Redirects) {
		t.Fatalf("n2 counted %v redirects, turnload followed %d", got, rep.Setup.Redirects)
	}

	// SIGKILL n3 while calls run on n1: they lose nothing (plain REST
	// credentials without a call are served where they arrive), and within
	// gossip's failure detection no new call goes to n3.
	onN1 := load.Config{Server: nodes[0].listen, Secret: "fleet-secret", Calls: 20, Ramp: 100, PPS: 50,
		Duration: 3 * time.Second, Drain: 500 * time.Millisecond}
	n1Done := make(chan *load.Report, 1)
	n1Before := created(nodes[0])
	go func() {
		r, _ := load.Run(ctx, onN1)
		n1Done <- r
	}()
	waitFor(t, "the calls on n1", func() bool { return created(nodes[0]) >= n1Before+40 })
	time.Sleep(500 * time.Millisecond) // media flowing
	const gone = `msg="fleet member lost without draining" node=n3`
	goneBefore := [2]int{strings.Count(nodes[0].logs.String(), gone), strings.Count(nodes[1].logs.String(), gone)}
	_ = nodes[2].cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	<-nodes[2].exited
	nodes[2].exited <- nil // for the cleanup
	if r := <-n1Done; r == nil || r.Calls.Established != 20 || r.Packets.Lost != 0 || r.Packets.Received == 0 {
		t.Fatalf("calls on n1 while n3 was killed: %+v", r)
	}
	// Until memberlist declares n3 dead (a few seconds of probes and
	// suspicion), n3 is still a member and still gets calls; placement
	// alone cannot show that it is out: a dead node keeps the load it last
	// gossiped, which bounded load may skip for a while by chance. The
	// members are dropped when the node logs it (the gauge below follows
	// within a second).
	waitFor(t, "n1 and n2 to declare the killed n3 dead", func() bool {
		return strings.Count(nodes[0].logs.String(), gone) > goneBefore[0] &&
			strings.Count(nodes[1].logs.String(), gone) > goneBefore[1]
	})
	if d := time.Since(killed); d > 10*time.Second {
		t.Errorf("n3 left the fleet %v after SIGKILL, want within 10s", d.Round(time.Millisecond))
	} else {
		t.Logf("n3 left the fleet %v after SIGKILL", d.Round(time.Millisecond))
	}
	waitFor(t, "the members gauges to count two alive", func() bool {
		return scrape(t, nodes[0].http, `supernode_fleet_members{state="alive"}`) == 2 &&
			scrape(t, nodes[1].http, `supernode_fleet_members{state="alive"}`) == 2
	})
	for _, p := range nodes[:2] {
		if got := scrape(t, p.http, "supernode_fleet_members_lost_total"); got != 1 {
			t.Fatalf("%s counted %v members lost after n3's SIGKILL, want 1", p.id, got)
		}
	}
	dead := nodes[2].listen
	for i := range 60 {
		var r api.IceServersResponse
		url := fmt.Sprintf("http://%s/v1/ice-servers?user=u&call=after-kill-%d", nodes[0].http, i)
		if code := getJSON(t, "GET", url, "", &r); code != http.StatusOK {
			t.Fatalf("ice-servers after the kill: %d", code)
		}
		if urls := strings.Join(r.IceServers[0].URLs, " "); strings.Contains(urls, dead) {
			t.Fatalf("call after-kill-%d placed on the killed node: %s", i, urls)
		}
	}

	// SIGTERM n2 while calls run on it: none of them loses a packet, new
	// calls go to n1, and n2 exits once its calls have ended.
	before := created(nodes[1])
	cfg.Calls, cfg.Ramp, cfg.Duration = 60, 60, 3*time.Second
	done := make(chan *load.Report, 1)
	go func() {
		r, _ := load.Run(ctx, cfg)
		done <- r
	}()
	waitFor(t, "calls on n2", func() bool { return created(nodes[1]) > before+10 })
	_ = nodes[1].cmd.Process.Signal(syscall.SIGTERM)
	rep = <-done
	if rep == nil || rep.Calls.Established != 60 || rep.Packets.Lost != 0 {
		t.Fatalf("drain during load: %+v", rep)
	}
	// Its calls have ended (turnload waits for the server to answer each
	// deallocation), so n2, polling every 250ms, exits cleanly.
	select {
	case err := <-nodes[1].exited:
		if err != nil {
			t.Fatalf("n2 exit after drain: %v", err)
		}
		nodes[1].exited <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatalf("n2 still running 10s after its calls ended: %v allocations", scrape(t, nodes[1].http, `supernode_allocations_active{transport="udp"}`))
	}
	// n1 sees n2 go, and a member that drained first is not a lost one:
	// the alert on supernode_fleet_members_lost_total stays quiet through
	// a rolling update.
	// (Either log line comes after the counter has moved.)
	waitFor(t, "n1 to see n2 leave", func() bool {
		l := nodes[0].logs.String()
		return strings.Contains(l, `node=n2`) && (strings.Contains(l, `msg="fleet member left or died" node=n2`) ||
			strings.Contains(l, `msg="fleet member lost without draining" node=n2`))
	})
	if got := scrape(t, nodes[0].http, "supernode_fleet_members_lost_total"); got != 1 {
		t.Fatalf("n1 counted %v members lost after n2 drained and left, want 1 (n3's kill only)", got)
	}
	if !strings.Contains(nodes[0].logs.String(), `msg="fleet member left or died" node=n2`) {
		t.Fatalf("n1 did not log n2's leaving as a drained member's:\n%s", nodes[0].logs.String())
	}
}
