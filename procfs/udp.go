package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// ParseUDPDrops sums the drops column of /proc/net/udp over the sockets
// bound to port (any local address), and says how many such sockets there
// were: a drop is a datagram the kernel threw away because the socket's
// receive buffer was full (or a filter refused it).
func ParseUDPDrops(b []byte, port int) (drops uint64, sockets int, err error) {
	suffix := fmt.Appendf(nil, ":%04X", port)
	for line := range bytes.Lines(b) {
		f := bytes.Fields(line)
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
		if len(f) < 13 || !bytes.HasSuffix(f[1], suffix) {
			continue
		}
		n, err := strconv.ParseUint(string(f[12]), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("procfs: /proc/net/udp: drops %q: %w", f[12], err)
		}
		drops += n
		sockets++
	}
	return drops, sockets, nil
}

// ReadUDPDrops reads /proc/net/udp (the IPv4 sockets of this process's
// network namespace) for ParseUDPDrops.
func ReadUDPDrops(port int) (drops uint64, sockets int, err error) {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0, 0, err
	}
	return ParseUDPDrops(b, port)
}
