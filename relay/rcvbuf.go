package relay

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/supernode/supernode/metrics"
)

// Errors of the kernel drop counts.
var (
	ErrDropsUnsupported = errors.New("relay: kernel socket drop counts need Linux (SO_MEMINFO)")
	errShortMeminfo     = errors.New("relay: SO_MEMINFO answered without SK_MEMINFO_DROPS")
)

// RcvbufDrops reads how many datagrams the kernel dropped because a
// listener socket's receive buffer was full. The kernel counts them per
// socket and the node never sees them, so they are read from the sockets
// (at scrape time) rather than counted on the packet path.
type RcvbufDrops struct {
	mu      sync.Mutex
	conns   []syscall.RawConn
	last    []uint32 // the kernel's count at the previous read, per socket
	counter prometheus.Counter
}

// NewRcvbufDrops watches pcs, which must be UDP sockets this node opened
// (their counts start at zero when they are opened; every drop since is
// counted), and adds each new drop to counter.
func NewRcvbufDrops(pcs []net.PacketConn, counter prometheus.Counter) (*RcvbufDrops, error) {
	d := &RcvbufDrops{counter: counter, last: make([]uint32, len(pcs))}
	for _, pc := range pcs {
		rc, err := rawConn(pc)
		if err != nil {
			return nil, err
		}
		d.conns = append(d.conns, rc)
	}
	if _, err := d.Update(); err != nil {
		return nil, err
	}
	return d, nil
}

// Update reads every socket's count and adds what is new since the last
// read to the counter; it returns the total added. A socket already closed
// keeps its last count. The kernel's count is 32 bits and wraps; reads
// more than 2^32 drops apart would lose 2^32 of them.
func (d *RcvbufDrops) Update() (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var added uint64
	var errs []error
	for i, rc := range d.conns {
		var n uint32
		var serr error
		if err := rc.Control(func(fd uintptr) { n, serr = sockDrops(int(fd)) }); err != nil {
			continue // closed: nothing more will be dropped there
		}
		if serr != nil {
			errs = append(errs, serr)
			continue
		}
		added += dropsSince(d.last[i], n)
		d.last[i] = n
	}
	if added > 0 {
		d.counter.Add(float64(added))
	}
	if len(errs) > 0 {
		return added, fmt.Errorf("relay: read socket drops: %w", errors.Join(errs...))
	}
	return added, nil
}

// dropsSince is how many drops the kernel counted from last to now, its
// count being 32 bits that wrap.
func dropsSince(last, now uint32) uint64 { return uint64(now - last) }

// CountRcvbufDrops makes m's supernode_packets_dropped_total{reason="rcvbuf"}
// follow the kernel's drop counts of pcs: the registry reads them every
// time it is gathered, just before it reports packets_dropped_total, so
// every scrape shows the drops up to that moment.
func CountRcvbufDrops(m *metrics.Metrics, pcs []net.PacketConn) error {
	d, err := NewRcvbufDrops(pcs, m.PacketsDropped.For(metrics.DropRcvbuf))
	if err != nil {
		return err
	}
	m.OnGather(func() { _, _ = d.Update() }) // a socket that cannot be read keeps its last count
	return nil
}
