package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrConfig is wrapped by every Config validation error.
var ErrConfig = errors.New("cluster: bad config")

// Node is one fleet member with its latest metadata. Members declared dead
// or gone are not Nodes; suspect ones still are.
type Node struct {
	ID   string
	Meta Meta
	Self bool
}

// Member is the placement view of a Node.
func (n Node) Member() Member {
	return Member{ID: n.ID, Zone: n.Meta.Zone, Alive: true, Draining: n.Meta.Draining,
		Capacity: n.Meta.Capacity, Load: float64(n.Meta.Allocations)}
}

// Config configures membership.
type Config struct {
	// NodeID names this node in the fleet; required, unique.
	NodeID string
	// Listen is the gossip address (UDP and TCP), host:port; port 0 picks one.
	Listen string
	// Advertise is the address other nodes reach this one on; empty
	// advertises Listen (which then must not be a wildcard address).
	Advertise string
	// Join lists host:port of existing members; a DNS name stands for all
	// of its addresses. Empty starts a new fleet.
	Join []string
	// Key encrypts gossip (16, 24 or 32 bytes, AES). Required unless
	// Listen is a loopback address.
	Key []byte
	// Meta returns this node's current metadata; it is called whenever the
	// node gossips it.
	Meta func() Meta
	// Refresh is how often the metadata (load, draining) is re-gossiped.
	// Zero is 1s.
	Refresh time.Duration
	// MemberLost, when set, is called once for each other member that
	// leaves or is declared dead while its last gossiped metadata did not
	// say it was draining: its calls were cut rather than drained.
	MemberLost func(id string)
	// Logger; nil discards.
	Logger *slog.Logger
}

// Cluster is this node's membership in a fleet.
type Cluster struct {
	cfg  Config
	ml   *memberlist.Memberlist
	quit chan struct{}
	done chan struct{}

	mu     sync.Mutex
	meta   []byte // last gossiped, for NodeMeta
	rejoin bool   // --join has not reached anyone yet; owned by refresh

	// members is the fleet as memberlist's events report it, copied in the
	// event callbacks: the *memberlist.Node values that Members returns are
	// updated in place by memberlist's goroutines, so reading them later
	// races.
	membersMu sync.Mutex
	members   map[string]Meta // decoded once per change; dead and left nodes are removed
}

// New starts gossiping on cfg.Listen and joins cfg.Join.
func New(cfg Config) (*Cluster, error) {
	if cfg.NodeID == "" {
		return nil, fmt.Errorf("%w: --node-id is empty", ErrConfig)
	}
	if cfg.Meta == nil {
		return nil, fmt.Errorf("%w: Meta is nil", ErrConfig)
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("%w: --cluster-listen %q: %v", ErrConfig, cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("%w: --cluster-listen %q: bad port", ErrConfig, cfg.Listen)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, fmt.Errorf("%w: --cluster-listen %q: want an IP address", ErrConfig, cfg.Listen)
	}
	switch len(cfg.Key) {
	case 0:
		if !ip.IsLoopback() {
			return nil, fmt.Errorf("%w: --cluster-key is required when --cluster-listen (%s) is not a loopback address", ErrConfig, cfg.Listen)
		}
	case 16, 24, 32:
	default:
		return nil, fmt.Errorf("%w: --cluster-key: want 16, 24 or 32 bytes (AES-128/192/256), got %d", ErrConfig, len(cfg.Key))
	}
	c := &Cluster{cfg: cfg, quit: make(chan struct{}), done: make(chan struct{}), members: map[string]Meta{}}
	if err := c.encodeMeta(); err != nil {
		return nil, err
	}
	// The metadata grows with load and drain; refuse at start a node whose
	// metadata could outgrow gossip later (drain would then go unannounced).
	worst := cfg.Meta()
	worst.Allocations, worst.BitsPerSecond, worst.Draining = 1<<31-1, 1<<62, true
	if b, _ := json.Marshal(worst); len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: node metadata can reach %d bytes, more than gossip carries (%d): shorten --public-host, --zone or --node-id",
			ErrConfig, len(b), memberlist.MetaMaxSize)
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if ip.IsUnspecified() && cfg.Advertise == "" {
		return nil, fmt.Errorf("%w: --cluster-listen %s is a wildcard: give the specific IP other members reach this node on", ErrConfig, cfg.Listen)
	}
	if cfg.Advertise != "" {
		ah, ap, err := net.SplitHostPort(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("%w: advertise %q: %v", ErrConfig, cfg.Advertise, err)
		}
		mc.AdvertiseAddr = ah
		if mc.AdvertisePort, err = strconv.Atoi(ap); err != nil {
			return nil, fmt.Errorf("%w: advertise %q: bad port", ErrConfig, cfg.Advertise)
		}
	} else {
		mc.AdvertiseAddr = host
	}
	mc.SecretKey = cfg.Key
	mc.Delegate = (*delegate)(c)
	mc.Events = (*events)(c)
	mc.Logger = log.New(slogWriter{cfg.Logger}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip on %s: %w", cfg.Listen, err)
	}
	c.ml = ml
	if port == 0 {
		// Advertise the port the kernel picked.
		c.cfg.Listen = net.JoinHostPort(host, strconv.Itoa(int(ml.LocalNode().Port)))
	}
	if len(cfg.Join) > 0 && !c.join() {
		// Members start in any order (a DaemonSet starts them all at
		// once): serve as a fleet of one meanwhile and keep trying.
		cfg.Logger.Warn("no --join address answered yet; serving alone and retrying every 2s", "join", strings.Join(cfg.Join, ","))
		c.rejoin = true
	}
	go c.refresh()
	return c, nil
}

// join tries the --join addresses once; true when another member answered.
func (c *Cluster) join() bool {
	n, err := c.ml.Join(c.cfg.Join)
	if err != nil && n > 0 {
		c.cfg.Logger.Warn("some --join addresses did not answer", "joined", n, "err", err)
	}
	return n > 0 && c.ml.NumMembers() > 1
}

// Addr is the gossip address this node listens on.
func (c *Cluster) Addr() string { return c.cfg.Listen }

// ID is this node's id.
func (c *Cluster) ID() string { return c.cfg.NodeID }

func (c *Cluster) encodeMeta() error {
	b, err := json.Marshal(c.cfg.Meta())
	if err != nil {
		return fmt.Errorf("cluster: meta: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return fmt.Errorf("cluster: node metadata is %d bytes, more than gossip carries (%d)", len(b), memberlist.MetaMaxSize)
	}
	c.mu.Lock()
	changed := string(b) != string(c.meta)
	c.meta = b
	c.mu.Unlock()
	if !changed {
		return errUnchanged
	}
	return nil
}

var errUnchanged = errors.New("unchanged")

// refresh re-gossips the metadata when it changed.
func (c *Cluster) refresh() {
	defer close(c.done)
	t := time.NewTicker(c.cfg.Refresh)
	defer t.Stop()
	var lastJoin time.Time
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
		}
		if c.rejoin && time.Since(lastJoin) >= 2*time.Second {
			lastJoin = time.Now()
			if c.ml.NumMembers() > 1 || c.join() {
				c.rejoin = false
				c.cfg.Logger.Info("joined the fleet", "members", c.ml.NumMembers())
			}
		}
		c.Update()
	}
}

// Update gossips this node's metadata now if it changed, waiting up to one
// refresh period for the message to be sent.
func (c *Cluster) Update() { c.update(false) }

// Announce gossips this node's metadata now, changed or not (the refresh
// loop may have sent a drain a moment ago without waiting), and waits up
// to 2s for the message to be sent.
func (c *Cluster) Announce() { c.update(true) }

func (c *Cluster) update(force bool) {
	switch err := c.encodeMeta(); {
	case errors.Is(err, errUnchanged) && !force:
		return
	case errors.Is(err, errUnchanged):
	case err != nil:
		c.cfg.Logger.Error("cluster metadata not gossiped", "err", err)
		return
	}
	// A drain (Announce) waits up to 2s for the news to be sent, and says
	// so if it could not; a load refresh waits at most one refresh period
	// and keeps quiet: the message is still spreading, and the next refresh
	// carries newer numbers anyway.
	wait, level := c.cfg.Refresh, slog.LevelDebug
	if force {
		wait, level = 2*time.Second, slog.LevelWarn
	}
	if err := c.ml.UpdateNode(wait); err != nil {
		c.cfg.Logger.Log(context.Background(), level, "cluster metadata update still spreading", "err", err)
	}
}

// Nodes is the fleet as this node sees it, this node included, sorted by id.
// Nodes declared dead or gone are not listed.
func (c *Cluster) Nodes() []Node {
	c.membersMu.Lock()
	defer c.membersMu.Unlock()
	out := make([]Node, 0, len(c.members))
	for id, meta := range c.members {
		out = append(out, Node{ID: id, Self: id == c.cfg.NodeID, Meta: meta})
	}
	sortNodes(out)
	return out
}

// setMember records a member's metadata from a memberlist event. Nodes and
// placement run on every new Allocate, on the packet read loop, so the JSON
// is decoded here, once per change, not there.
func (c *Cluster) setMember(n *memberlist.Node) {
	var meta Meta
	if err := json.Unmarshal(n.Meta, &meta); err != nil {
		c.cfg.Logger.Warn("fleet member metadata unreadable; member left out", "node", n.Name, "err", err)
		c.membersMu.Lock()
		delete(c.members, n.Name)
		c.membersMu.Unlock()
		return
	}
	c.membersMu.Lock()
	c.members[n.Name] = meta
	c.membersMu.Unlock()
}

// Member returns the member named id, if this node sees it.
func (c *Cluster) Member(id string) (Node, bool) {
	c.membersMu.Lock()
	meta, ok := c.members[id]
	c.membersMu.Unlock()
	if !ok {
		return Node{}, false
	}
	return Node{ID: id, Self: id == c.cfg.NodeID, Meta: meta}, true
}

// Owner places callID on the fleet as this node sees it.
func (c *Cluster) Owner(callID, zone string) (Node, Outcome) {
	return c.OwnerExcept(callID, zone, "")
}

// OwnerExcept places callID on the fleet without the member named except
// (a draining node placing a call elsewhere).
func (c *Cluster) OwnerExcept(callID, zone, except string) (Node, Outcome) {
	nodes := c.Nodes()
	ms := make([]Member, 0, len(nodes))
	byID := make(map[string]Node, len(nodes))
	for _, n := range nodes {
		if n.ID == except {
			continue
		}
		ms = append(ms, n.Member())
		byID[n.ID] = n
	}
	m, out := Place(callID, zone, ms)
	return byID[m.ID], out
}

// Leave tells the fleet this node is going, waiting up to timeout for the
// message to spread, then stops gossiping.
func (c *Cluster) Leave(timeout time.Duration) {
	select {
	case <-c.quit:
		return
	default:
		close(c.quit)
	}
	<-c.done
	if err := c.ml.Leave(timeout); err != nil {
		c.cfg.Logger.Warn("cluster leave", "err", err)
	}
	_ = c.ml.Shutdown()
}

func sortNodes(ns []Node) {
	slices.SortFunc(ns, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
}

// delegate answers memberlist's questions about this node.
type delegate Cluster

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit {
		return nil
	}
	return append([]byte(nil), d.meta...)
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// events logs membership changes.
type events Cluster

func (e *events) NotifyJoin(n *memberlist.Node) {
	(*Cluster)(e).setMember(n)
	e.cfg.Logger.Info("fleet member joined", "node", n.Name, "addr", n.Address())
}
func (e *events) NotifyLeave(n *memberlist.Node) {
	e.membersMu.Lock()
	meta, known := e.members[n.Name]
	delete(e.members, n.Name)
	e.membersMu.Unlock()
	// A member gone without draining first (crash, kill, partition) cut
	// its calls; one that drained let them end. Which of the two is read
	// from what it last gossiped: a drain is announced before the node
	// sends a call elsewhere, and long before it leaves.
	if known && !meta.Draining && n.Name != e.cfg.NodeID {
		if e.cfg.MemberLost != nil {
			e.cfg.MemberLost(n.Name)
		}
		e.cfg.Logger.Warn("fleet member lost without draining", "node", n.Name, "addr", n.Address())
		return
	}
	e.cfg.Logger.Info("fleet member left or died", "node", n.Name, "addr", n.Address(), "draining", meta.Draining)
}
func (e *events) NotifyUpdate(n *memberlist.Node) {
	(*Cluster)(e).setMember(n)
	e.cfg.Logger.Debug("fleet member updated", "node", n.Name)
}

// slogWriter carries memberlist's log lines ("[WARN] memberlist: ...") into slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[INFO]"):
		level = slog.LevelInfo
	}
	w.l.Log(context.Background(), level, "memberlist", "msg", line)
	return len(p), nil
}

var _ io.Writer = slogWriter{}
