package cluster

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func nodes(ids ...string) []Member {
	ms := make([]Member, len(ids))
	for i, id := range ids {
		ms[i] = Member{ID: id, Alive: true}
	}
	return ms
}

func owners(calls int, ms []Member) map[string]string {
	out := make(map[string]string, calls)
	for i := range calls {
		c := fmt.Sprintf("call-%d", i)
		m, _ := Place(c, "", ms)
		out[c] = m.ID
	}
	return out
}

func TestPlaceDeterministicAndOrderFree(t *testing.T) {
	ms := nodes("a", "b", "c", "d", "e")
	want := owners(2000, ms)
	r := rand.New(rand.NewPCG(1, 2))
	for range 5 {
		shuffled := append([]Member(nil), ms...)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got := owners(2000, shuffled)
		for c, o := range want {
			if got[c] != o {
				t.Fatalf("%s: owner %s with one member order, %s with another", c, o, got[c])
			}
		}
	}
}

func TestPlaceSpreadsEvenly(t *testing.T) {
	ms := nodes("n1", "n2", "n3", "n4", "n5")
	count := map[string]int{}
	for _, o := range owners(20000, ms) {
		count[o]++
	}
	for _, m := range ms {
		if c := count[m.ID]; c < 3400 || c > 4600 { // 4000 +-15%
			t.Errorf("%s owns %d of 20000 calls, want about 4000", m.ID, c)
		}
	}
}

func TestPlaceWeighted(t *testing.T) {
	ms := nodes("small", "big")
	ms[1].Capacity = 3
	count := map[string]int{}
	for _, o := range owners(20000, ms) {
		count[o]++
	}
	if c := count["big"]; c < 14000 || c > 16000 { // 3/4 of the calls
		t.Errorf("capacity 3 of 4 owns %d of 20000, want about 15000", c)
	}
}

// TestPlaceMinimalMovement: a node joining takes about 1/n of the calls
// and only from others to itself; a node leaving moves only its own calls.
func TestPlaceMinimalMovement(t *testing.T) {
	four := nodes("a", "b", "c", "d")
	five := nodes("a", "b", "c", "d", "e")
	before, after := owners(20000, four), owners(20000, five)
	moved := 0
	for c, o := range before {
		if after[c] != o {
			moved++
			if after[c] != "e" {
				t.Fatalf("%s moved from %s to %s, not to the new node", c, o, after[c])
			}
		}
	}
	if moved < 3400 || moved > 4600 { // 20000/5
		t.Errorf("join moved %d of 20000 calls, want about 4000", moved)
	}
	// Leave: e is declared dead; only e's calls move.
	five[4].Alive = false
	left := owners(20000, five)
	for c, o := range after {
		if o != "e" && left[c] != o {
			t.Fatalf("%s moved from %s to %s although %s is still alive", c, o, left[c], o)
		}
		if left[c] == "e" {
			t.Fatalf("%s still placed on the dead node", c)
		}
	}
}

func TestPlaceSkipsDrainingAndDead(t *testing.T) {
	ms := nodes("a", "b", "c")
	ms[0].Draining = true
	ms[1].Alive = false
	for c, o := range owners(500, ms) {
		if o != "c" {
			t.Fatalf("%s placed on %s", c, o)
		}
	}
	ms[2].Draining = true
	if m, out := Place("x", "", ms); out != NoMember || m.ID != "" {
		t.Fatalf("no eligible member: got %q %v", m.ID, out)
	}
	if _, out := Place("x", "", nil); out != NoMember {
		t.Fatalf("empty fleet: %v", out)
	}
}

func TestPlacePrefersZone(t *testing.T) {
	ms := nodes("a1", "a2", "b1", "b2")
	ms[0].Zone, ms[1].Zone, ms[2].Zone, ms[3].Zone = "a", "a", "b", "b"
	for i := range 500 {
		m, _ := Place(fmt.Sprintf("c%d", i), "b", ms)
		if m.Zone != "b" {
			t.Fatalf("zone b asked, got %s", m.ID)
		}
	}
	// Nobody eligible in the zone: any zone will do.
	ms[2].Alive, ms[3].Draining = false, true
	if m, out := Place("c", "b", ms); out != First || m.Zone != "a" {
		t.Fatalf("zone b empty: got %s %v", m.ID, out)
	}
	// Unknown zone: as if none was given.
	if m, _ := Place("c", "nowhere", ms); m.ID == "" {
		t.Fatal("unknown zone placed nothing")
	}
}

func TestPlaceBoundedLoad(t *testing.T) {
	ms := nodes("a", "b", "c", "d")
	// Find calls whose first choice is "a", then load "a" far above the mean.
	var calls []string
	for i := 0; len(calls) < 50; i++ {
		c := fmt.Sprintf("call-%d", i)
		if Rank(c, ms)[0].ID == "a" {
			calls = append(calls, c)
		}
	}
	for _, c := range calls {
		if m, out := Place(c, "", ms); m.ID != "a" || out != First {
			t.Fatalf("unloaded: %s -> %s %v", c, m.ID, out)
		}
	}
	// Total 400 over 4 nodes: fair share 100, bound ceil(1.25*401/4) = 126.
	ms[0].Load, ms[1].Load, ms[2].Load, ms[3].Load = 126, 90, 92, 92
	for _, c := range calls {
		m, out := Place(c, "", ms)
		if m.ID == "a" || out != Bounded || m.ID != Rank(c, ms)[1].ID {
			t.Fatalf("a over its bound: %s -> %s %v, want the second choice", c, m.ID, out)
		}
	}
	// Just under the bound: a keeps its calls.
	ms[0].Load = 124
	if m, _ := Place(calls[0], "", ms); m.ID != "a" {
		t.Fatalf("a under its bound lost %s to %s", calls[0], m.ID)
	}
	// The bounds add up to more than the total load, so some member is
	// always under its bound: Overloaded never happens with real loads.
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 2000 {
		for j := range ms {
			ms[j].Load = float64(r.IntN(50))
			ms[j].Capacity = float64(1 + r.IntN(3))
		}
		if _, out := Place(fmt.Sprintf("r%d", i), "", ms); out == Overloaded {
			t.Fatalf("every member over its bound with loads %+v", ms)
		}
	}
	// A small fleet with no calls yet never refuses the first choice.
	if _, out := Place("first", "", nodes("a", "b", "c")); out != First {
		t.Fatalf("empty fleet: %v", out)
	}
}
