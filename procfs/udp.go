package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ParseUDPDrops sums the drops column of /proc/net/udp over the sockets
// bound to port (any local address), and says how many such sockets there
// were: a drop is a datagram the kernel threw away because the socket's
// receive buffer was full (or a filter refused it).
func ParseUDPDrops(b []byte, port int) (drops uint64, sockets int, err error) {
	suffix := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
		if len(f) < 13 || !strings.HasSuffix(f[1], suffix) {
			continue
		}
		n, err := strconv.ParseUint(f[12], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("procfs: /proc/net/udp: drops %q: %w", f[12], err)
		}
		drops += n
		sockets++
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("procfs: /proc/net/udp: %w", err)
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
