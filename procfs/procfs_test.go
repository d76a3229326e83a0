package procfs

import (
	"errors"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseStatCPU(t *testing.T) {
	for _, c := range []struct {
		name, line string
		ticks      uint64 // 0: an error is wanted
	}{
		// comm with spaces and a ')' inside, as a process may name itself.
		{"parens", "4242 (evil) name (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 1000 200 18446744073709551615\n", 300},
		{"nested", "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 100 1000000 500 18446744073709551615", 400},
		// A kernel thread on this machine (Linux 6.18), as read.
		{"kworker", "1100 (kworker/u8:6-writeback) I 2 0 0 0 -1 69238880 0 0 0 0 0 70 0 0 20 0 1 0 2033707 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n", 70},
		{"empty", "", 0},
		{"no comm", "4242 S 1 2 3 4 5 6 7 8 9 10 11 12 13", 0},
		{"short", "4242 (x) S 1 2", 0},
		{"not a number", "1 (x) S 1 2 3 4 5 6 7 8 9 10 a b", 0},
		{"negative", "1 (x) S 1 2 3 4 5 6 7 8 9 10 -1 5", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseStatCPU([]byte(c.line))
			if c.ticks == 0 {
				if err == nil {
					t.Errorf("accepted, %d ticks", got)
				}
				return
			}
			if err != nil || got != c.ticks {
				t.Errorf("got %d, %v; want %d", got, err, c.ticks)
			}
		})
	}
	if got := (Process{CPUTicks: 300}).CPU(); got != 3*time.Second {
		t.Errorf("300 ticks = %v, want 3s", got)
	}
}

func TestParseStatusMemory(t *testing.T) {
	for _, c := range []struct {
		name, status string
		rss, hwm     int64
		err          error // nil: any error is wrong; errAny: some error
	}{
		{"real", string(readTestdata(t, "pid-status-a.txt")), 1720 * 1024, 1720 * 1024, nil},
		{"rss only", "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads: 3\n", 2048 * 1024, 0, nil},
		{"kernel thread", string(readTestdata(t, "pid-status-kthread.txt")), 0, 0, ErrNoMemory},
		{"no memory lines", "Name:\tkthreadd\n", 0, 0, ErrNoMemory},
		{"no unit", "VmRSS:\t2048\n", 0, 0, errAny},
		{"not a number", "VmRSS:\tlots kB\n", 0, 0, errAny},
		{"bad HWM", "VmHWM:\t1 MB\nVmRSS:\t2048 kB\n", 0, 0, errAny},
	} {
		t.Run(c.name, func(t *testing.T) {
			rss, hwm, err := ParseStatusMemory([]byte(c.status))
			switch {
			case c.err == nil && (err != nil || rss != c.rss || hwm != c.hwm):
				t.Errorf("got %d, %d, %v; want %d, %d", rss, hwm, err, c.rss, c.hwm)
			case c.err == errAny && err == nil:
				t.Errorf("accepted: %d, %d", rss, hwm)
			case c.err != nil && c.err != errAny && !errors.Is(err, c.err):
				t.Errorf("error %v, want %v", err, c.err)
			}
		})
	}
}

// errAny in a table wants some error, whichever.
var errAny = errors.New("any error")

func TestReadProcessSelf(t *testing.T) {
	p, err := ReadProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.RSS <= 0 || p.HWM < p.RSS {
		t.Errorf("self: %+v", p)
	}
	for _, pid := range []int{-1, 1 << 30} {
		var pe *fs.PathError
		if _, err := ReadProcess(pid); !errors.As(err, &pe) {
			t.Errorf("ReadProcess(%d) = %v, want the *fs.PathError of a missing file", pid, err)
		}
	}
	if SelfCPU() < 0 {
		t.Error("negative CPU time")
	}
}

func TestParseStat(t *testing.T) {
	// This 2-core machine, as read.
	s, err := ParseStat(readTestdata(t, "stat-a.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want1 := CPUTimes{User: 186693, Nice: 349, System: 89705, Idle: 532970, IOWait: 2263, IRQ: 0, SoftIRQ: 18819, Steal: 4185}
	if len(s.CPUs) != 2 || s.CPUs[1] != want1 {
		t.Fatalf("cpus = %+v, want 2 with cpu1 %+v", s.CPUs, want1)
	}
	if got := s.CPUs[1].Busy(); got != 186693+349+89705+18819 {
		t.Errorf("Busy = %d", got)
	}
	if got := s.CPUs[1].Total(); got != s.CPUs[1].Busy()+532970+2263+4185 {
		t.Errorf("Total = %d", got)
	}
	// The aggregate line agrees with the per-CPU lines' sum (to a tick or
	// two: the kernel sums them while they move).
	if d := int64(s.All.Total()) - int64(s.CPUs[0].Total()+s.CPUs[1].Total()); d < -2 || d > 2 {
		t.Errorf("aggregate %+v is not the sum of %+v", s.All, s.CPUs)
	}

	const small = "cpu  1000 10 300 5000 20 5 65 0 0 0\ncpu0 500 5 150 2500 10 2 33 0 0 0\ncpu1 500 5 150 2500 10 3 32 0 0 0\nintr 12345\nctxt 999\n"
	if s, err := ParseStat([]byte(small)); err != nil || s.All != (CPUTimes{1000, 10, 300, 5000, 20, 5, 65, 0}) {
		t.Errorf("aggregate: %+v, %v", s.All, err)
	}
	// An older kernel's 8 columns, a hole for an offline CPU 2.
	old := "cpu  10 0 10 100 0 0 0 0\ncpu0 5 0 5 50 0 0 0 0\ncpu1 4 0 4 40 0 0 0 0\ncpu3 1 0 1 10 0 0 0 0\nintr 1\n"
	if s, err := ParseStat([]byte(old)); err != nil || len(s.CPUs) != 4 || s.CPUs[2] != (CPUTimes{}) || s.CPUs[3].User != 1 {
		t.Errorf("sparse: %+v, %v", s, err)
	}
	for _, bad := range []string{
		"",
		"cpu  1 2 3 4 5 6 7 8\n",            // no per-CPU lines
		"cpu0 1 2 3 4 5 6 7 8\n",            // no aggregate line
		"cpu 1 2 3\ncpu0 1 2 3 4 5 6 7 8\n", // short aggregate
		"cpu 1 2 3 4 5 6 7 8\ncpu0 1 2 3\n", // short per-CPU line
		"cpu 1 2 x 4 5 6 7 8\ncpu0 1 2 3 4 5 6 7 8\n",
		"cpu 1 2 3 4 5 6 7 8\ncpu0 1 2 x 4 5 6 7 8\n",
		"cpu 1 2 3 4 5 6 7 8\ncpuX 1 2 3 4 5 6 7 8\n",
		"cpu 1 2 3 4 5 6 7 8\ncpu99999 1 2 3 4 5 6 7 8\n",
	} {
		if _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q) accepted", bad)
		}
	}
	if _, err := ReadStat(); err != nil {
		t.Errorf("ReadStat: %v", err)
	}
}

func TestParseSoftirqs(t *testing.T) {
	b := readTestdata(t, "softirqs-a.txt")
	rows, err := ParseSoftirqs(b, "NET_RX", "NET_TX")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rows["NET_RX"], []uint64{85540784, 83515397}) || !slices.Equal(rows["NET_TX"], []uint64{14, 3}) {
		t.Errorf("rows = %v", rows)
	}
	if _, err := ParseSoftirqs(b, "NET_RX", "NO_SUCH"); err == nil {
		t.Error("a missing row was not reported")
	}
	if _, err := ParseSoftirqs(nil, "NET_RX"); err == nil {
		t.Error("empty input accepted")
	}
	if _, err := ParseSoftirqs([]byte("  CPU0 CPU1\nNET_RX: 1 x\n"), "NET_RX"); err == nil {
		t.Error("a count that is not a number accepted")
	}
	if _, err := ReadSoftirqs("NET_RX"); err != nil {
		t.Errorf("ReadSoftirqs: %v", err)
	}
}

func TestParseSoftnet(t *testing.T) {
	rows, err := ParseSoftnet(readTestdata(t, "softnet_stat-a.txt")) // Linux 6.18, 15 columns
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[1].Processed != 86158857 || rows[1].ReceivedRPS != 1417223 || rows[0].Dropped != 0 {
		t.Errorf("rows = %+v", rows)
	}
	// An older kernel: 11 columns, the row is the CPU.
	old := "00000010 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000005 00000000\n"
	if rows, err := ParseSoftnet([]byte(old)); err != nil || len(rows) != 1 || rows[0] != (Softnet{Processed: 16, Dropped: 1, ReceivedRPS: 5}) {
		t.Errorf("old format: %+v, %v", rows, err)
	}
	for _, bad := range []string{
		"0001 0002\n", // a short row
		"0001a2b3 zz 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n",
		"0 0 0 0 0 0 0 0 0 0 0 0 ffff\n", // CPU 65535
	} {
		if _, err := ParseSoftnet([]byte(bad)); err == nil {
			t.Errorf("ParseSoftnet(%q) accepted", bad)
		}
	}
	if _, err := ReadSoftnet(); err != nil {
		t.Errorf("ReadSoftnet: %v", err)
	}
}

func TestSoftnetDropped(t *testing.T) {
	page := "0001a2b3 0000000a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n" +
		"00000100 000000ff 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n"
	rows, err := ParseSoftnet([]byte(page))
	if n := SoftnetDropped(rows); err != nil || n != 0x0a+0xff {
		t.Errorf("got %d, %v; want %d", n, err, 0x0a+0xff)
	}
}

func TestParseUDPDrops(t *testing.T) {
	// This machine's /proc/net/udp, as read after 300 datagrams to a
	// socket with a 1 KiB receive buffer on port 55617 (0xD941).
	b := readTestdata(t, "net-udp-a.txt")
	for _, c := range []struct {
		name    string
		port    int
		drops   uint64
		sockets int
	}{
		{"flooded", 55617, 299, 1},
		{"reuseport pair", 0x8DD7, 0, 2},
		{"wildcard address", 0xEE1B, 0, 1},
		{"no socket", 9, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			drops, sockets, err := ParseUDPDrops(b, c.port)
			if err != nil || drops != c.drops || sockets != c.sockets {
				t.Errorf("got %d drops on %d sockets, %v; want %d on %d", drops, sockets, err, c.drops, c.sockets)
			}
		})
	}
	bad := "  1: 0100007F:0009 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 lots\n"
	if _, _, err := ParseUDPDrops([]byte(bad), 9); err == nil {
		t.Error("a drops column that is not a number accepted")
	}
	if _, _, err := ReadUDPDrops(9); err != nil {
		t.Errorf("ReadUDPDrops: %v", err)
	}
}

func TestLoadAvg(t *testing.T) {
	f := strings.Fields(LoadAvg())
	if len(f) != 3 {
		t.Fatalf("LoadAvg() = %q, want three fields", LoadAvg())
	}
	for _, v := range f {
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			t.Errorf("LoadAvg field %q: %v", v, err)
		}
	}
}
