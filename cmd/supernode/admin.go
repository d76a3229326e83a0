package main

import (
	"errors"

	"github.com/supernode/supernode/api"
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
	if on {
		n.drainMu.Lock()
		n.fleet.SetDraining(true)
		n.drainMu.Unlock()
		n.fleet.Announce()
		n.drainMu.Lock()
		defer n.drainMu.Unlock()
		if n.fleet.Draining() { // not cancelled while the fleet was told
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
	n.fleet.SetDraining(false)
	n.drainMu.Unlock()
	n.fleet.Announce()
	return nil
}

// Fleet is the fleet as this node sees it; a fleet of one is this node.
func (a nodeAdmin) Fleet() []api.Member { return api.Members(a.n.fleet.Members()) }
