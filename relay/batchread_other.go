//go:build !linux

package relay

import (
	"net"
	"net/netip"
)

// batchReader reads a UDP socket one datagram at a time: without recvmmsg
// a batch of one is what there is. ReadFromUDPAddrPort reads straight into
// the caller's buffer and allocates nothing.
type batchReader struct {
	uc *net.UDPConn
}

// newBatchReader returns a reader of pc, or nil when pc is not a UDP
// socket (the caller then reads with pc.ReadFrom).
func newBatchReader(pc net.PacketConn) *batchReader {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil
	}
	return &batchReader{uc: uc}
}

// read reads one datagram into b and returns its length (len(b) when it
// may have been cut) and its source.
func (r *batchReader) read(b []byte) (int, netip.AddrPort, error) {
	return r.uc.ReadFromUDPAddrPort(b)
}

// drop has nothing to forget: no datagram is kept between reads.
func (r *batchReader) drop() {}
