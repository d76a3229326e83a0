package cluster

import (
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/supernode/supernode/looptest"
)

type testMeta struct{ allocs, draining atomic.Int64 }

func (m *testMeta) get(zone string) func() Meta {
	return func() Meta {
		return Meta{Zone: zone, Host: "127.0.0.1", Allocations: int(m.allocs.Load()), Draining: m.draining.Load() == 1,
			Ports: Ports{UDP: 3478}}
	}
}

func startFleet(t *testing.T, n int) ([]*Cluster, []*testMeta) {
	t.Helper()
	var cs []*Cluster
	var metas []*testMeta
	for i := range n {
		m := &testMeta{}
		cfg := Config{NodeID: fmt.Sprintf("node-%d", i), Listen: "127.0.0.1:0", Meta: m.get(""), Refresh: 100 * time.Millisecond}
		if i > 0 {
			// By name: a DNS name stands for all of its addresses
			// (localhost may give ::1 first, where nobody listens).
			_, port, _ := net.SplitHostPort(cs[0].Addr())
			cfg.Join = []string{net.JoinHostPort("localhost", port)}
		}
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Leave(time.Second) })
		cs = append(cs, c)
		metas = append(metas, m)
	}
	return cs, metas
}

func TestFleetAgreesOnOwners(t *testing.T) {
	cs, metas := startFleet(t, 3)
	looptest.Eventually(t, "every node sees three members", func() bool {
		for _, c := range cs {
			if len(c.Nodes()) != 3 {
				return false
			}
		}
		return true
	})
	for i := range 200 {
		call := fmt.Sprintf("call-%d", i)
		first, _ := cs[0].Owner(call, "")
		for _, c := range cs[1:] {
			if o, _ := c.Owner(call, ""); o.ID != first.ID {
				t.Fatalf("%s: %s says %s, %s says %s", call, cs[0].ID(), first.ID, c.ID(), o.ID)
			}
		}
	}
	// Draining is gossiped and placement stops choosing the node.
	metas[1].draining.Store(1)
	looptest.Eventually(t, "node-1 seen draining everywhere", func() bool {
		for _, c := range cs {
			for _, n := range c.Nodes() {
				if n.ID == "node-1" && !n.Meta.Draining {
					return false
				}
			}
		}
		return true
	})
	for i := range 200 {
		if o, _ := cs[0].Owner(fmt.Sprintf("call-%d", i), ""); o.ID == "node-1" {
			t.Fatal("a call placed on the draining node")
		}
	}
	// A node that leaves disappears from the others' view.
	cs[2].Leave(time.Second)
	looptest.Eventually(t, "node-2 gone", func() bool { return len(cs[0].Nodes()) == 2 && len(cs[1].Nodes()) == 2 })
}

func TestConfigErrors(t *testing.T) {
	meta := func() Meta { return Meta{} }
	for _, cfg := range []Config{
		{Listen: "127.0.0.1:0", Meta: meta},
		{NodeID: "a", Listen: "nonsense", Meta: meta},
		{NodeID: "a", Listen: "0.0.0.0:0", Meta: meta, Key: make([]byte, 16)},
		{NodeID: "a", Listen: "192.0.2.1:0", Meta: meta},
		{NodeID: "a", Listen: "127.0.0.1:0", Meta: meta, Key: make([]byte, 5)},
	} {
		if c, err := New(cfg); err == nil {
			c.Leave(0)
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// TestJoinBeforeSeedIsUp: a member whose --join address does not answer yet
// serves alone and joins once the seed is up (members start in any order).
func TestJoinBeforeSeedIsUp(t *testing.T) {
	l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	seedAddr := l.LocalAddr().String()
	_ = l.Close()
	early, err := New(Config{NodeID: "early", Listen: "127.0.0.1:0", Join: []string{seedAddr},
		Meta: (&testMeta{}).get(""), Refresh: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("a member must start although its --join address is not up yet: %v", err)
	}
	t.Cleanup(func() { early.Leave(time.Second) })
	if n := len(early.Nodes()); n != 1 {
		t.Fatalf("alone: %d members", n)
	}
	seed, err := New(Config{NodeID: "seed", Listen: seedAddr, Meta: (&testMeta{}).get(""), Refresh: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seed.Leave(time.Second) })
	looptest.Eventually(t, "the early member to join the seed", func() bool {
		return len(early.Nodes()) == 2 && len(seed.Nodes()) == 2
	})
}
