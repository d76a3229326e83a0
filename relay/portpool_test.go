package relay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/supernode/supernode/looptest"
)

// fakeBinds is a bind function that counts its calls and fails for the
// ports in held as if another process on the host held them.
type fakeBinds struct {
	calls int
	held  map[int]bool
	err   error // when set, every bind fails with it
}

func (f *fakeBinds) bind(port int) error {
	f.calls++
	switch {
	case f.err != nil:
		return f.err
	case f.held[port]:
		return &net.OpError{Op: "listen", Net: "udp4", Err: fmt.Errorf("bind: %w", syscall.EADDRINUSE)}
	}
	return nil
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// TestPortPoolExhaustedWithoutBinding: once every port is taken, an
// allocation is refused without a single bind.
func TestPortPoolExhaustedWithoutBinding(t *testing.T) {
	p := newPortPool(50000, 50063)
	f := &fakeBinds{}
	seen := map[int]bool{}
	for range 64 {
		port, err := p.bind(0, t0, f.bind)
		if err != nil {
			t.Fatalf("bind with ports free: %v", err)
		}
		if port < 50000 || port > 50063 || seen[port] {
			t.Fatalf("port %d out of range or handed out twice", port)
		}
		seen[port] = true
	}
	if f.calls != 64 {
		t.Fatalf("%d binds for 64 free ports, want 64", f.calls)
	}
	for range 1000 {
		if _, err := p.bind(0, t0, f.bind); !errors.Is(err, ErrPortsExhausted) {
			t.Fatalf("bind with no port free: %v, want ErrPortsExhausted", err)
		}
		if _, err := p.bind(50010, t0, f.bind); !errors.Is(err, ErrPortsExhausted) {
			t.Fatalf("requested port in use: %v, want ErrPortsExhausted", err)
		}
	}
	if f.calls != 64 {
		t.Fatalf("refusals tried %d binds, want none", f.calls-64)
	}
}

// TestPortPoolGiveBack: a released port is handed out again, and a
// requested port is taken only while free.
func TestPortPoolGiveBack(t *testing.T) {
	p := newPortPool(50000, 50003)
	f := &fakeBinds{}
	for range 4 {
		if _, err := p.bind(0, t0, f.bind); err != nil {
			t.Fatal(err)
		}
	}
	p.release(50002)
	p.release(50002) // a second release of the same port changes nothing
	if got := p.available(t0); got != 1 {
		t.Fatalf("%d ports free after one release, want 1", got)
	}
	if port, err := p.bind(0, t0, f.bind); err != nil || port != 50002 {
		t.Fatalf("bind after release = %d, %v; want 50002", port, err)
	}
	p.release(50001)
	if port, err := p.bind(50001, t0, f.bind); err != nil || port != 50001 {
		t.Fatalf("requested free port = %d, %v; want 50001", port, err)
	}
	if _, err := p.bind(50001, t0, f.bind); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("requested port in use: %v", err)
	}
	for _, port := range []int{49999, 50004, 65536, -1} {
		if _, err := p.bind(port, t0, f.bind); !errors.Is(err, ErrPortsExhausted) {
			t.Errorf("requested port %d outside the range: %v", port, err)
		}
		p.release(port) // ignored
	}
	for port := 50000; port <= 50003; port++ {
		p.release(port)
	}
	if got := p.available(t0); got != 4 {
		t.Fatalf("%d ports free after giving all back, want 4", got)
	}
}

// TestPortPoolSkipsHeldPort: a port something else holds is set aside and
// another one used; it comes back once portAsideFor has passed.
func TestPortPoolSkipsHeldPort(t *testing.T) {
	p := newPortPool(50000, 50003)
	p.randN = func(int) int { return 0 } // the port at the front of free first
	held := int(p.free[0])
	f := &fakeBinds{held: map[int]bool{held: true}}
	port, err := p.bind(0, t0, f.bind)
	if err != nil || port == held {
		t.Fatalf("bind = %d, %v; want a port other than the held %d", port, err, held)
	}
	if f.calls != 2 {
		t.Fatalf("%d binds, want 2 (the held port, then another)", f.calls)
	}
	if got := p.available(t0); got != 2 {
		t.Fatalf("%d ports free, want 2 (one in use, one aside)", got)
	}
	// A requested port set aside is tried (one bind): still held, it stays aside.
	if _, err := p.bind(held, t0.Add(time.Second), f.bind); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("requested port still held: %v, want EADDRINUSE", err)
	}
	if f.calls != 3 || p.available(t0) != 2 {
		t.Fatalf("%d binds, %d free; want 3 and the held port still aside", f.calls, p.available(t0))
	}
	later := t0.Add(portAsideFor) // from the first time it was set aside
	if got := p.available(later.Add(-time.Nanosecond)); got != 2 {
		t.Fatalf("%d ports free before portAsideFor, want 2", got)
	}
	if got := p.available(later); got != 3 {
		t.Fatalf("%d ports free after portAsideFor, want 3", got)
	}
	delete(f.held, held)
	if got, err := p.bind(held, later, f.bind); err != nil || got != held {
		t.Fatalf("requested port back from aside = %d, %v", got, err)
	}
}

// TestPortPoolRequestedAside: a requested port found free while set aside is
// taken; its stale aside entry does not put it back in the pool.
func TestPortPoolRequestedAside(t *testing.T) {
	p := newPortPool(50000, 50003)
	f := &fakeBinds{held: map[int]bool{50001: true}}
	if _, err := p.bind(50001, t0, f.bind); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("requested held port: %v", err)
	}
	delete(f.held, 50001) // whatever held it is gone
	if got, err := p.bind(50001, t0.Add(time.Second), f.bind); err != nil || got != 50001 {
		t.Fatalf("requested port free again = %d, %v", got, err)
	}
	if got := p.available(t0.Add(time.Hour)); got != 3 {
		t.Fatalf("%d free after the stale aside entry, want 3 (50001 in use)", got)
	}
	for range 3 {
		if port, err := p.bind(0, t0.Add(time.Hour), f.bind); err != nil || port == 50001 {
			t.Fatalf("bind = %d, %v: the port in use handed out again", port, err)
		}
	}
	p.release(50001)
	if got := p.available(t0.Add(time.Hour)); got != 1 {
		t.Fatalf("%d free after giving 50001 back, want 1", got)
	}
}

// TestPortPoolBoundsAttempts: when the host holds every port the pool thinks
// free, an allocation gives up after maxBindAttempts binds, and those ports
// stay out of the pool for the next one.
func TestPortPoolBoundsAttempts(t *testing.T) {
	p := newPortPool(50000, 50099)
	f := &fakeBinds{held: map[int]bool{}}
	for port := 50000; port <= 50099; port++ {
		f.held[port] = true
	}
	if _, err := p.bind(0, t0, f.bind); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("bind = %v, want ErrPortsExhausted", err)
	}
	if f.calls != maxBindAttempts {
		t.Fatalf("%d binds, want %d", f.calls, maxBindAttempts)
	}
	if got := p.available(t0); got != 100-maxBindAttempts {
		t.Fatalf("%d ports free, want %d", got, 100-maxBindAttempts)
	}
}

// TestPortPoolOtherBindError: an error that is not the port's (out of file
// descriptors) gives the port back and is returned without trying others.
func TestPortPoolOtherBindError(t *testing.T) {
	p := newPortPool(50000, 50099)
	f := &fakeBinds{err: &net.OpError{Op: "listen", Net: "udp4", Err: syscall.EMFILE}}
	if _, err := p.bind(0, t0, f.bind); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("bind = %v, want EMFILE", err)
	}
	if _, err := p.bind(50001, t0, f.bind); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("requested bind = %v, want EMFILE", err)
	}
	if f.calls != 2 || p.available(t0) != 100 {
		t.Fatalf("%d binds, %d free; want 2 and every port back", f.calls, p.available(t0))
	}
}

// TestPortPoolIndexes walks many random rounds of every operation and checks
// after each that the free slice, the index array and the aside queue agree
// with a model of which ports are taken.
func TestPortPoolIndexes(t *testing.T) {
	const lo, n = 40000, 32
	p := newPortPool(lo, lo+n-1)
	rng := rand.New(rand.NewPCG(1, 2))
	p.randN = rng.IntN
	taken := map[int]bool{} // the model: ports handed out and not given back
	now := t0
	for i := range 5000 {
		switch op := rng.IntN(6); op {
		case 0, 1:
			if port, ok := p.take(now); ok {
				if taken[port] {
					t.Fatalf("round %d: port %d handed out twice", i, port)
				}
				taken[port] = true
			}
		case 2:
			port := lo + rng.IntN(n)
			if p.takePort(port, now) {
				if taken[port] {
					t.Fatalf("round %d: requested port %d handed out twice", i, port)
				}
				taken[port] = true
			}
		case 3, 4: // a socket closes, or a bind fails on a held port
			for port := range taken {
				if op == 3 {
					p.release(port)
				} else {
					p.setAside(port, now)
				}
				delete(taken, port)
				break
			}
		case 5:
			now = now.Add(time.Duration(rng.IntN(10)) * time.Second)
		}
		p.mu.Lock()
		for idx, port := range p.free {
			if p.pos[int(port)-lo] != int32(idx) || taken[int(port)] {
				t.Fatalf("round %d: free port %d at %d: index %d, taken %v", i, port, idx, p.pos[int(port)-lo], taken[int(port)])
			}
		}
		queued, aside := 0, 0
		for k := range n {
			if p.queued[k] {
				queued++
			}
			switch st := p.pos[k]; {
			case taken[lo+k] && st != portInUse:
				t.Fatalf("round %d: taken port %d in state %d", i, lo+k, st)
			case !taken[lo+k] && st == portInUse:
				t.Fatalf("round %d: port %d in use but not taken", i, lo+k)
			case st == portAside:
				aside++
				if !p.queued[k] {
					t.Fatalf("round %d: port %d aside with no entry to bring it back", i, lo+k)
				}
			}
		}
		if len(p.free)+len(taken)+aside != n || queued != len(p.aside) || len(p.aside) > n {
			t.Fatalf("round %d: %d free + %d taken + %d aside != %d, or %d queued != %d entries",
				i, len(p.free), len(taken), aside, n, queued, len(p.aside))
		}
		p.mu.Unlock()
	}
}

// TestGeneratorPortPool runs the pool under the real relay sockets: every
// port of a small range allocated, the next refused, a closed socket's port
// reused, and the live-port bitmap consistent throughout.
func TestGeneratorPortPool(t *testing.T) {
	l := newInspectListener(t, false)
	l.srv.records = map[string]*record{}
	lo, hi := looptest.FreeUDPRange(t, 20000, 8)
	l.srv.cfg.MinPort, l.srv.cfg.MaxPort = lo, hi
	g := &generator{l: l}
	conns := map[int]net.PacketConn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range hi - lo + 1 {
		pc, addr, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4"})
		if err != nil {
			t.Fatalf("allocate with ports free: %v", err)
		}
		port := addr.(*net.UDPAddr).Port
		conns[port] = pc
		if !l.srv.ports.udp4.has(port) {
			t.Fatalf("live port %d not in the bitmap", port)
		}
	}
	if _, _, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4"}); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("allocate with every port taken: %v, want ErrPortsExhausted", err)
	}
	_ = conns[lo+3].Close()
	delete(conns, lo+3)
	if l.srv.ports.udp4.has(lo + 3) {
		t.Fatal("closed port still in the bitmap")
	}
	// EVEN-PORT and RESERVATION-TOKEN ask for a given port.
	pc, addr, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4", RequestedPort: lo + 3})
	if err != nil || addr.(*net.UDPAddr).Port != lo+3 {
		t.Fatalf("requested the freed port: %v, %v", addr, err)
	}
	conns[lo+3] = pc
	if _, _, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4", RequestedPort: lo + 3}); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("requested a port in use: %v", err)
	}
}

// TestGeneratorSkipsPortHeldByHost: a port another socket on the host holds
// is set aside, not retried each allocation, and tried again later.
func TestGeneratorSkipsPortHeldByHost(t *testing.T) {
	l := newInspectListener(t, false)
	l.srv.records = map[string]*record{}
	now := t0
	l.srv.cfg.Now = func() time.Time { return now }
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	held := other.LocalAddr().(*net.UDPAddr).Port
	l.srv.cfg.MinPort, l.srv.cfg.MaxPort = held, held
	g := &generator{l: l}
	if _, _, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4"}); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("allocate on a held port: %v, want ErrPortsExhausted", err)
	}
	if got := l.srv.portPool("udp4").available(now); got != 0 {
		t.Fatalf("held port still in the pool (%d free)", got)
	}
	if l.srv.ports.udp4.has(held) {
		t.Fatal("a port the node does not hold is in its live bitmap")
	}
	_ = other.Close()
	now = now.Add(portAsideFor)
	pc, addr, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4"})
	if err != nil {
		t.Fatalf("allocate once the port is free and back in the pool: %v", err)
	}
	defer pc.Close()
	if addr.(*net.UDPAddr).Port != held {
		t.Fatalf("got port %v, want %d", addr, held)
	}
}

// TestGeneratorTCPPortsExclusive: a TCP relay port (bound with SO_REUSEPORT)
// is not handed to a second allocation while the first listens on it.
func TestGeneratorTCPPortsExclusive(t *testing.T) {
	l := newInspectListener(t, false)
	l.srv.records = map[string]*record{}
	lo, hi := looptest.FreeUDPRange(t, 20000, 2)
	l.srv.cfg.MinPort, l.srv.cfg.MaxPort = lo, hi
	g := &generator{l: l}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	ports := map[int]bool{}
	for range 4 {
		ln, addr, err := g.AllocateListener(turn.AllocateListenerConfig{Network: "tcp4"})
		if errors.Is(err, ErrPortsExhausted) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		port := addr.(*net.TCPAddr).Port
		if ports[port] {
			t.Fatalf("TCP relay port %d handed out twice", port)
		}
		ports[port] = true
	}
	if len(lns) == 0 {
		t.Skip("both TCP ports held by the host")
	}
	_ = lns[0].Close()
	lns = lns[1:]
	if got := l.srv.portPool("tcp4").available(time.Now()); got != 1 {
		t.Fatalf("%d TCP ports free after closing a listener, want 1", got)
	}
}

// BenchmarkAllocateRefused measures a refused allocation with every relay
// port of the range held by the node: what each Allocate past the range
// costs the listener's read loop.
func BenchmarkAllocateRefused(b *testing.B) {
	for _, n := range []int{64, 1024} {
		b.Run(fmt.Sprintf("ports=%d", n), func(b *testing.B) {
			l := newInspectListener(b, false)
			l.srv.records = map[string]*record{}
			lo, hi := looptest.FreeUDPRange(b, 20000, n)
			l.srv.cfg.MinPort, l.srv.cfg.MaxPort = lo, hi
			g := &generator{l: l}
			var conns []net.PacketConn
			defer func() {
				for _, c := range conns {
					_ = c.Close()
				}
			}()
			for range n {
				pc, _, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4"})
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, pc)
			}
			for b.Loop() {
				if _, _, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4"}); !errors.Is(err, ErrPortsExhausted) {
					b.Fatalf("allocate with every port taken: %v", err)
				}
			}
		})
	}
}
