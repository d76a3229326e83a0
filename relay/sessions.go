package relay

import (
	"context"
	"encoding/binary"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/sys/cpu"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/offload"
)

// Why an allocation ended, as the session record and the admin API say it.
const (
	// EndDeleted: the client sent a Refresh with LIFETIME 0.
	EndDeleted = "deleted"
	// EndExpired: the client stopped refreshing it.
	EndExpired = "expired"
	// EndKilled: an operator ended it (Server.Kill, DELETE /v1/allocations).
	EndKilled = "killed"
	// EndDrained: the node stopped while draining, with the allocation live.
	EndDrained = "drained"
	// EndClosed: the client's TCP, TLS or DTLS connection closed.
	EndClosed = "connection_closed"
	// EndShutdown: the node stopped without a drain.
	EndShutdown = "shutdown"
)

// endReasons are the values an allocation's permits.reason holds; index 0
// is "not decided yet".
var endReasons = [...]string{"", EndDeleted, EndKilled}

const (
	reasonNone uint32 = iota
	reasonDeleted
	reasonKilled
)

// allocCounters is one allocation's user-space traffic, counted as it flows
// by the relay socket (atomics: nothing allocates per packet). The two
// directions are written by different goroutines (the client's reader and
// the relay socket's), so a cache-line pad keeps them from false sharing.
type allocCounters struct {
	c2pPackets, c2pBytes atomic.Uint64
	_                    cpu.CacheLinePad
	p2cPackets, p2cBytes atomic.Uint64
}

func (c *allocCounters) toPeer(n int) {
	c.c2pPackets.Add(1)
	c.c2pBytes.Add(uint64(n)) //nolint:gosec // n is a packet length
}

func (c *allocCounters) toClient(n int) {
	c.p2cPackets.Add(1)
	c.p2cBytes.Add(uint64(n)) //nolint:gosec // n is a packet length
}

// Traffic is what one allocation relayed, on both data paths together.
type Traffic struct {
	BytesToPeer     uint64 `json:"bytes_to_peer"`
	PacketsToPeer   uint64 `json:"packets_to_peer"`
	BytesToClient   uint64 `json:"bytes_to_client"`
	PacketsToClient uint64 `json:"packets_to_client"`
}

// Session is one live allocation as the admin API lists it.
type Session struct {
	// User is the user id the allocation was made under; for a credential
	// placed by call (see cluster.CallUser), the user part of that id.
	User string `json:"user"`
	// Call is the call id of a credential placed by call; empty otherwise.
	Call string `json:"call,omitempty"`
	// Transport is the client's: udp, tcp, tls or dtls.
	Transport string `json:"transport"`
	// Client is the client's transport address; Relay the relayed one, as
	// advertised; RelayProtocol is udp, or tcp for an RFC 6062 allocation.
	Client        string    `json:"client"`
	Relay         string    `json:"relay"`
	RelayProtocol string    `json:"relay_protocol"`
	Created       time.Time `json:"created"`
	// Expires is when the allocation ends unless refreshed.
	Expires     time.Time `json:"expires"`
	AgeSeconds  float64   `json:"age_seconds"`
	Permissions int       `json:"permissions"`
	Channels    int       `json:"channels"`
	Traffic
}

// Filter selects allocations; an empty field matches every allocation.
type Filter struct {
	// User matches the user id, or the user part of a call's id.
	User string
	// Call matches the call id.
	Call string
	// Transport matches the client transport (udp, tcp, tls, dtls).
	Transport string
}

// splitUser returns the user and call of a verified user id.
func splitUser(id string) (user, call string) {
	if c, _, _, u, ok := cluster.ParseCallUser(id); ok {
		return u, c
	}
	return id, ""
}

func (f Filter) match(e allocation.Entry) bool {
	user, call := splitUser(e.UserID)
	return (f.User == "" || f.User == user || f.User == e.UserID) &&
		(f.Call == "" || f.Call == call) &&
		(f.Transport == "" || f.Transport == e.Transport)
}

// Allocations lists the live allocations f selects, oldest first.
func (s *Server) Allocations(f Filter) []Session {
	now := s.now()
	out := []Session{}
	for _, e := range s.cfg.Table.List() {
		if !f.match(e) {
			continue
		}
		user, call := splitUser(e.UserID)
		ss := Session{User: user, Call: call, Transport: e.Transport, Client: e.Key.Client, Relay: e.Relay,
			RelayProtocol: "udp", Created: e.Created, Expires: e.Expires, AgeSeconds: now.Sub(e.Created).Seconds()}
		if p := s.clientRecord(e.Key); p != nil {
			p.mu.RLock()
			ss.Permissions, ss.Channels = len(p.ips), len(p.channels)
			p.mu.RUnlock()
			ss.Traffic = s.traffic(p)
			if p.tcp {
				ss.RelayProtocol = "tcp"
			}
		}
		out = append(out, ss)
	}
	return out
}

// Kill ends every allocation f selects at once, as if it had expired: its
// relay socket closes (and its kernel state goes with it), so peers' and
// the client's media stop there, and the client's next request for it
// fails with 437 Allocation Mismatch. It returns how many it ended.
func (s *Server) Kill(f Filter) int {
	n := 0
	for _, e := range s.cfg.Table.List() {
		if !f.match(e) {
			continue
		}
		p := s.clientRecord(e.Key)
		if p == nil || p.closer == nil || p.closed.Load() {
			continue
		}
		p.reason.CompareAndSwap(reasonNone, reasonKilled)
		_ = p.closer.Close()
		n++
	}
	if n > 0 {
		s.log.Info("killed allocations", "count", n, "user", f.User, "call", f.Call, "transport", f.Transport)
	}
	return n
}

// traffic sums an allocation's user-space counters and its kernel ones:
// live from the kernel while it is there, else as read when it left.
func (s *Server) traffic(p *record) Traffic {
	var k offload.AllocationStats
	p.mu.RLock()
	k = p.kernelFinal
	if p.k != nil && p.k.added {
		if live, err := s.cfg.Offload.AllocationStats(p.k.id); err == nil {
			k = live
		}
	}
	p.mu.RUnlock()
	return Traffic{
		BytesToPeer:     p.stats.c2pBytes.Load() + k.BytesToPeer,
		PacketsToPeer:   p.stats.c2pPackets.Load() + k.PacketsToPeer,
		BytesToClient:   p.stats.p2cBytes.Load() + k.BytesToClient,
		PacketsToClient: p.stats.p2cPackets.Load() + k.PacketsToClient,
	}
}

// noteRefresh records an authenticated Refresh the node hands pion: LIFETIME
// 0 deletes the allocation; any other value sets its expiry the way pion
// does (a lifetime of an hour or more, or none, is the default).
func (s *Server) noteRefresh(k allocation.Key, lifetime time.Duration, has bool) {
	if has && lifetime == 0 {
		if p := s.clientRecord(k); p != nil {
			p.reason.CompareAndSwap(reasonNone, reasonDeleted)
		}
		return
	}
	s.cfg.Table.SetExpiry(k, s.now().Add(s.lifetimeOf(lifetime, has)))
}

// lifetimeAttr reads a request's LIFETIME.
func lifetimeAttr(m *stun.Message) (time.Duration, bool) {
	v, err := m.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 {
		return 0, false
	}
	return time.Duration(binary.BigEndian.Uint32(v)) * time.Second, true
}

// lifetimeNote is the LIFETIME of an Allocate handed to pion, until pion
// reports the allocation created.
type lifetimeNote struct {
	d   time.Duration
	has bool // the Allocate carried a LIFETIME; else pion's default
	at  time.Time
}

// noteAllocate remembers the LIFETIME an Allocate on k asks for (has:
// whether it carried one). Notes of Allocates that never created anything
// go after pendingNote.
// The sweep of old notes runs at most every pendingNote/6, not on every
// Allocate: Allocates refused later (over quota) leave notes behind, and a
// client with credentials can send many from many ports; a sweep per
// Allocate would make each one cost the size of the map under lifeMu.
func (s *Server) noteAllocate(k allocation.Key, lifetime time.Duration, has bool) {
	now := s.now()
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.lifetimes == nil {
		s.lifetimes = map[allocation.Key]lifetimeNote{}
	}
	if now.Sub(s.lifeSwept) > pendingNote/6 {
		s.lifeSwept = now
		for nk, n := range s.lifetimes {
			if now.Sub(n.at) > pendingNote {
				delete(s.lifetimes, nk)
			}
		}
	}
	s.lifetimes[k] = lifetimeNote{d: lifetime, has: has, at: now}
}

// pendingNote is how long a LIFETIME note waits for pion to create its
// allocation; an older note belongs to an Allocate that created nothing.
const pendingNote = 30 * time.Second

// grantedLifetime is the lifetime of the allocation pion just created on k.
func (s *Server) grantedLifetime(k allocation.Key) time.Duration {
	s.lifeMu.Lock()
	n, ok := s.lifetimes[k]
	delete(s.lifetimes, k)
	s.lifeMu.Unlock()
	if ok && s.now().Sub(n.at) > pendingNote {
		ok = false // a failed Allocate's, not this one's
	}
	return s.lifetimeOf(n.d, ok && n.has)
}

// lifetimeOf is the allocation lifetime pion grants for a requested one.
func (s *Server) lifetimeOf(lifetime time.Duration, has bool) time.Duration {
	if has && lifetime < time.Hour {
		return lifetime
	}
	return s.cfg.AllocationLifetime
}

// endSession removes the allocation on k (of listener l) from the table,
// counts it and writes its session record. p is its peer state (nil if
// unknown); the first caller for k does the work, later ones do nothing.
func (s *Server) endSession(l *listener, k allocation.Key, p *record) {
	e, ok := s.cfg.Table.Delete(k)
	if !ok {
		return
	}
	l.allocDeleted.Inc()
	l.allocActive.Dec()
	now := s.now()
	d := now.Sub(e.Created)
	s.m.AllocationLifetime.Observe(d.Seconds())
	if !s.cfg.LogSessions {
		return
	}
	var t Traffic
	reason := EndExpired
	if p != nil {
		t = s.traffic(p)
		reason = endReasons[p.reason.Load()]
	}
	if reason == "" {
		switch {
		case s.closing.Load() && s.draining.Load():
			reason = EndDrained
		case s.closing.Load():
			reason = EndShutdown
		case e.Transport != "udp" && now.Before(e.Expires.Add(-time.Second)):
			reason = EndClosed
		default:
			reason = EndExpired
		}
	}
	user, call := splitUser(e.UserID)
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "session ended",
		slog.String("user", user), slog.String("call", call), slog.String("transport", e.Transport),
		slog.String("client", e.Key.Client), slog.String("relay", e.Relay),
		slog.Float64("duration_seconds", d.Seconds()),
		slog.Uint64("bytes_to_peer", t.BytesToPeer), slog.Uint64("packets_to_peer", t.PacketsToPeer),
		slog.Uint64("bytes_to_client", t.BytesToClient), slog.Uint64("packets_to_client", t.PacketsToClient),
		slog.String("reason", reason))
}

// endRemaining ends what is still in the table once every pion server has
// closed: pion reports those deletions later, or never if the process
// exits first. It runs on the goroutine that ran New, so s.listeners is
// safe to read (pion's goroutines take their listener from the closure).
func (s *Server) endRemaining() {
	for _, e := range s.cfg.Table.List() {
		if e.Key.Listener >= 0 && e.Key.Listener < len(s.listeners) {
			s.endSession(s.listeners[e.Key.Listener], e.Key, s.clientRecord(e.Key))
		}
	}
}

// ValidTransport reports whether t is a client transport Filter takes.
func ValidTransport(t string) bool {
	_, ok := metrics.TransportOf(t)
	return ok
}
