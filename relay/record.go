package relay

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/offload"
)

// record is everything the packet path knows of one allocation, in one
// place: the peer IPs it holds permissions for (RFC 8656 §9) and the
// channels it has bound (§12), as mirrored from pion's events; its
// --max-bps limiter, one bucket per direction; its traffic counters; its
// part of the kernel path; and what ends it. The relay socket reads the
// permissions and spends the limiter's tokens per packet; the inspector
// reads both sets to hold --max-permissions and --max-channels; the admin
// API and the session record read the counters. Who owns the allocation is
// the allocation table's (allocation.Table.Owner): requests ask it, packets
// never do (pion finds an allocation by its 5-tuple).
//
// Every operation is O(1) and takes only this allocation's lock, so one
// allocation with the most permissions allowed costs other allocations
// nothing when it is created, refreshed or closed.
type record struct {
	mu       sync.RWMutex
	ips      map[netip.Addr]struct{}
	channels map[uint16]netip.AddrPort // channel number -> peer
	// k is the allocation's part of the kernel path; nil when the kernel
	// path is off or does not take this allocation. Guarded by mu.
	k *kernelState
	// toPeer and toClient are the --max-bps limiter, one token bucket per
	// direction; nil when unlimited. Set when the record is made. A UDP
	// relay socket spends them; RFC 6062 TCP data is not limited.
	toPeer, toClient *bucket
	// method is the last request method the inspector handed pion for this
	// allocation, so that pion's own peer check (the second line) is counted
	// under the right method.
	method atomic.Uint32
	// closed is set when the allocation's relay socket closes.
	closed atomic.Bool
	// stats is the allocation's user-space traffic; kernelFinal what the
	// kernel relayed for it, read when it left the kernel (under mu).
	stats       allocCounters
	kernelFinal offload.AllocationStats
	// reason is why the allocation is ending, once the node knows better
	// than "expired" (reasonNone): see sessions.go.
	reason atomic.Uint32
	// closer is the allocation's relay socket, closed to end it; tcp is set
	// for an RFC 6062 allocation. Both are set before pion sees it.
	closer io.Closer
	tcp    bool
}

// newRecord makes the record of a new allocation: k is its kernel state
// (nil: user space only), and each direction gets the node's --max-bps.
func (s *Server) newRecord(k *kernelState) *record {
	return &record{ips: map[netip.Addr]struct{}{}, channels: map[uint16]netip.AddrPort{}, k: k,
		toPeer: newBucket(s.cfg.MaxBPS, s.now), toClient: newBucket(s.cfg.MaxBPS, s.now)}
}

// bucket is a token bucket in bytes, refilled at rate bytes per second, with
// room for half a second of traffic (at least one full-size packet).
type bucket struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time // the Server's clock (Config.Now)
}

func newBucket(bitsPerSecond int64, now func() time.Time) *bucket {
	if bitsPerSecond <= 0 {
		return nil
	}
	rate := float64(bitsPerSecond) / 8
	burst := max(rate/2, 2*maxMessageSize)
	return &bucket{rate: rate, burst: burst, tokens: burst, last: now(), now: now}
}

// allow takes n bytes from the bucket if they are there; a nil bucket
// (unlimited) always has them.
func (b *bucket) allow(n int) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

func (p *record) has(a netip.Addr) bool {
	p.mu.RLock()
	_, ok := p.ips[a]
	p.mu.RUnlock()
	return ok
}

// add reports whether a was new.
func (p *record) add(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.ips[a]; ok {
		return false
	}
	p.ips[a] = struct{}{}
	return true
}

// remove reports whether a was there.
func (p *record) remove(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.ips[a]; !ok {
		return false
	}
	delete(p.ips, a)
	return true
}

// bind records channel n to peer, reporting whether it was new.
func (p *record) bind(n uint16, peer netip.AddrPort) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.channels[n]; ok {
		return false
	}
	p.channels[n] = peer
	return true
}

// unbind forgets channel n, reporting whether it was there.
func (p *record) unbind(n uint16) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.channels[n]; !ok {
		return false
	}
	delete(p.channels, n)
	return true
}

// wouldExceed reports which limit a request adding the peer IPs in peers
// (already unmapped) and, when channel is non-zero, binding that channel
// would pass: "" when none.
func (p *record) wouldExceed(peers []netip.Addr, channel uint16, maxPerms, maxChans int) metrics.Limit {
	p.mu.RLock()
	defer p.mu.RUnlock()
	fresh := 0
	for i, a := range peers {
		if _, ok := p.ips[a]; ok {
			continue
		}
		dup := false
		for _, b := range peers[:i] {
			dup = dup || a == b
		}
		if !dup {
			fresh++
		}
	}
	if len(p.ips)+fresh > maxPerms {
		return metrics.LimitPermissions
	}
	if channel != 0 {
		if _, ok := p.channels[channel]; !ok && len(p.channels)+1 > maxChans {
			return metrics.LimitChannels
		}
	}
	return ""
}

// recordKey names a relayed address with its protocol: a UDP and a TCP
// allocation may hold the same port number.
func recordKey(relay net.Addr) string {
	return relay.Network() + "/" + relay.String()
}

// registerRecord files p as the record of the allocation whose relayed
// address is relay.
func (s *Server) registerRecord(relay net.Addr, p *record) *record {
	s.permMu.Lock()
	s.records[recordKey(relay)] = p
	s.permMu.Unlock()
	return p
}

// unregisterRecord drops an allocation's state when its relay socket
// closes. Pion removes permissions and channels before it closes the
// socket; whatever is left is taken off the gauges here.
func (s *Server) unregisterRecord(relay net.Addr, p *record) {
	s.permMu.Lock()
	p.closed.Store(true)
	if s.records[recordKey(relay)] == p {
		delete(s.records, recordKey(relay))
		p.mu.Lock()
		s.kernelEnd(p)
		s.m.PermissionsActive.Sub(float64(len(p.ips)))
		s.m.ChannelsActive.Sub(float64(len(p.channels)))
		clear(p.ips)
		clear(p.channels)
		p.mu.Unlock()
	}
	s.permMu.Unlock()
}

// closeRelaySockets closes every allocation's relay socket (node shutdown).
func (s *Server) closeRelaySockets() {
	s.permMu.Lock()
	closers := make([]io.Closer, 0, len(s.records))
	for _, p := range s.records {
		if p.closer != nil {
			closers = append(closers, p.closer)
		}
	}
	s.permMu.Unlock()
	for _, c := range closers {
		_ = c.Close()
	}
}

// lookupRecord returns the peer state of the allocation whose relayed
// address is relay, or nil.
func (s *Server) lookupRecord(relay net.Addr) *record {
	if relay == nil {
		return nil
	}
	k := recordKey(relay)
	s.permMu.Lock()
	defer s.permMu.Unlock()
	return s.records[k]
}

// linkClient remembers which allocation a client 5-tuple holds, so that
// requests (found by their 5-tuple) reach the allocation's peer state, and
// starts its kernel path: client is its address, server the listener's.
func (s *Server) linkClient(k allocation.Key, relay, client, server net.Addr) {
	p := s.lookupRecord(relay)
	if p == nil {
		return
	}
	s.permMu.Lock()
	s.byClient[k] = p
	s.permMu.Unlock()
	s.kernelStart(p, client, server)
}

// unlinkClient forgets k's allocation once its relay socket has closed.
// Pion reports a deletion after it closed the socket, and possibly after a
// new allocation on the same 5-tuple was created and linked: that link
// stays.
func (s *Server) unlinkClient(k allocation.Key) {
	s.permMu.Lock()
	if p := s.byClient[k]; p != nil && p.closed.Load() {
		delete(s.byClient, k)
	}
	s.permMu.Unlock()
}

// clientRecord returns the peer state of the allocation held by k, or nil.
func (s *Server) clientRecord(k allocation.Key) *record {
	s.permMu.Lock()
	defer s.permMu.Unlock()
	return s.byClient[k]
}

// permissionChanged applies one of pion's permission events. Pion may report
// a deletion twice (timer and Close racing); the set makes the gauge exact.
func (s *Server) permissionChanged(relay net.Addr, peer net.IP, created bool) {
	a, ok := netip.AddrFromSlice(peer)
	if !ok {
		return
	}
	p := s.lookupRecord(relay)
	if p == nil {
		return
	}
	a = a.Unmap()
	switch {
	case created && p.add(a):
		s.m.PermissionsActive.Inc()
	case !created && p.remove(a):
		s.m.PermissionsActive.Dec()
	default:
		return
	}
	if p.k != nil {
		p.mu.Lock()
		for n, peer := range p.channels {
			if peer.Addr() == a {
				s.kernelSync(p, n, peer)
			}
		}
		p.mu.Unlock()
	}
}

// channelChanged applies one of pion's channel events, exactly once each.
func (s *Server) channelChanged(relay, peer net.Addr, number uint16, created bool) {
	p := s.lookupRecord(relay)
	if p == nil {
		return
	}
	pa, _ := addrPortOf(peer)
	switch {
	case created && p.bind(number, pa):
		s.m.ChannelsActive.Inc()
	case !created && p.unbind(number):
		s.m.ChannelsActive.Dec()
	default:
		return
	}
	if p.k != nil {
		p.mu.Lock()
		s.kernelSync(p, number, pa)
		p.mu.Unlock()
	}
}
