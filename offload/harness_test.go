package offload

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/supernode/supernode/netns"
)

// This file is the BPF_PROG_TEST_RUN harness: it loads the program, makes a
// network namespace whose route table Bind reads (the Go side resolves
// each binding's routes with RTM_GETROUTE in the calling thread's
// namespace), and runs packets in it.

// tc return codes (linux/pkt_cls.h), as PROG_TEST_RUN reports them.
const (
	actNext     = 0xffffffff // TC_ACT_UNSPEC (-1): the program's NEXT
	actOK       = 0
	actShot     = 2
	actRedirect = 7
)

// optionalEnv, set to 1, turns "BPF cannot run here" from a failure into a
// skip.
const optionalEnv = "SUPERNODE_OFFLOAD_OPTIONAL"

// unavailable fails the test, or skips it when optionalEnv allows.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(optionalEnv) == "1" {
		t.Skipf("%s (%s=1)", msg, optionalEnv)
	}
	t.Fatalf("%s (set %s=1 to skip where BPF cannot run)", msg, optionalEnv)
}

// skbContext is struct __sk_buff (linux/bpf.h) as PROG_TEST_RUN takes it.
// The kernel rejects non-zero fields it does not let a test set.
type skbContext struct {
	Len, PktType, Mark, QueueMapping, Protocol     uint32
	VlanPresent, VlanTCI, VlanProto, Priority      uint32
	IngressIfindex, Ifindex, TCIndex               uint32
	CB                                             [5]uint32
	Hash, TCClassid, Data, DataEnd, NapiID, Family uint32
	RemoteIP4, LocalIP4                            uint32
	RemoteIP6, LocalIP6                            [4]uint32
	RemotePort, LocalPort, DataMeta                uint32
	FlowKeys, Tstamp                               uint64
	WireLen, GSOSegs                               uint32
	Sk                                             uint64
	GSOSize                                        uint32
	TstampType                                     uint8
	_                                              [3]uint8
	HWTstamp                                       uint64
}

// Devices of the test namespace, with MAC addresses of the test's choosing:
// PROG_TEST_RUN sets the skb's packet type from the frame's destination
// MAC and the device (eth_type_trans), and the program leaves a frame for
// another host's MAC alone. Loopback's MAC is all zeros.
var (
	d0MAC = [6]byte{0x02, 0, 0, 0, 0, 0xd0}
	m0MAC = [6]byte{0x02, 0, 0, 0, 0, 0x30}
)

// testNetns is a network namespace made for one test.
type testNetns struct {
	name string
	d0   int // ifindex of d0
	m0   int // ifindex of m0
}

var netnsSeq atomic.Int32

// netnsSetup builds the namespace. d0 (MTU 9000) carries the node's own
// addresses, 192.0.2.1-3 and 2001:db8::1-3; clients and peers sit on its
// subnets, on-link. m0 has an MTU of 1280 and the routes to 198.18.0.0/24
// and 2001:db8:e::/48. Routes with an mtu metric: 203.0.113.0/24 locked at
// 576, 203.0.114.0/24 unlocked at 576, 2001:db8:f::/48 locked at 1280,
// 2001:db8:c::/48 unlocked at 1300, and 198.18.1.0/24 through m0 with a
// metric of 2000, above m0's MTU. 198.51.100.0/24 and 2001:db8:dead::/48
// are unreachable, 198.51.101.0/24 a blackhole, 198.51.102.0/24 prohibited;
// there is no default route. Forwarding stays off, as on a relay host.
var netnsSetup = [][]string{
	{"link", "set", "lo", "up"},
	{"link", "add", "d0", "address", "02:00:00:00:00:d0", "mtu", "9000", "type", "veth", "peer", "name", "d1", "mtu", "9000"},
	{"link", "set", "d1", "up"},
	{"link", "set", "d0", "up"},
	{"addr", "add", "192.0.2.1/24", "dev", "d0"},
	{"addr", "add", "192.0.2.2/24", "dev", "d0"},
	{"addr", "add", "192.0.2.3/24", "dev", "d0"},
	{"-6", "addr", "add", "2001:db8::1/64", "dev", "d0", "nodad"},
	{"-6", "addr", "add", "2001:db8::2/64", "dev", "d0", "nodad"},
	{"-6", "addr", "add", "2001:db8::3/64", "dev", "d0", "nodad"},
	{"route", "add", "203.0.113.0/24", "dev", "d0", "mtu", "lock", "576"},
	{"route", "add", "203.0.114.0/24", "dev", "d0", "mtu", "576"},
	{"-6", "route", "add", "2001:db8:f::/48", "dev", "d0", "mtu", "lock", "1280"},
	{"-6", "route", "add", "2001:db8:c::/48", "dev", "d0", "mtu", "1300"},
	{"link", "add", "m0", "address", "02:00:00:00:00:30", "mtu", "1280", "type", "veth", "peer", "name", "m1"},
	{"link", "set", "m0", "up"},
	{"link", "set", "m1", "up"},
	{"route", "add", "198.18.0.0/24", "dev", "m0"},
	{"route", "add", "198.18.1.0/24", "dev", "m0", "mtu", "2000"},
	{"-6", "route", "add", "2001:db8:e::/48", "dev", "m0"},
	{"route", "add", "unreachable", "198.51.100.0/24"},
	{"-6", "route", "add", "unreachable", "2001:db8:dead::/48"},
	{"route", "add", "blackhole", "198.51.101.0/24"},
	{"route", "add", "prohibit", "198.51.102.0/24"},
}

// newTestNetns makes the namespace and removes it when t ends.
func newTestNetns(t testing.TB) *testNetns {
	t.Helper()
	name := fmt.Sprintf("sn-pt2-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		unavailable(t, "cannot make a network namespace: ip netns add: %v: %s", err, out)
	}
	ns := &testNetns{name: name}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	for _, args := range netnsSetup {
		args = append([]string{"-n", name}, args...)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ns.do(t, func() {
		for _, d := range []struct {
			name string
			idx  *int
		}{{"d0", &ns.d0}, {"m0", &ns.m0}} {
			ifc, err := net.InterfaceByName(d.name)
			if err != nil {
				t.Errorf("%s in %s: %v", d.name, name, err)
				return
			}
			*d.idx = ifc.Index
		}
	})
	return ns
}

// do runs f on an OS thread inside the namespace. Bind resolves routes and
// interfaces in the calling thread's namespace, and PROG_TEST_RUN gives the
// skb a device (loopback, or the one the context names) of that namespace.
func (ns *testNetns) do(t testing.TB, f func()) {
	t.Helper()
	if err := netns.Do(ns.name, f); err != nil {
		t.Fatal(err)
	}
}

// loadProgram loads the program and its maps (small ones) without
// attaching it, behind the Go side that fills them. A verifier error
// fails the test whatever optionalEnv says.
func loadProgram(t testing.TB) *Offload {
	t.Helper()
	spec, err := loadRelay()
	if err != nil {
		t.Fatalf("parse program: %v", err)
	}
	for _, m := range []string{"channels", "peers", "allocations", "alloc_counters"} {
		spec.Maps[m].MaxEntries = 256
	}
	o := &Offload{log: slog.New(slog.DiscardHandler), binds: map[Binding]struct{}{}, alloc: map[uint32]int{}}
	if err := spec.LoadAndAssign(&o.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("verifier refused the program: %+v", ve)
		}
		unavailable(t, "cannot load the program: %s", loadReason(err))
	}
	t.Cleanup(func() { o.objs.Close() })
	return o
}

// harness is the loaded program with its maps and the namespace it runs
// packets in.
type harness struct {
	t  testing.TB
	o  *Offload
	ns *testNetns
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return &harness{t: t, o: loadProgram(t), ns: newTestNetns(t)}
}

// mac is the MAC address of the namespace's device ifindex.
func (h *harness) mac(ifindex int) [6]byte {
	switch ifindex {
	case 1:
		return [6]byte{}
	case h.ns.d0:
		return d0MAC
	case h.ns.m0:
		return m0MAC
	}
	h.t.Fatalf("no device %d", ifindex)
	return [6]byte{}
}

// run runs pkt through the program as if it arrived on ifindex, returning
// the verdict and the packet as the program left it.
func (h *harness) run(pkt []byte, ifindex int) (uint32, []byte) {
	h.t.Helper()
	return h.runCtx(pkt, skbContext{IngressIfindex: uint32(ifindex), Ifindex: uint32(ifindex)})
}

// runCtx runs pkt with the context ctx. The frame must be addressed to
// the device's own MAC, so that a case passed up for another reason cannot
// pass for being another host's; runOtherHost runs one that is not.
func (h *harness) runCtx(pkt []byte, ctx skbContext) (uint32, []byte) {
	h.t.Helper()
	if m := h.mac(int(ctx.Ifindex)); len(pkt) >= 6 && !bytes.Equal(pkt[:6], m[:]) {
		h.t.Fatalf("frame to %x run on device %d, whose MAC is %x", pkt[:6], ctx.Ifindex, m)
	}
	return h.runOtherHost(pkt, ctx)
}

func (h *harness) runOtherHost(pkt []byte, ctx skbContext) (uint32, []byte) {
	h.t.Helper()
	var ret uint32
	var err error
	out := make([]byte, len(pkt)+4096)
	h.ns.do(h.t, func() {
		opts := &ebpf.RunOptions{Data: pkt, DataOut: out, Context: ctx}
		ret, err = h.o.objs.Relay.Run(opts)
		out = opts.DataOut
	})
	if err != nil {
		h.t.Fatalf("run: %v", err)
	}
	return ret, out
}

// delta is now minus before, counter by counter.
func delta(now, before Counters) Counters {
	return Counters{
		ToPeerPackets: now.ToPeerPackets - before.ToPeerPackets, ToPeerBytes: now.ToPeerBytes - before.ToPeerBytes,
		ToClientPackets: now.ToClientPackets - before.ToClientPackets, ToClientBytes: now.ToClientBytes - before.ToClientBytes,
		OnePassPackets: now.OnePassPackets - before.OnePassPackets, OnePassBytes: now.OnePassBytes - before.OnePassBytes,
		CrossOutBytes: now.CrossOutBytes - before.CrossOutBytes, CrossInBytes: now.CrossInBytes - before.CrossInBytes,
		DropRate: now.DropRate - before.DropRate, DropError: now.DropError - before.DropError,
		PassMTU: now.PassMTU - before.PassMTU, PassRoute: now.PassRoute - before.PassRoute,
		PassNoServer: now.PassNoServer - before.PassNoServer, PassShape: now.PassShape - before.PassShape,
	}
}

// alloc adds allocation id, unlimited unless bps is set, with buckets
// two 100-byte messages deep.
func (h *harness) alloc(id uint32, bps int64) {
	h.t.Helper()
	if err := h.o.AddAllocation(id, bps, 100); err != nil {
		h.t.Fatal(err)
	}
}

// bind installs b as the Go side does, in the namespace: its routes come
// from the namespace's table.
func (h *harness) bind(b Binding) {
	h.t.Helper()
	if err := h.tryBind(b); err != nil {
		h.t.Fatalf("bind %+v: %v", b, err)
	}
}

func (h *harness) tryBind(b Binding) error {
	h.t.Helper()
	var err error
	h.ns.do(h.t, func() { _, err = h.o.Bind(b) })
	return err
}

// addBind adds b's allocation, unlimited, and binds b.
func (h *harness) addBind(bs ...Binding) {
	h.t.Helper()
	for _, b := range bs {
		h.alloc(b.Alloc, 0)
		h.bind(b)
	}
}

func (h *harness) allocStats(id uint32) AllocationStats {
	h.t.Helper()
	s, err := h.o.AllocationStats(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// diffBytes describes where two packets first differ.
func diffBytes(got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo, hi := max(0, i-16), i+48
	return fmt.Sprintf("%d bytes, want %d; first difference at byte %d\n got[%d:]: %x\nwant[%d:]: %x",
		len(got), len(want), i, lo, got[lo:min(hi, len(got))], lo, want[lo:min(hi, len(want))])
}
