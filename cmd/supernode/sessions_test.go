package main

import (
	"testing"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// Session records (one log line per ended allocation), against real nodes.

func sessionLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	return relaytest.SessionRecords(logs)
}

func TestSessionRecordCountsTurnload(t *testing.T) {
	tn := startNode(t, "--user", "alice:pw", "--log-level", "info", "--log-format", "json")
	cfg := smallLoad(tn.udp)
	rep := runLoad(t, cfg)
	checkClean(t, rep, cfg.Calls)
	// An allocation leaves the table just before its record is logged, on
	// the goroutine that ended it: wait for the records themselves.
	looptest.Eventually(t, "a session record per allocation", func() bool { return len(sessionLines(t, tn.logs.String())) >= 2*cfg.Calls })
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
