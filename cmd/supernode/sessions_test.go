package main

import (
	"bufio"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/supernode/supernode/relay"
)

// Session records (one log line per ended allocation), against real nodes.

func sessionLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "session ended" {
			out = append(out, m)
		}
	}
	return out
}

func TestSessionRecordCountsTurnload(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--log-level", "info", "--log-format", "json")
	cfg := smallLoad(tn.udp)
	rep := runLoad(t, cfg)
	checkClean(t, rep, cfg.Calls)
	// An allocation leaves the table just before its record is logged, on
	// the goroutine that ended it: wait for the records themselves.
	waitFor(t, "a session record per allocation", func() bool { return len(sessionLines(t, tn.logs.String())) >= 2*cfg.Calls })
	lines := sessionLines(t, tn.logs.String())
	if len(lines) != 2*cfg.Calls {
		t.Fatalf("%d session records, want %d", len(lines), 2*cfg.Calls)
	}
	var pkts, bytes, pktsBack, bytesBack float64
	for _, l := range lines {
		if l["user"] != "alice" || l["transport"] != "udp" || l["reason"] != relay.EndDeleted || l["duration_seconds"].(float64) <= 0 {
			t.Fatalf("session record %v", l)
		}
		pkts += l["packets_to_peer"].(float64)
		bytes += l["bytes_to_peer"].(float64)
		pktsBack += l["packets_to_client"].(float64)
		bytesBack += l["bytes_to_client"].(float64)
	}
	// One 4-byte setup hello per leg on its channel, then the media. Every
	// media packet reached the other leg (checkClean); a hello that gets to
	// the other leg's relay before its permission for this one is dropped
	// there, so the way back counts the media and some of the hellos.
	hellos := float64(2 * cfg.Calls)
	sent := float64(rep.Packets.Sent)
	if pkts != sent+hellos || bytes != sent*172+4*hellos {
		t.Fatalf("session records: %v packets (%v bytes) to peers; turnload sent %v of 172 bytes (+%v hellos of 4)", pkts, bytes, sent, hellos)
	}
	hellosBack := pktsBack - sent
	if hellosBack < 0 || hellosBack > hellos || bytesBack != sent*172+4*hellosBack {
		t.Fatalf("session records: %v packets (%v bytes) to clients; turnload received %d of 172 bytes (+ at most %v hellos of 4)",
			pktsBack, bytesBack, rep.Packets.Received, hellos)
	}
}

func TestLogSessionsOff(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--log-level", "info", "--log-format", "json", "--log-sessions=false")
	raw := newRawClient(t, tn.udp)
	raw.allocate("alice", "pw")
	if code := errCode(raw.do(stun.MethodRefresh, "alice", "pw", lifetime(0))); code != 0 {
		t.Fatalf("Refresh 0: %d", code)
	}
	waitFor(t, "the allocation to go", func() bool { return tn.n.relay.AllocationCount() == 0 })
	if l := sessionLines(t, tn.logs.String()); len(l) != 0 {
		t.Fatalf("session records with --log-sessions=false: %v", l)
	}
}

// TestSessionEndReasons: the expiry the API lists follows the lifetime
// granted, and each way an allocation ends is named in its record.
func TestSessionEndReasons(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--user", "bob:pw", "--log-level", "info", "--log-format", "json")
	// An Allocate asking for 2 s expires after 2 s unless refreshed.
	short := newRawClient(t, tn.udp)
	if code := errCode(short.do(stun.MethodAllocate, "alice", "pw", requestedTransport(17), lifetime(2))); code != 0 {
		t.Fatalf("Allocate: %d", code)
	}
	as := listAllocations(t, tn, "user=alice")
	if len(as) != 1 || as[0].Expires.Sub(as[0].Created) > 3*time.Second || as[0].Expires.Sub(as[0].Created) < time.Second {
		t.Fatalf("a 2 s allocation: %+v", as)
	}
	// A Refresh moves the expiry.
	long := newRawClient(t, tn.udp)
	long.allocate("bob", "pw")
	if code := errCode(long.do(stun.MethodRefresh, "bob", "pw", lifetime(1200))); code != 0 {
		t.Fatalf("Refresh: %d", code)
	}
	if bs := listAllocations(t, tn, "user=bob"); len(bs) != 1 || bs[0].Expires.Sub(bs[0].Created) < 1100*time.Second {
		t.Fatalf("bob after a Refresh of 1200 s: %+v", bs)
	}
	waitFor(t, "alice's allocation to expire", func() bool { return len(listAllocations(t, tn, "user=alice")) == 0 })

	// A TCP client's allocation ends with its connection.
	conn, err := net.Dial("tcp", tn.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := newClient(t, turn.NewSTUNConn(conn), tn.udp, "bob", "pw")
	rc, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got := listAllocations(t, tn, "user=bob&transport=tcp"); len(got) != 1 || got[0].Relay != rc.LocalAddr().String() {
		t.Fatalf("bob's TCP-client allocation: %+v", got)
	}
	_ = conn.Close()
	waitFor(t, "the TCP client's allocation to go", func() bool { return len(listAllocations(t, tn, "transport=tcp")) == 0 })

	reasons := map[string]string{}
	waitFor(t, "the records of alice's and the TCP client's allocations", func() bool {
		for _, l := range sessionLines(t, tn.logs.String()) {
			reasons[l["user"].(string)+"/"+l["transport"].(string)] = l["reason"].(string)
		}
		return reasons["alice/udp"] != "" && reasons["bob/tcp"] != ""
	})
	if reasons["alice/udp"] != relay.EndExpired || reasons["bob/tcp"] != relay.EndClosed {
		t.Fatalf("reasons %v", reasons)
	}
	// What is left when the node stops ends by shutdown.
	tn.stop()
	for _, l := range sessionLines(t, tn.logs.String()) {
		if l["user"] == "bob" && l["transport"] == "udp" && l["reason"] != relay.EndShutdown {
			t.Fatalf("bob's UDP allocation at shutdown: %v", l)
		}
	}
	if n := len(sessionLines(t, tn.logs.String())); n != 3 {
		t.Fatalf("%d session records, want 3", n)
	}
}
