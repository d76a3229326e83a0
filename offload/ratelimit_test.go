package offload

import "testing"

// The --max-bps buckets. At 8 bit/s a bucket refills one byte a second and
// holds two messages of maxMessage (100) bytes: a 100-byte packet in a
// row after two finds it empty by a margin of a hundred seconds of
// refill, so no test here depends on how fast the machine runs it.

// TestRateLimit: each direction of an allocation has its own bucket; an
// empty one drops, counted.
func TestRateLimit(t *testing.T) {
	h := newHarness(t)
	h.alloc(remote4.Alloc, 8)
	h.bind(remote4)
	data := testData(100, 1)
	c := clientFrame(remote4, rawChannelData(remote4.Channel, 100, data, 0))
	p := peerFrame(remote4, data)
	before := h.o.Counters()
	for range 2 {
		h.expectRelayed(c.bytes(), h.ns.d0, actRedirect, toPeer(remote4, c, data).bytes())
	}
	for i := range 2 {
		if ret, _ := h.run(c.bytes(), h.ns.d0); ret != actShot {
			t.Errorf("client packet %d over the limit: verdict %d, want TC_ACT_SHOT", 3+i, int32(ret))
		}
	}
	// The other direction has its own bucket.
	for range 2 {
		h.expectRelayed(p.bytes(), h.ns.d0, actRedirect, toClient(remote4, remote4.Server.Addr(), p, data).bytes())
	}
	if ret, _ := h.run(p.bytes(), h.ns.d0); ret != actShot {
		t.Errorf("peer packet over the limit: verdict %d, want TC_ACT_SHOT", int32(ret))
	}
	h.expectCounters(before, Counters{ToPeerPackets: 2, ToPeerBytes: 200, ToClientPackets: 2, ToClientBytes: 200, DropRate: 3})
	if got, want := h.allocStats(remote4.Alloc), (AllocationStats{PacketsToPeer: 2, BytesToPeer: 200, PacketsToClient: 2, BytesToClient: 200}); got != want {
		t.Errorf("allocation: %+v, want %+v", got, want)
	}
}

// TestRateLimitOnePass: one pass spends from the sender's client-to-peer
// bucket and the receiver's peer-to-client bucket; either one empty drops
// it.
func TestRateLimitOnePass(t *testing.T) {
	for _, limited := range []string{"sender", "receiver"} {
		t.Run(limited, func(t *testing.T) {
			h := newHarness(t)
			a, b := onePassPair(false)
			var bpsA, bpsB int64
			if limited == "sender" {
				bpsA = 8
			} else {
				bpsB = 8
			}
			h.alloc(a.Alloc, bpsA)
			h.alloc(b.Alloc, bpsB)
			h.bind(a)
			h.bind(b)
			data := testData(100, 1)
			in := clientFrame(a, rawChannelData(a.Channel, 100, data, 0))
			before := h.o.Counters()
			for range 2 {
				h.expectRelayed(in.bytes(), h.ns.d0, actRedirect, toClient(b, b.Server.Addr(), in, data).bytes())
			}
			if ret, _ := h.run(in.bytes(), h.ns.d0); ret != actShot {
				t.Errorf("one pass over the %s's limit: verdict %d, want TC_ACT_SHOT", limited, int32(ret))
			}
			h.expectCounters(before, Counters{ToPeerPackets: 2, ToPeerBytes: 200, ToClientPackets: 2, ToClientBytes: 200,
				OnePassPackets: 2, OnePassBytes: 200, DropRate: 1})
		})
	}
}

// TestRateRefill: the bucket refills at the allocation's rate, up to its
// depth. The program's clock (bpf_ktime_get_ns) cannot be set, so the test
// moves the bucket's last refill time back instead, as if that much time
// had gone by. Every expectation keeps at least ten seconds of slack on
// the running clock.
func TestRateRefill(t *testing.T) {
	for _, dir := range []string{"client to peer", "peer to client"} {
		t.Run(dir, func(t *testing.T) {
			h := newHarness(t)
			h.alloc(remote4.Alloc, 8)
			h.bind(remote4)
			idx := 0 // DIR_C2P
			if dir == "peer to client" {
				idx = 1 // DIR_P2C
			}
			send := func(n int, want ...uint32) {
				t.Helper()
				data := testData(n, 1)
				var f frame
				if idx == 0 {
					f = clientFrame(remote4, rawChannelData(remote4.Channel, n, data, 0))
				} else {
					f = peerFrame(remote4, data)
				}
				for i, w := range want {
					if ret, _ := h.run(f.bytes(), h.ns.d0); ret != w {
						t.Errorf("%d-byte packet %d: verdict %d, want %d", n, i+1, int32(ret), w)
					}
				}
			}
			rewind := func(seconds uint64) {
				t.Helper()
				var a relayAlloc
				if err := h.o.objs.Allocations.Lookup(remote4.Alloc, &a); err != nil {
					t.Fatal(err)
				}
				a.LastNs[idx] -= seconds * 1e9
				if err := h.o.objs.Allocations.Update(remote4.Alloc, &a, 0); err != nil {
					t.Fatal(err)
				}
			}
			send(100, actRedirect, actRedirect, actShot) // 200 bytes spent: empty
			rewind(100)                                  // 100 bytes
			send(100, actRedirect, actShot)
			rewind(90) // 90 bytes: 10 short
			send(100, actShot)
			rewind(10) // 100
			send(100, actRedirect, actShot)
			rewind(1000) // past the bucket's fill time: full, no more
			send(100, actRedirect, actRedirect, actShot)
			// A refill within the fill time is capped at the depth too:
			// 100 left plus 150 s is 200, not 250, so the fourth 60-byte
			// packet finds 20 bytes.
			rewind(200)
			send(100, actRedirect)
			rewind(150)
			send(60, actRedirect, actRedirect, actRedirect, actShot)
			got := delta(h.o.Counters(), Counters{})
			relayed, bytes := got.ToPeerPackets, got.ToPeerBytes
			if idx == 1 {
				relayed, bytes = got.ToClientPackets, got.ToClientBytes
			}
			if got.DropRate != 6 || relayed != 10 || bytes != 880 {
				t.Errorf("counters %+v, want 10 relayed (880 bytes) and 6 dropped", got)
			}
		})
	}
}
