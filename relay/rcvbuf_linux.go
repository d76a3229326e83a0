package relay

import (
	"errors"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setRcvbuf asks for size bytes of receive buffer on fd. SO_RCVBUFFORCE
// (CAP_NET_ADMIN) is not capped by net.core.rmem_max; without the
// capability the kernel answers EPERM and SO_RCVBUF, which is capped
// silently, is used instead.
func setRcvbuf(fd, size int) error {
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
	if errors.Is(err, unix.EPERM) {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
	}
	return err
}

// getRcvbuf is fd's receive buffer as setRcvbuf counts it: the kernel
// doubles what it is asked for (room for its own bookkeeping) and reports
// the doubled figure.
func getRcvbuf(fd int) (int, error) {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	return v / 2, err
}

// sockDrops is the kernel's count of packets dropped at fd's socket
// (SO_MEMINFO's SK_MEMINFO_DROPS, sk_drops): for a UDP socket, datagrams
// that found its receive buffer full (and the rare one with a bad checksum
// or refused by a socket filter). The kernel keeps it in 32 bits.
func sockDrops(fd int) (uint32, error) {
	var info [unix.SK_MEMINFO_VARS]uint32
	l := uint32(unsafe.Sizeof(info))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, syscall.Errno(e)
	}
	if l <= unix.SK_MEMINFO_DROPS*4 {
		return 0, errShortMeminfo
	}
	return info[unix.SK_MEMINFO_DROPS], nil
}
