package offload

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// timedRun runs pkt through the program once with BPF_PROG_TEST_RUN and
// returns the verdict and the kernel's own measure of the run (the
// program alone: no syscall, no copying). cilium/ebpf's Run does not
// return the duration and its Benchmark takes no context, which the
// program needs (the ingress device), hence the raw call.
func timedRun(b *testing.B, h *harness, pkt []byte, ctx skbContext) (uint32, uint32) {
	out := make([]byte, len(pkt)+64)
	attr := struct {
		progFD, retval, dataSizeIn, dataSizeOut uint32
		dataIn, dataOut                         uint64
		repeat, duration, ctxSizeIn, ctxSizeOut uint32
		ctxIn, ctxOut                           uint64
		flags, cpu, batchSize                   uint32
		_                                       uint32
	}{
		progFD: uint32(h.o.objs.Relay.FD()), dataSizeIn: uint32(len(pkt)), dataSizeOut: uint32(len(out)),
		dataIn: uint64(uintptr(unsafe.Pointer(&pkt[0]))), dataOut: uint64(uintptr(unsafe.Pointer(&out[0]))),
		repeat: 1, ctxSizeIn: uint32(unsafe.Sizeof(ctx)), ctxIn: uint64(uintptr(unsafe.Pointer(&ctx))),
	}
	_, _, e := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if e != 0 {
		b.Fatalf("BPF_PROG_TEST_RUN: %v", e)
	}
	return attr.retval, attr.duration
}

// BenchmarkProgram is the program's own time per packet, as the kernel
// measures it around the run (prog-ns/op), for 160 bytes of media each
// way and one pass, and for a STUN message it leaves alone; ns/op adds
// the test-run syscall and is not the program's cost.
func BenchmarkProgram(b *testing.B) {
	h := newHarness(b)
	a, z := onePassPair(false)
	h.addBind(remote4, a, z)
	data := testData(160, 1)
	stun := clientFrame(remote4, append([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42}, make([]byte, 12)...))
	ctx := skbContext{IngressIfindex: uint32(h.ns.d0), Ifindex: uint32(h.ns.d0)}
	for _, c := range []struct {
		name string
		pkt  []byte
		want uint32
	}{
		{"client-to-peer", clientFrame(remote4, channelData(remote4.Channel, data)).bytes(), actRedirect},
		{"peer-to-client", peerFrame(remote4, data).bytes(), actRedirect},
		{"one-pass", clientFrame(a, channelData(a.Channel, data)).bytes(), actRedirect},
		{"stun-passed", stun.bytes(), actNext},
	} {
		b.Run(c.name, func(b *testing.B) {
			var total uint64
			h.ns.do(b, func() {
				for b.Loop() {
					ret, d := timedRun(b, h, c.pkt, ctx)
					if ret != c.want {
						b.Fatalf("verdict %d, want %d", ret, c.want)
					}
					total += uint64(d)
				}
			})
			b.ReportMetric(float64(total)/float64(b.N), "prog-ns/op")
		})
	}
}
