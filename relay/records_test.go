package relay_test

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/supernode/supernode/load/loadtest"
	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// Session records (one log line per ended allocation), against a real
// relay.

func TestLogSessionsOff(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, LogJSON: true,
		Configure: func(c *relay.Config) { c.LogSessions = false }})
	raw := relaytest.NewRawClient(t, tn.Addr())
	raw.Allocate("alice", "pw")
	if code := relaytest.ErrCode(raw.Do(stun.MethodRefresh, "alice", "pw", relaytest.Lifetime(0))); code != 0 {
		t.Fatalf("Refresh 0: %d", code)
	}
	looptest.Eventually(t, "the allocation to go", func() bool { return tn.Server.AllocationCount() == 0 })
	if l := relaytest.SessionRecords(tn.Logs.String()); len(l) != 0 {
		t.Fatalf("session records with --log-sessions=false: %v", l)
	}
}

// TestSessionEndReasons: the expiry the API lists follows the lifetime
// granted, and each way an allocation ends is named in its record.
func TestSessionEndReasons(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw", "bob": "pw"}, LogJSON: true})
	// An Allocate asking for 2 s expires after 2 s unless refreshed.
	short := relaytest.NewRawClient(t, tn.Addr())
	if code := relaytest.ErrCode(short.Do(stun.MethodAllocate, "alice", "pw", relaytest.RequestedTransport(17), relaytest.Lifetime(2))); code != 0 {
		t.Fatalf("Allocate: %d", code)
	}
	as := tn.Server.Allocations(relay.Filter{User: "alice"})
	if len(as) != 1 || as[0].Expires.Sub(as[0].Created) > 3*time.Second || as[0].Expires.Sub(as[0].Created) < time.Second {
		t.Fatalf("a 2 s allocation: %+v", as)
	}
	// A Refresh moves the expiry.
	long := relaytest.NewRawClient(t, tn.Addr())
	long.Allocate("bob", "pw")
	if code := relaytest.ErrCode(long.Do(stun.MethodRefresh, "bob", "pw", relaytest.Lifetime(1200))); code != 0 {
		t.Fatalf("Refresh: %d", code)
	}
	if bs := tn.Server.Allocations(relay.Filter{User: "bob"}); len(bs) != 1 || bs[0].Expires.Sub(bs[0].Created) < 1100*time.Second {
		t.Fatalf("bob after a Refresh of 1200 s: %+v", bs)
	}
	looptest.Eventually(t, "alice's allocation to expire", func() bool { return len(tn.Server.Allocations(relay.Filter{User: "alice"})) == 0 })

	// A TCP client's allocation ends with its connection.
	conn, err := net.Dial("tcp", tn.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := relaytest.NewClient(t, turn.NewSTUNConn(conn), tn.Addr(), "bob", "pw")
	rc, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got := tn.Server.Allocations(relay.Filter{User: "bob", Transport: "tcp"}); len(got) != 1 || got[0].Relay != rc.LocalAddr().String() {
		t.Fatalf("bob's TCP-client allocation: %+v", got)
	}
	_ = conn.Close()
	looptest.Eventually(t, "the TCP client's allocation to go", func() bool { return len(tn.Server.Allocations(relay.Filter{Transport: "tcp"})) == 0 })

	reasons := map[string]string{}
	looptest.Eventually(t, "the records of alice's and the TCP client's allocations", func() bool {
		for _, l := range relaytest.SessionRecords(tn.Logs.String()) {
			reasons[l["user"].(string)+"/"+l["transport"].(string)] = l["reason"].(string)
		}
		return reasons["alice/udp"] != "" && reasons["bob/tcp"] != ""
	})
	if reasons["alice/udp"] != relay.EndExpired || reasons["bob/tcp"] != relay.EndClosed {
		t.Fatalf("reasons %v", reasons)
	}
	// What is left when the node stops ends by shutdown.
	tn.Stop()
	for _, l := range relaytest.SessionRecords(tn.Logs.String()) {
		if l["user"] == "bob" && l["transport"] == "udp" && l["reason"] != relay.EndShutdown {
			t.Fatalf("bob's UDP allocation at shutdown: %v", l)
		}
	}
	if n := len(relaytest.SessionRecords(tn.Logs.String())); n != 3 {
		t.Fatalf("%d session records, want 3", n)
	}
}

// TestSessionRecordCountsTurnload: the records of a turnload run's
// allocations add up to what turnload sent.
func TestSessionRecordCountsTurnload(t *testing.T) {
	tn := relaytest.Start(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, LogJSON: true})
	cfg := loadtest.SmallLoad(tn.Addr())
	rep := loadtest.Run(t, cfg)
	loadtest.CheckClean(t, rep, cfg.Calls)
	// An allocation leaves the table just before its record is logged, on
	// the goroutine that ended it: wait for the records themselves.
	looptest.Eventually(t, "a session record per allocation", func() bool { return len(relaytest.SessionRecords(tn.Logs.String())) >= 2*cfg.Calls })
	lines := relaytest.SessionRecords(tn.Logs.String())
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
	// media packet reached the other leg (CheckClean); a hello that gets to
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
