//go:build !linux

package relay

import "golang.org/x/sys/unix"

// setRcvbuf asks for size bytes of receive buffer on fd (SO_RCVBUF; other
// systems have no way past their cap).
func setRcvbuf(fd, size int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
}

// getRcvbuf is fd's receive buffer.
func getRcvbuf(fd int) (int, error) {
	return unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
}

// sockDrops is not available outside Linux (SO_MEMINFO).
func sockDrops(int) (uint32, error) { return 0, ErrDropsUnsupported }
