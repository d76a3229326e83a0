package offload

import (
	"sync"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/supernode/supernode/metrics"
)

// Counters are the program's node-wide counts, summed over CPUs.
type Counters struct {
	ToPeerPackets, ToPeerBytes     uint64 // client to peer (one-pass packets included)
	ToClientPackets, ToClientBytes uint64 // peer to client (one-pass packets included)
	OnePassPackets, OnePassBytes   uint64 // client to client in one pass
	CrossOutBytes, CrossInBytes    uint64 // to and from other fleet members
	DropRate                       uint64 // over --max-bps
	DropError                      uint64 // a helper failed mid-rewrite
	PassMTU, PassRoute             uint64 // left to user space (metrics.PassReason says why)
	PassNoServer, PassShape        uint64 // left to user space (metrics.PassReason says why)
}

// Counters reads and sums the per-CPU counters; one that cannot be read
// reads as zero.
func (o *Offload) Counters() Counters {
	var c Counters
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return c
	}
	read := func(i relayCounter) uint64 {
		var per []uint64
		if err := o.objs.Counters.Lookup(uint32(i), &per); err != nil {
			return 0
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		return sum
	}
	// One lookup per counter: a batch lookup of a per-CPU array saves
	// little for fifteen entries read at scrape time.
	c.ToPeerPackets = read(relayCounterCNT_C2P_PACKETS)
	c.ToPeerBytes = read(relayCounterCNT_C2P_BYTES)
	c.ToClientPackets = read(relayCounterCNT_P2C_PACKETS)
	c.ToClientBytes = read(relayCounterCNT_P2C_BYTES)
	c.OnePassPackets = read(relayCounterCNT_ONEPASS_PACKETS)
	c.OnePassBytes = read(relayCounterCNT_ONEPASS_BYTES)
	c.CrossOutBytes = read(relayCounterCNT_CROSS_OUT_BYTES)
	c.CrossInBytes = read(relayCounterCNT_CROSS_IN_BYTES)
	c.DropRate = read(relayCounterCNT_DROP_RATE)
	c.DropError = read(relayCounterCNT_ERR_REWRITE)
	c.PassMTU = read(relayCounterCNT_PASS_MTU)
	c.PassRoute = read(relayCounterCNT_PASS_ROUTE)
	c.PassNoServer = read(relayCounterCNT_PASS_NO_SERVER)
	c.PassShape = read(relayCounterCNT_PASS_SHAPE)
	return c
}

// statsState serializes the gathers that add the kernel's counts to the
// metrics.
type statsState struct {
	mu sync.Mutex
}

// Register makes m report the kernel path: supernode_offload_enabled is 1,
// and the kernel's counts are added to the same counters user space
// counts in (with path="kernel") every time m is gathered.
func (o *Offload) Register(m *metrics.Metrics) {
	m.OffloadEnabled.Set(1)
	type pair struct {
		c   prometheus.Counter
		get func(Counters) uint64
	}
	pairs := []pair{
		{m.RelayPackets.For(metrics.ClientToPeer, metrics.TransportUDP, metrics.PathKernel), func(c Counters) uint64 { return c.ToPeerPackets }},
		{m.RelayBytes.For(metrics.ClientToPeer, metrics.TransportUDP, metrics.PathKernel), func(c Counters) uint64 { return c.ToPeerBytes }},
		{m.RelayPackets.For(metrics.PeerToClient, metrics.TransportUDP, metrics.PathKernel), func(c Counters) uint64 { return c.ToClientPackets }},
		{m.RelayBytes.For(metrics.PeerToClient, metrics.TransportUDP, metrics.PathKernel), func(c Counters) uint64 { return c.ToClientBytes }},
		{m.OffloadOnePassPackets, func(c Counters) uint64 { return c.OnePassPackets }},
		{m.OffloadOnePassBytes, func(c Counters) uint64 { return c.OnePassBytes }},
		{m.CrossHostBytes.For(metrics.ClientToPeer), func(c Counters) uint64 { return c.CrossOutBytes }},
		{m.CrossHostBytes.For(metrics.PeerToClient), func(c Counters) uint64 { return c.CrossInBytes }},
		{m.PacketsDropped.For(metrics.DropRateLimit), func(c Counters) uint64 { return c.DropRate }},
		{m.PacketsDropped.For(metrics.DropOffloadError), func(c Counters) uint64 { return c.DropError }},
		{m.OffloadPassed.For(metrics.PassMTU), func(c Counters) uint64 { return c.PassMTU }},
		{m.OffloadPassed.For(metrics.PassRoute), func(c Counters) uint64 { return c.PassRoute }},
		{m.OffloadPassed.For(metrics.PassNoServer), func(c Counters) uint64 { return c.PassNoServer }},
		{m.OffloadPassed.For(metrics.PassShape), func(c Counters) uint64 { return c.PassShape }},
	}
	last := make([]uint64, len(pairs)) // what each metric has been given; under o.stats.mu
	m.OnGather(func() {
		now := o.Counters()
		o.stats.mu.Lock()
		defer o.stats.mu.Unlock()
		for i, p := range pairs {
			// A counter that read as zero (a failed read, or after Close)
			// adds nothing and is not taken as the new base: the next
			// good read adds only what is new.
			if n := p.get(now); n > last[i] {
				p.c.Add(float64(n - last[i]))
				last[i] = n
			}
		}
	})
}

// cpus is the number of possible CPUs, the length of a per-CPU value.
func (o *Offload) cpus() int {
	n, err := ebpf.PossibleCPU()
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// monotonicNow is bpf_ktime_get_ns's clock.
func monotonicNow() uint64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0 // cannot fail on Linux; a zero start only fills the buckets
	}
	return uint64(ts.Nano())
}
