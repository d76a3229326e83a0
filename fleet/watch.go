package fleet

import (
	"time"

	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/relay"
)

// watch keeps this node's bit rate estimate, the fleet gauges and the
// relay's fleet peers current, once a second until Close.
func (f *Fleet) watch(s *state) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	m := f.cfg.Metrics
	lastBytes, lastAt := m.RelayedBytes(), time.Now()
	for {
		if b, at := m.RelayedBytes(), time.Now(); at.After(lastAt) {
			f.bps.Store(bitRate(b-lastBytes, at.Sub(lastAt)))
			lastBytes, lastAt = b, at
		}
		f.report(s.relay, s.c.Nodes())
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// bitRate is the rate in bits per second of bytes relayed over d.
func bitRate(bytes float64, d time.Duration) int64 {
	return int64(bytes * 8 / d.Seconds())
}

// report sets the fleet gauges from nodes (the fleet as this node sees it)
// and gives the relay the other members' relay addresses.
func (f *Fleet) report(r Relay, nodes []cluster.Node) {
	var alive, draining, total, mine float64
	var peers []relay.FleetPeer
	for _, n := range nodes {
		if !n.Self {
			for _, ip := range n.Meta.Relay {
				peers = append(peers, relay.FleetPeer{Addr: ip, MinPort: n.Meta.RelayPorts[0], MaxPort: n.Meta.RelayPorts[1]})
			}
		}
		if n.Meta.Draining {
			draining++
		} else {
			alive++
		}
		total += float64(n.Meta.Allocations)
		if n.Self {
			mine = float64(n.Meta.Allocations)
		}
	}
	m := f.cfg.Metrics
	m.FleetMembers.For(metrics.MemberAlive).Set(alive)
	m.FleetMembers.For(metrics.MemberDraining).Set(draining)
	share := 1.0
	if total > 0 {
		share = mine / total
	}
	m.FleetLoadShare.Set(share)
	r.SetFleetPeers(peers)
}
