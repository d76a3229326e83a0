package relay

import (
	"net"
	"sync"
	"time"
)

// Port reservations (RFC 8656 §7.1 EVEN-PORT, §14.9 RESERVATION-TOKEN).
//
// An Allocate with EVEN-PORT gets an even relay port, and pion hands the
// client a RESERVATION-TOKEN for the port after it: a later Allocate that
// presents the token is to get exactly that port (coturn's uclient takes
// its RTCP port so). Pion reserves nothing but the number, so the next
// port used to stay free for anyone: another Allocate on this node, or any
// other program on the host binding a port in the range, could take it
// before the token came back, and that Allocate then failed with 508. So
// the node holds it: an EVEN-PORT allocation gets an even port whose next
// port can be bound too (pion's pick when it can, else another pair), the
// next port's socket is opened at once and kept until the token claims it
// or reservationLifetime passes.
//
// Pion asks the relay address generator for a given port only for these
// two requests: the even port of an EVEN-PORT, which pion picked by opening
// random relay ports until one was even, and that port plus one for a
// RESERVATION-TOKEN.

// reservedPorts holds the sockets of reserved ports, per network.
type reservedPorts struct {
	mu     sync.Mutex
	held   map[reservedKey]*heldPort
	closed bool // the server closed: hold nothing more
}

type reservedKey struct {
	network string
	port    int
}

type heldPort struct {
	pc    net.PacketConn
	pool  *portPool
	timer *time.Timer
}

// hold keeps pc, bound to port (taken from pool), until claim takes it or
// reservationLifetime passes; then it is closed and the port goes back.
func (r *reservedPorts) hold(network string, port int, pc net.PacketConn, pool *portPool) {
	k := reservedKey{network, port}
	h := &heldPort{pc: pc, pool: pool}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		h.free(port)
		return
	}
	if r.held == nil {
		r.held = map[reservedKey]*heldPort{}
	}
	if old := r.held[k]; old != nil { // cannot happen: the pool hands a port out once
		old.timer.Stop()
		old.free(port)
	}
	r.held[k] = h
	h.timer = time.AfterFunc(reservationLifetime, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.held[k] == h {
			delete(r.held, k)
			h.free(port)
		}
	})
}

// claim takes the socket held for port, or returns nil when none is.
func (r *reservedPorts) claim(network string, port int) net.PacketConn {
	k := reservedKey{network, port}
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.held[k]
	if h == nil {
		return nil
	}
	delete(r.held, k)
	h.timer.Stop()
	return h.pc
}

// close frees every held port; nothing is held afterwards.
func (r *reservedPorts) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for k, h := range r.held {
		h.timer.Stop()
		h.free(k.port)
	}
	clear(r.held)
}

// count returns how many ports are held (for tests).
func (r *reservedPorts) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}

func (h *heldPort) free(port int) {
	_ = h.pc.Close()
	h.pool.release(port)
}

// bindEven opens the relay socket of an EVEN-PORT allocation and reserves
// the port after it (see above): requested (pion's pick) when both ports
// can be had, else another even port of the pool whose next port is free.
// When no such pair can be found it returns no socket and no error: the
// caller then binds requested alone, without a reservation, as a generator
// that reserves nothing would.
func (s *Server) bindEven(network string, pool *portPool, requested int, listen func(port int) (net.PacketConn, error)) (int, net.PacketConn, error) {
	now := s.now()
	for attempt := range maxBindAttempts + 1 {
		port, ok := requested, true
		if attempt == 0 {
			ok = pool.takePair(requested, now)
		} else {
			port, ok = pool.takeRandomPair(now)
		}
		if !ok {
			if attempt == 0 {
				continue
			}
			break
		}
		pc, err := listen(port)
		if err != nil {
			pool.release(port + 1)
			if !pool.failed(port, err, now) {
				return 0, nil, err
			}
			continue
		}
		next, err := listen(port + 1)
		if err != nil {
			_ = pc.Close()
			pool.release(port)
			if !pool.failed(port+1, err, now) {
				return 0, nil, err
			}
			continue
		}
		s.reserved.hold(network, port+1, next, pool)
		return port, pc, nil
	}
	return 0, nil, nil
}
