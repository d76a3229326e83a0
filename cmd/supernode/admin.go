package main

import (
	"errors"

	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/relay"
)

// errSignalDrain refuses to cancel a drain that SIGTERM started: that one
// ends with the process exiting.
var errSignalDrain = errors.New("drain: started by SIGTERM, the node exits when it ends; it cannot be cancelled (send SIGINT to exit now)")

// nodeAdmin is the node as the admin API sees it (api.Admin).
type nodeAdmin struct{ n *node }

func (a nodeAdmin) Allocations(f relay.Filter) []relay.Session { return a.n.relay.Allocations(f) }

func (a nodeAdmin) Kill(f relay.Filter) int { return a.n.relay.Kill(f) }

// SetDraining starts or cancels a drain as SIGTERM starts one, without the
// exit: the fleet hears of it first, then the node refuses new allocations.
// drainMu orders it against SIGTERM and other API calls, but is not held
// while the news spreads (up to 2s): signal handling would wait on it.
func (a nodeAdmin) SetDraining(on bool) error {
	n := a.n
	f := n.fleet.Load()
	if on {
		n.drainMu.Lock()
		n.leaving.Store(true)
		n.drainMu.Unlock()
		if f != nil {
			f.c.Announce()
		}
		n.drainMu.Lock()
		defer n.drainMu.Unlock()
		if n.leaving.Load() { // not cancelled while the fleet was told
			n.relay.Drain()
		}
		return nil
	}
	n.drainMu.Lock()
	if n.signalled.Load() {
		n.drainMu.Unlock()
		return errSignalDrain
	}
	n.relay.Undrain()
	n.leaving.Store(false)
	n.drainMu.Unlock()
	if f != nil {
		f.c.Announce()
	}
	return nil
}

// Fleet is the fleet as this node sees it; a fleet of one is this node.
func (a nodeAdmin) Fleet() []api.Member {
	n := a.n
	if f := n.fleet.Load(); f != nil {
		return api.Members(f.c.Nodes())
	}
	host := ""
	if len(n.urls) > 0 {
		host = hostOfURL(n.urls[0])
	}
	return api.Members([]cluster.Node{{ID: n.o.nodeID, Self: true, Meta: cluster.Meta{
		Zone: n.o.zone, Host: host, Capacity: n.o.capacity, Allocations: n.relay.AllocationCount(),
		BitsPerSecond: n.bps.Load(), Draining: n.relay.Draining(), Version: version,
	}}})
}
