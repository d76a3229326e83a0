//go:build linux

package relay

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchReader reads a UDP socket a batch at a time with recvmmsg and hands
// the datagrams out one by one, in the order the kernel queued them. Its
// buffers are fixed and live as long as the socket: a datagram is copied
// out of them before the next is handed out, so none is ever lent out and
// a pool would only move them around.
//
// Reading allocates nothing: the recvmmsg headers point at the buffers and
// address slots once and for all, and the function handed to RawConn.Read
// is bound once. Not safe for concurrent use (clientPacketConn.readMu).
type batchReader struct {
	rc    syscall.RawConn
	recv  func(fd uintptr) bool // r.recvmmsg, bound once
	hdrs  [readBatch]unix.Mmsghdr
	iovs  [readBatch]unix.Iovec
	names [readBatch]unix.RawSockaddrInet6 // room for either family
	bufs  [readBatch][readBufSize]byte
	got   int   // datagrams in the batch
	next  int   // the next one to hand out
	used  int   // headers the last recvmmsg wrote (their Namelen to reset)
	err   error // of the last recvmmsg
}

// newBatchReader returns a reader of pc, or nil when pc is not a UDP
// socket (the caller then reads with pc.ReadFrom).
func newBatchReader(pc net.PacketConn) *batchReader {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &batchReader{rc: rc}
	r.recv = r.recvmmsg
	for i := range r.hdrs {
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(readBufSize)
		h := &r.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
	}
	return r
}

// read copies the next datagram into b and returns its length, which is
// more than len(b) when it did not fit (and at most readBufSize: a bigger
// datagram is cut there), and its source. It waits for the socket when the
// batch is used up, and returns the socket's error (a read deadline, a
// closed socket) as net.UDPConn.ReadFrom would.
func (r *batchReader) read(b []byte) (int, netip.AddrPort, error) {
	if r.next == r.got {
		if err := r.fill(); err != nil {
			return 0, netip.AddrPort{}, err
		}
	}
	i := r.next
	r.next++
	n := int(r.hdrs[i].Len)
	copy(b, r.bufs[i][:n])
	return n, r.source(i), nil
}

// drop forgets the datagrams of the batch not yet handed out.
func (r *batchReader) drop() { r.got, r.next = 0, 0 }

func (r *batchReader) fill() error {
	for i := range r.used {
		r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	}
	r.got, r.next, r.used, r.err = 0, 0, 0, nil
	if err := r.rc.Read(r.recv); err != nil {
		return err
	}
	return r.err
}

// recvmmsg is the RawConn.Read callback: false asks to wait for the
// socket to become readable.
func (r *batchReader) recvmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])),
			readBatch, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			r.got, r.used = int(n), int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.err = os.NewSyscallError("recvmmsg", e)
		return true
	}
}

// source is the source address of datagram i of the batch.
func (r *batchReader) source(i int) netip.AddrPort {
	sa := &r.names[i]
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			a = a.WithZone(zoneName(sa.Scope_id))
		}
		return netip.AddrPortFrom(a, ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// ntohs reads a port as the kernel stores it: in network byte order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// zoneName names an IPv6 scope as the net package does: the interface's
// name, or its index when it has none. Only link-local sources have one.
// Names are cached: looking one up is a netlink dump, far too slow for every
// datagram of an on-link sender. The index comes from the kernel (the
// receiving interface), so the cache holds at most one entry per interface;
// a renamed interface keeps its old name here until the process restarts.
func zoneName(index uint32) string {
	if v, ok := zoneNames.Load(index); ok {
		return v.(string)
	}
	name := strconv.FormatUint(uint64(index), 10)
	if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
		name = ifi.Name
	}
	zoneNames.Store(index, name)
	return name
}

var zoneNames sync.Map // uint32 interface index → string zone
