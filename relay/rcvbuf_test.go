//go:build linux

package relay

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/procfs"
)

// procInt reads one integer file under /proc/sys.
func procInt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("cannot read %s: %v", path, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// hasNetAdmin reports whether this process holds CAP_NET_ADMIN (bit 12 of
// CapEff), which lets SO_RCVBUFFORCE pass net.core.rmem_max.
func hasNetAdmin(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return caps&(1<<12) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

func TestListenUDPRcvbuf(t *testing.T) {
	defer goleak.VerifyNone(t)
	rmemDefault := procInt(t, "/proc/sys/net/core/rmem_default")
	rmemMax := procInt(t, "/proc/sys/net/core/rmem_max")
	overMax := 2 * rmemMax
	overMaxWant := rmemMax // SO_RCVBUF: capped, silently
	if hasNetAdmin(t) {
		overMaxWant = overMax // SO_RCVBUFFORCE
	}
	for _, tc := range []struct {
		name        string
		asked, want int
	}{
		// rmem_default is the kernel's own figure, overhead included: the
		// same buffer as asking for half of it.
		{"zero keeps the kernel default", 0, rmemDefault / 2},
		{"tiny", 4096, 4096},
		{"one MiB", 1 << 20, min(1<<20, overMaxWant)},
		{"above net.core.rmem_max", overMax, overMaxWant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pcs, err := ListenUDP("127.0.0.1:0", 2, tc.asked)
			if err != nil {
				t.Fatal(err)
			}
			for _, pc := range pcs {
				defer pc.Close()
				got, err := RcvbufSize(pc)
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.want {
					t.Errorf("%s: receive buffer %d bytes, want %d (asked %d, rmem_max %d)", pc.LocalAddr(), got, tc.want, tc.asked, rmemMax)
				}
			}
		})
	}
	if _, err := ListenUDP("127.0.0.1:0", 1, -1); err == nil {
		t.Error("ListenUDP took a negative receive buffer")
	}
}

// procNetUDPDrops sums the drops column of /proc/net/udp over the sockets
// bound to port: the kernel's own report, read apart from SO_MEMINFO.
func procNetUDPDrops(t *testing.T, port int) uint64 {
	t.Helper()
	n, sockets, err := procfs.ReadUDPDrops(port)
	if err != nil {
		t.Fatal(err)
	}
	if sockets == 0 {
		t.Fatalf("no socket on port %d in /proc/net/udp", port)
	}
	return n
}

// flood sends count datagrams to addr from senders loopback sockets in
// turn, giving up after 5 s.
func flood(t *testing.T, addr net.Addr, senders, count int) {
	t.Helper()
	var cs []*net.UDPConn
	for range senders {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		cs = append(cs, c)
	}
	payload := make([]byte, 200)
	for i := range count {
		if _, err := cs[i%senders].WriteTo(payload, addr); err != nil {
			t.Fatalf("datagram %d of %d: %v", i, count, err)
		}
	}
}

// settle waits (up to 2 s) for the kernel's count on port to stop moving:
// loopback delivery can trail the last send by a softirq.
func settle(t *testing.T, port int) uint64 {
	t.Helper()
	prev := procNetUDPDrops(t, port)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		n := procNetUDPDrops(t, port)
		if n == prev {
			return n
		}
		prev = n
	}
	return prev
}

// droppedText is packets_dropped_total as /metrics shows it, with rcvbuf
// drops and zero for every other reason.
func droppedText(rcvbuf uint64) string {
	var b strings.Builder
	b.WriteString("# HELP supernode_packets_dropped_total Packets the node received and did not relay or answer, by reason.\n")
	b.WriteString("# TYPE supernode_packets_dropped_total counter\n")
	for _, r := range metrics.DropReasons {
		v := uint64(0)
		if r == metrics.DropRcvbuf {
			v = rcvbuf
		}
		fmt.Fprintf(&b, "supernode_packets_dropped_total{reason=%q} %d\n", r, v)
	}
	return b.String()
}

// TestRcvbufDrops fills unread listener sockets with a 4 KiB receive
// buffer from loopback and checks that packets_dropped_total{reason="rcvbuf"}
// moves with each burst and says what the kernel says.
func TestRcvbufDrops(t *testing.T) {
	defer goleak.VerifyNone(t)
	pcs, err := ListenUDP("127.0.0.1:0", 2, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, pc := range pcs {
		defer pc.Close()
	}
	port := pcs[0].LocalAddr().(*net.UDPAddr).Port
	m := metrics.New("test")
	if err := CountRcvbufDrops(m, pcs); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(droppedText(0)), "supernode_packets_dropped_total"); err != nil {
		t.Fatalf("before any traffic: %v", err)
	}

	var prev uint64
	for burst := 1; burst <= 2; burst++ {
		flood(t, pcs[0].LocalAddr(), 4, 5000)
		kernel := settle(t, port)
		if kernel <= prev {
			t.Fatalf("burst %d: the kernel reports %d drops, %d before: the buffer never filled", burst, kernel, prev)
		}
		if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(droppedText(kernel)), "supernode_packets_dropped_total"); err != nil {
			t.Fatalf("burst %d: %v", burst, err)
		}
		prev = kernel
	}
	t.Logf("10,000 datagrams to a 4 KiB buffer: %d dropped", prev)

	// Closed sockets keep their count; nothing is added or lost.
	for _, pc := range pcs {
		_ = pc.Close()
	}
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(droppedText(prev)), "supernode_packets_dropped_total"); err != nil {
		t.Fatalf("after close: %v", err)
	}
}

// TestRcvbufDropsWrap checks the arithmetic across the kernel's 32-bit wrap.
func TestRcvbufDropsWrap(t *testing.T) {
	for _, tc := range []struct {
		last, now uint32
		want      uint64
	}{
		{0, 0, 0},
		{0, 7, 7},
		{100, 250, 150},
		{1<<32 - 10, 5, 15},
	} {
		if got := dropsSince(tc.last, tc.now); got != tc.want {
			t.Errorf("dropsSince(%d, %d) = %d, want %d", tc.last, tc.now, got, tc.want)
		}
	}
}

func TestCountRcvbufDropsNeedsSockets(t *testing.T) {
	m := metrics.New("test")
	if err := CountRcvbufDrops(m, []net.PacketConn{nopPacketConn{}}); err == nil {
		t.Error("a PacketConn without a file descriptor was accepted")
	}
	// The registration is left as it was.
	if err := m.Registry.Register(m.PacketsDropped.For(metrics.DropRcvbuf)); err == nil {
		t.Error("packets_dropped_total was unregistered by a failed CountRcvbufDrops")
	} else if _, ok := err.(prometheus.AlreadyRegisteredError); !ok {
		t.Errorf("register again: %v", err)
	}
}
