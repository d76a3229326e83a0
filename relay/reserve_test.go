package relay

import (
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/turn/v5"

	"github.com/supernode/supernode/looptest"
)

// reserveTestGenerator returns a generator on 127.0.0.1 with the relay
// port range lo..hi (n free ports, lo even).
func reserveTestGenerator(t *testing.T, n int) (g *generator, lo, hi int) {
	t.Helper()
	l := newInspectListener(t, false)
	l.srv.records = map[string]*record{}
	lo, hi = looptest.FreeUDPRange(t, 20000, n) // n even: lo is even
	l.srv.cfg.MinPort, l.srv.cfg.MaxPort = lo, hi
	t.Cleanup(l.srv.reserved.close)
	return &generator{l: l}, lo, hi
}

// allocatePort allocates a UDP relay socket asking for port requested (0:
// any) and returns its port; the socket closes when the test ends.
func allocatePort(t *testing.T, g *generator, requested int) (int, error) {
	t.Helper()
	pc, addr, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4", RequestedPort: requested})
	if err != nil {
		return 0, err
	}
	t.Cleanup(func() { _ = pc.Close() })
	return addr.(*net.UDPAddr).Port, nil
}

// bindable reports whether something else on the host could bind port now.
func bindable(port int) bool {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// TestEvenPortReservesNextPort: an EVEN-PORT allocation holds the port
// after its own until a RESERVATION-TOKEN claims it: no other allocation
// gets it and nothing else on the host can bind it meanwhile.
func TestEvenPortReservesNextPort(t *testing.T) {
	g, lo, hi := reserveTestGenerator(t, 8)
	even := lo + 2
	if got, err := allocatePort(t, g, even); err != nil || got != even {
		t.Fatalf("EVEN-PORT allocation asking for %d: port %d, %v", even, got, err)
	}
	if n := g.l.srv.reserved.count(); n != 1 {
		t.Fatalf("%d ports reserved, want 1", n)
	}
	if bindable(even + 1) {
		t.Fatalf("reserved port %d can be bound by anyone", even+1)
	}
	for range hi - lo + 1 - 2 { // every other port of the range
		port, err := allocatePort(t, g, 0)
		if err != nil {
			t.Fatalf("allocate with ports free: %v", err)
		}
		if port == even+1 {
			t.Fatalf("reserved port %d handed to another allocation", port)
		}
	}
	if _, err := allocatePort(t, g, 0); err == nil {
		t.Fatal("allocated a port past the range's last free one")
	}
	if got, err := allocatePort(t, g, even+1); err != nil || got != even+1 {
		t.Fatalf("RESERVATION-TOKEN allocation of %d: port %d, %v", even+1, got, err)
	}
	if n := g.l.srv.reserved.count(); n != 0 {
		t.Fatalf("%d ports still reserved after the claim, want 0", n)
	}
}

// TestEvenPortAvoidsHeldNextPort: when the port after pion's pick is held
// by another program, the allocation gets another even port whose next
// port it can reserve, instead of a reservation that would fail.
func TestEvenPortAvoidsHeldNextPort(t *testing.T) {
	g, lo, _ := reserveTestGenerator(t, 8)
	even := lo + 2
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: even + 1})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	got, err := allocatePort(t, g, even)
	if err != nil {
		t.Fatalf("EVEN-PORT allocation: %v", err)
	}
	if got == even || got%2 != 0 {
		t.Fatalf("EVEN-PORT allocation got port %d, want an even port other than %d", got, even)
	}
	if next, err := allocatePort(t, g, got+1); err != nil || next != got+1 {
		t.Fatalf("RESERVATION-TOKEN allocation of %d: port %d, %v", got+1, next, err)
	}
}

// TestEvenPortWithoutPair: with no free pair in the range, an EVEN-PORT
// allocation still gets the port asked for, without a reservation, and a
// port in use is refused.
func TestEvenPortWithoutPair(t *testing.T) {
	g, lo, _ := reserveTestGenerator(t, 2)
	if got, err := allocatePort(t, g, lo+1); err != nil || got != lo+1 {
		t.Fatalf("allocate %d: port %d, %v", lo+1, got, err)
	}
	if got, err := allocatePort(t, g, lo); err != nil || got != lo {
		t.Fatalf("EVEN-PORT allocation of %d beside a port in use: port %d, %v", lo, got, err)
	}
	if n := g.l.srv.reserved.count(); n != 0 {
		t.Fatalf("%d ports reserved, want 0", n)
	}
	if _, err := allocatePort(t, g, lo); err == nil {
		t.Fatal("EVEN-PORT allocation of a port in use succeeded")
	}
}

// TestReservationLapses: a reserved port nobody claims is freed after
// reservationLifetime, like pion's token, and goes back to the pool; a
// server that closes frees what it holds at once.
func TestReservationLapses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, lo, hi := reserveTestGenerator(t, 4)
		pool := g.l.srv.portPool("udp4")
		if got, err := allocatePort(t, g, lo); err != nil || got != lo {
			t.Fatalf("EVEN-PORT allocation: port %d, %v", got, err)
		}
		time.Sleep(reservationLifetime - time.Second)
		synctest.Wait()
		if n := g.l.srv.reserved.count(); n != 1 || bindable(lo+1) {
			t.Fatalf("before the lifetime: %d reserved, port %d bindable %v", n, lo+1, bindable(lo+1))
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := g.l.srv.reserved.count(); n != 0 || !bindable(lo+1) {
			t.Fatalf("after the lifetime: %d reserved, port %d bindable %v", n, lo+1, bindable(lo+1))
		}
		if free := pool.available(time.Now()); free != hi-lo {
			t.Fatalf("%d ports free after the reservation lapsed, want %d", free, hi-lo)
		}
		if got, err := allocatePort(t, g, lo+2); err != nil || got != lo+2 {
			t.Fatalf("second EVEN-PORT allocation: port %d, %v", got, err)
		}
		g.l.srv.reserved.close()
		if n := g.l.srv.reserved.count(); n != 0 || !bindable(lo+3) {
			t.Fatalf("after close: %d reserved, port %d bindable %v", n, lo+3, bindable(lo+3))
		}
	})
}
