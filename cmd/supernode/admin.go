package main

import (
	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/fleet"
	"github.com/supernode/supernode/relay"
)

// nodeAdmin is the node as the admin API sees it (api.Admin): the relay's
// allocations, and the drain and members of its fleet.
type nodeAdmin struct {
	*relay.Server
	fleet *fleet.Fleet
}

// SetDraining starts a drain as SIGTERM does, without the exit, or
// cancels one (fleet.Fleet.Drain, Undrain).
func (a nodeAdmin) SetDraining(on bool) error {
	if on {
		a.fleet.Drain(false)
		return nil
	}
	return a.fleet.Undrain()
}

// Fleet is the fleet as this node sees it; a fleet of one is this node.
func (a nodeAdmin) Fleet() []api.Member { return api.Members(a.fleet.Members()) }
