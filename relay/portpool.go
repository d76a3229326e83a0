package relay

import (
	"errors"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"
)

// Relay port bookkeeping.
//
// A node refused allocations by trying to bind every port of the range in
// turn: once one credential held them all, each refusal cost a bind per port
// (125 ms for the default 16,384) on the listener's read loop, stalling
// every other client of that socket. The pool below knows which ports are
// free, so "no free port" costs a mutex and a length check, and a free port
// costs one bind unless something else on the host holds it.

const (
	// maxBindAttempts bounds the binds one allocation tries: a port the
	// pool thinks free fails only when something outside the node holds it,
	// which is rare, so eight failures in a row mean the range is taken.
	maxBindAttempts = 8
	// portAsideFor is how long a port something else on the host held stays
	// out of the pool before it is tried again.
	portAsideFor = 30 * time.Second
)

// Port states kept in portPool.pos next to the free-slice indexes (>= 0).
const (
	portInUse = -1 // a relay socket of this node holds it, or a bind is under way
	portAside = -2 // something else on the host held it; see portAsideFor
)

// errPortHeld marks a port found held by something outside the pool's view.
var errPortHeld = errors.New("relay: relay port held elsewhere")

// portPool is one network's free relay ports (udp4, udp6, tcp4 or tcp6) in
// --min-port..--max-port. Taking a random free port, taking a given one and
// giving one back are O(1): free holds the free ports in no order and pos
// holds each port's index in free, or its state. It is used per allocation,
// not per packet, so one mutex guards it.
type portPool struct {
	mu     sync.Mutex
	lo     int
	free   []uint16
	pos    []int32       // by port-lo: index in free, portInUse or portAside
	aside  []asidePort   // ports set aside, oldest first, each at most once
	queued []bool        // by port-lo: the port has an entry in aside
	randN  func(int) int // random index in [0, n)
}

// asidePort is a port set aside until a time.
type asidePort struct {
	port  uint16
	until time.Time
}

// newPortPool returns a pool with every port of lo..hi free.
func newPortPool(lo, hi int) *portPool {
	n := hi - lo + 1
	p := &portPool{lo: lo, free: make([]uint16, n), pos: make([]int32, n), queued: make([]bool, n), randN: rand.IntN}
	for i := range n {
		p.free[i] = uint16(lo + i) //nolint:gosec // lo..hi are ports
		p.pos[i] = int32(i)        //nolint:gosec // n <= 65535
	}
	return p
}

// take removes a random free port from the pool.
func (p *portPool) take(now time.Time) (port int, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.returnAside(now)
	if len(p.free) == 0 {
		return 0, false
	}
	port = int(p.free[p.randN(len(p.free))])
	p.remove(port)
	return port, true
}

// takePort takes port out of the pool for a bind unless this node holds it:
// a RESERVATION-TOKEN's or an EVEN-PORT's port. A port set aside is tried
// too (one bind, and whatever held it may be gone); its entry in aside
// stays, and returnAside skips it if the port is in use by then.
func (p *portPool) takePort(port int, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.returnAside(now)
	if port < p.lo || port >= p.lo+len(p.pos) {
		return false
	}
	switch st := p.pos[port-p.lo]; {
	case st == portInUse:
		return false
	case st == portAside:
		p.pos[port-p.lo] = portInUse
	default:
		p.remove(port)
	}
	return true
}

// takePair takes port and port+1 out of the pool if both are free: an
// EVEN-PORT allocation's port and the one it reserves (reserve.go).
func (p *portPool) takePair(port int, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.returnAside(now)
	if !p.isFree(port) || !p.isFree(port+1) {
		return false
	}
	p.remove(port)
	p.remove(port + 1)
	return true
}

// pairSamples bounds the free ports takeRandomPair looks at: with half the
// range free, one in four is the even half of a free pair.
const pairSamples = 64

// takeRandomPair takes a random even port and the port after it out of the
// pool, when it finds a free pair among pairSamples random free ports.
func (p *portPool) takeRandomPair(now time.Time) (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.returnAside(now)
	for range min(pairSamples, len(p.free)) {
		even := int(p.free[p.randN(len(p.free))]) &^ 1
		if p.isFree(even) && p.isFree(even+1) {
			p.remove(even)
			p.remove(even + 1)
			return even, true
		}
	}
	return 0, false
}

// isFree reports whether port is in the pool. The caller holds mu.
func (p *portPool) isFree(port int) bool {
	return port >= p.lo && port < p.lo+len(p.pos) && p.pos[port-p.lo] >= 0
}

// release gives a port taken from the pool back.
func (p *portPool) release(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if port < p.lo || port >= p.lo+len(p.pos) || p.pos[port-p.lo] != portInUse {
		return
	}
	p.pos[port-p.lo] = int32(len(p.free)) //nolint:gosec // < 65536
	p.free = append(p.free, uint16(port)) //nolint:gosec // in lo..hi
}

// setAside keeps a port taken from the pool out of it until portAsideFor
// has passed: something else on the host holds it.
func (p *portPool) setAside(port int, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if port < p.lo || port >= p.lo+len(p.pos) || p.pos[port-p.lo] != portInUse {
		return
	}
	p.pos[port-p.lo] = portAside
	if !p.queued[port-p.lo] {
		// A port with an entry already (takePort took it from aside since)
		// keeps that entry, so aside holds each port at most once; the port
		// may then come back before portAsideFor, which costs one bind.
		p.queued[port-p.lo] = true
		p.aside = append(p.aside, asidePort{port: uint16(port), until: now.Add(portAsideFor)}) //nolint:gosec // in lo..hi
	}
}

// available returns the number of free ports (for tests and logs).
func (p *portPool) available(now time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.returnAside(now)
	return len(p.free)
}

// remove takes a free port out of free by swapping the last one into its
// place. The caller holds mu.
func (p *portPool) remove(port int) {
	i := p.pos[port-p.lo]
	last := p.free[len(p.free)-1]
	p.free[i] = last
	p.pos[int(last)-p.lo] = i
	p.free = p.free[:len(p.free)-1]
	p.pos[port-p.lo] = portInUse
}

// returnAside puts ports whose time aside is over back in the pool, unless
// takePort has taken one meanwhile and its bind succeeded. Each port is in
// aside at most once, so this is O(1) amortised. The caller holds mu.
func (p *portPool) returnAside(now time.Time) {
	n := 0
	for n < len(p.aside) && !now.Before(p.aside[n].until) {
		port := int(p.aside[n].port)
		p.queued[port-p.lo] = false
		if p.pos[port-p.lo] == portAside {
			p.pos[port-p.lo] = int32(len(p.free)) //nolint:gosec // < 65536
			p.free = append(p.free, uint16(port)) //nolint:gosec // in lo..hi
		}
		n++
	}
	if n > 0 {
		// Shift rather than reslice so the backing array does not creep.
		p.aside = p.aside[:copy(p.aside, p.aside[n:])]
	}
}

// bind finds a port for a relay socket and calls bindFn for it: the
// requested port if it is free, else random free ports until bindFn
// succeeds, at most maxBindAttempts times. A port bindFn finds held
// (EADDRINUSE or errPortHeld) is set aside; any other error gives the port
// back and is returned, since another port would fail the same way. An
// empty pool is answered at once with ErrPortsExhausted.
func (p *portPool) bind(requested int, now time.Time, bindFn func(port int) error) (int, error) {
	if requested != 0 {
		// A RESERVATION-TOKEN's port+1 past --max-port, or one in use.
		if !p.takePort(requested, now) {
			return 0, ErrPortsExhausted
		}
		if err := bindFn(requested); err != nil {
			p.failed(requested, err, now)
			return 0, err
		}
		return requested, nil
	}
	for range maxBindAttempts {
		port, ok := p.take(now)
		if !ok {
			return 0, ErrPortsExhausted
		}
		err := bindFn(port)
		if err == nil {
			return port, nil
		}
		if !p.failed(port, err, now) {
			return 0, err
		}
	}
	return 0, ErrPortsExhausted
}

// failed files a port whose bind failed and reports whether the failure was
// the port's own (held elsewhere), so another port may succeed.
func (p *portPool) failed(port int, err error, now time.Time) bool {
	if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, errPortHeld) {
		p.setAside(port, now)
		return true
	}
	p.release(port)
	return false
}

// portPools holds a node's pools, one per relay network, each made on first
// use so a family without allocations costs nothing. The zero value is ready.
type portPools struct {
	once  [4]sync.Once
	pools [4]*portPool
}

// get returns network's pool for the port range lo..hi.
func (pp *portPools) get(network string, lo, hi int) *portPool {
	i := 0
	switch network {
	case "udp6":
		i = 1
	case "tcp4":
		i = 2
	case "tcp6":
		i = 3
	}
	pp.once[i].Do(func() { pp.pools[i] = newPortPool(lo, hi) })
	return pp.pools[i]
}

// now is the Server's clock: Config.Now, which validate fills.
func (s *Server) now() time.Time {
	if s.cfg.Now == nil {
		return time.Now() // a Server built by hand in a test
	}
	return s.cfg.Now()
}

// portPool returns the pool of relay ports for network.
func (s *Server) portPool(network string) *portPool {
	return s.pools.get(network, s.cfg.MinPort, s.cfg.MaxPort)
}
