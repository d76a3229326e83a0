// Package cluster holds the fleet's mechanisms: membership of supernodes
// over gossip (hashicorp/memberlist), each carrying its metadata (Meta);
// placement of a call on a member by rendezvous hashing with bounded load
// (Place), so that both legs of a call meet on one host; and the call ids
// that credentials carry (CallUser). Package fleet applies them for this
// node: it decides which member a call is placed on and whether an
// Allocate is redirected.
package cluster

import (
	"math"
	"sort"
)

// Member is one node as placement sees it. Every node must build the same
// Members from the same gossip, so that every node picks the same owner.
type Member struct {
	// ID names the node uniquely in the fleet (--node-id).
	ID string
	// Zone is the node's failure domain (--zone); empty is no zone.
	Zone string
	// Alive is false once membership declares the node dead or gone.
	Alive bool
	// Draining nodes keep their calls but take no new ones.
	Draining bool
	// Capacity is the node's weight relative to the others; zero counts as 1.
	Capacity float64
	// Load is the node's active allocations.
	Load float64
}

// LoadFactor bounds a node's load to this multiple of its fair share
// (consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam).
const LoadFactor = 1.25

// Outcome tells how Place chose.
type Outcome int

const (
	// NoMember: nobody alive and not draining.
	NoMember Outcome = iota
	// First: the call's highest-scoring eligible member.
	First
	// Bounded: the highest-scoring members were over their load bound; a
	// lower-scoring one took the call.
	Bounded
	// Overloaded: every eligible member was over its bound and the
	// highest-scoring one took the call anyway. The bounds add up to more
	// than the total load, so this needs loads that are not real
	// (negative); it is a fallback, not a state to expect.
	Overloaded
)

// String is the outcome's name in lower case, for logs and test failures.
func (o Outcome) String() string {
	switch o {
	case First:
		return "first"
	case Bounded:
		return "bounded"
	case Overloaded:
		return "overloaded"
	}
	return "none"
}

// Place picks the member that owns callID: rendezvous (highest random
// weight) hashing over the members that are alive and not draining — only
// those in zone, when zone is set and any of them is eligible — skipping a
// member whose load would exceed LoadFactor times its capacity share of the
// eligible members' total load. The result depends only on callID, zone and
// the set of members, never on their order.
func Place(callID, zone string, members []Member) (Member, Outcome) {
	eligible := make([]Member, 0, len(members))
	for _, m := range members {
		if m.Alive && !m.Draining {
			eligible = append(eligible, m)
		}
	}
	if zone != "" {
		var inZone []Member
		for _, m := range eligible {
			if m.Zone == zone {
				inZone = append(inZone, m)
			}
		}
		if len(inZone) > 0 {
			eligible = inZone
		}
	}
	if len(eligible) == 0 {
		return Member{}, NoMember
	}
	ranked := Rank(callID, eligible)
	var total, capSum float64
	for _, m := range eligible {
		total += max(m.Load, 0)
		capSum += capacity(m)
	}
	for i, m := range ranked {
		// The bound counts the call being placed, so an empty fleet still
		// admits it, and is rounded up so small fleets do not flap.
		bound := math.Ceil(LoadFactor * (total + 1) * capacity(m) / capSum)
		if m.Load+1 <= bound {
			if i == 0 {
				return m, First
			}
			return m, Bounded
		}
	}
	return ranked[0], Overloaded
}

// Rank orders members by their rendezvous score for callID, best first.
func Rank(callID string, members []Member) []Member {
	type scored struct {
		m     Member
		score float64
	}
	s := make([]scored, len(members))
	for i, m := range members {
		s[i] = scored{m, Score(callID, m.ID, capacity(m))}
	}
	sort.Slice(s, func(i, j int) bool {
		if s[i].score != s[j].score {
			return s[i].score > s[j].score
		}
		return s[i].m.ID < s[j].m.ID
	})
	out := make([]Member, len(s))
	for i := range s {
		out[i] = s[i].m
	}
	return out
}

func capacity(m Member) float64 {
	if m.Capacity <= 0 {
		return 1
	}
	return m.Capacity
}

// Score is the weighted rendezvous score of node for callID:
// -weight / ln(u), with u uniform in (0,1) from a hash of both names. A
// node of twice the weight wins twice as many calls.
func Score(callID, nodeID string, weight float64) float64 {
	h := hash64(nodeID, callID)
	u := (float64(h>>11) + 0.5) / (1 << 53)
	return -weight / math.Log(u)
}

// hash64 is FNV-1a over a, a zero byte and b, finished with the splitmix64
// mixer so that names differing in one character spread over all 64 bits.
func hash64(a, b string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(a); i++ {
		h ^= uint64(a[i])
		h *= prime
	}
	h *= prime // the zero separator
	for i := 0; i < len(b); i++ {
		h ^= uint64(b[i])
		h *= prime
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
