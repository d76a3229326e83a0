// Package fleet is this node's policy as a member of a fleet of
// supernodes, built on package cluster's membership and placement. It is
// where the fleet's decisions are made:
//
//   - Fleet.Redirect decides whether an Allocate belongs on another member.
//     The relay calls it (relay.Config.Redirect) for every new authenticated
//     Allocate; when its credentials name a call (cluster.CallUser) placed
//     on another live, non-draining member, or this node drains, the relay
//     answers 300 Try Alternate with the listener that member gossiped for
//     the client's transport and family.
//   - Fleet.Place answers /v1/ice-servers for a call (api.Config.Place):
//     the URLs of the member rendezvous hashing with bounded load picks,
//     and the credential id that names the call and that member.
//   - What this node gossips about itself (cluster.Meta): its advertised
//     listeners and relay addresses (endpoint.Addresses.Fill), its load,
//     its relayed bit rate (estimated each second from the relay's byte
//     counters) and whether it drains.
//   - The node's drain (Fleet.Drain, Fleet.Undrain): the fleet hears of
//     it before the relay refuses new allocations, and a drain SIGTERM
//     started cannot be cancelled.
//   - What it reads back each second: the fleet gauges, and the other
//     members' relay addresses, which the relay lets clients reach as
//     peers so that the legs of a call split across two hosts still meet.
//
// A node without --cluster-listen is a fleet of one: it places every call
// on itself, redirects nothing and gossips nothing.
package fleet

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/endpoint"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/relay"
)

// Relay is what the fleet needs of this node's relay (*relay.Server).
type Relay interface {
	// AllocationCount is this node's load, gossiped.
	AllocationCount() int
	// Draining, Drain and Undrain are the relay's side of the node's drain
	// (Fleet.Drain): whether it refuses new allocations.
	Draining() bool
	Drain()
	Undrain()
	// SetFleetPeers hands the relay the other members' relay addresses,
	// which its clients may reach as peers.
	SetFleetPeers([]relay.FleetPeer)
}

// Config configures this node's membership.
type Config struct {
	// NodeID (--node-id) names this node in the fleet.
	NodeID string
	// Gossip (--cluster-listen) is the gossip address ip:port; empty is a
	// fleet of one, and the fields below up to Key are then unused.
	Gossip string
	// Join (--join) are host:port of members to join.
	Join []string
	// Key (--cluster-key) is the base64 of the gossip encryption key;
	// empty gossips in the clear (loopback only, see cluster.Config.Key).
	Key string
	// Zone (--zone), Capacity (--capacity) and Version are gossiped as
	// they are.
	Zone     string
	Capacity float64
	Version  string
	// RelayPorts (--min-port, --max-port) is the relay port range.
	RelayPorts [2]int
	// Metrics receives the redirect, placement and fleet counts. Required.
	Metrics *metrics.Metrics
	// Logger; nil discards.
	Logger *slog.Logger
}

// Fleet is this node's membership: a fleet of one until Start, and after
// it too without Config.Gossip.
type Fleet struct {
	cfg        Config
	redirected *bounces
	state      atomic.Pointer[state] // nil until Start
	// leaving is the drain as gossiped: set before the relay starts
	// refusing, so the fleet hears first (Drain).
	leaving atomic.Bool
	// drainMu orders Drain and Undrain, so that a cancel cannot undo a
	// final drain begun between its check and the relay's Undrain; final
	// is set by a drain that ends in an exit (SIGTERM).
	drainMu sync.Mutex
	final   bool
	// bps is the relayed bit rate over the last second, for gossip.
	bps atomic.Int64
}

// state is what Start adds.
type state struct {
	relay Relay
	urls  []string     // this node's ICE URLs
	meta  cluster.Meta // the static part of this node's metadata
	c     *cluster.Cluster
	stop  chan struct{}
	done  chan struct{}
}

// New is this node's membership before it starts. Its Redirect may be
// handed to the relay already: it redirects nothing until Start.
func New(cfg Config) *Fleet {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Fleet{cfg: cfg, redirected: newBounces(time.Minute, 100000, nil)}
}

// Clustered reports whether this node gossips with a fleet
// (--cluster-listen); a fleet of one has no use for Redirect.
func (f *Fleet) Clustered() bool { return f.cfg.Gossip != "" }

// Start joins the fleet once the relay is up (this node's metadata reads
// its load and drain state): r is the relay, addrs where clients reach
// this node, urls its ICE URLs (addrs.URLs).
func (f *Fleet) Start(r Relay, addrs endpoint.Addresses, urls []string) error {
	s := &state{relay: r, urls: urls, meta: cluster.Meta{Zone: f.cfg.Zone, Capacity: f.cfg.Capacity,
		Version: f.cfg.Version, RelayPorts: f.cfg.RelayPorts}}
	addrs.Fill(&s.meta)
	if !f.Clustered() {
		f.state.Store(s)
		return nil
	}
	var key []byte
	if f.cfg.Key != "" {
		k, err := base64.StdEncoding.DecodeString(f.cfg.Key)
		if err != nil {
			return fmt.Errorf("--cluster-key: want base64: %w", err)
		}
		key = k
	}
	c, err := cluster.New(cluster.Config{NodeID: f.cfg.NodeID, Listen: f.cfg.Gossip, Join: f.cfg.Join, Key: key,
		Meta:       func() cluster.Meta { return f.meta(s) },
		MemberLost: func(string) { f.cfg.Metrics.FleetMembersLost.Inc() },
		Logger:     f.cfg.Logger})
	if err != nil {
		return err
	}
	s.c, s.stop, s.done = c, make(chan struct{}), make(chan struct{})
	f.state.Store(s)
	go func() {
		defer close(s.done)
		f.watch(s)
	}()
	f.cfg.Logger.Info("fleet member", "node_id", f.cfg.NodeID, "gossip", c.Addr(), "members", len(c.Nodes()))
	return nil
}

// meta is this node's metadata now.
func (f *Fleet) meta(s *state) cluster.Meta {
	m := s.meta
	m.Allocations = s.relay.AllocationCount()
	m.Draining = f.leaving.Load() || s.relay.Draining()
	m.BitsPerSecond = f.bps.Load()
	return m
}

// Cluster is the gossiping membership; nil for a fleet of one or before
// Start.
func (f *Fleet) Cluster() *cluster.Cluster {
	if s := f.state.Load(); s != nil {
		return s.c
	}
	return nil
}

// Members is the fleet as this node sees it, this node included; a fleet
// of one is this node alone.
func (f *Fleet) Members() []cluster.Node {
	s := f.state.Load()
	if s == nil {
		return nil
	}
	if s.c != nil {
		return s.c.Nodes()
	}
	return []cluster.Node{{ID: f.cfg.NodeID, Self: true, Meta: f.meta(s)}}
}

// Announce gossips this node's metadata now, changed or not, waiting up to
// 2s for it to spread (cluster.Cluster.Announce); a fleet of one has no
// one to tell.
func (f *Fleet) Announce() {
	if s := f.state.Load(); s != nil && s.c != nil {
		s.c.Announce()
	}
}

// Close stops reading the fleet and leaves it, waiting up to a second for
// the news to spread. The relay's counters are read until Close returns:
// call it before closing the kernel path.
func (f *Fleet) Close() {
	s := f.state.Load()
	if s == nil || s.c == nil {
		return
	}
	close(s.stop)
	<-s.done
	s.c.Leave(time.Second)
}
