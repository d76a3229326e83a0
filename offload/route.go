package offload

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// routeInfo is how the kernel would send to an address: out of an
// interface with an MTU, or to this host (local).
type routeInfo struct {
	ifindex uint32 // 0: local
	mtu     uint32
}

// lookupRoute asks the kernel (RTM_GETROUTE, as `ip route get` does)
// how it would send from src to dst. The program cannot ask per packet:
// bpf_fib_lookup refuses on a host with forwarding off.
func lookupRoute(src, dst netip.Addr) (routeInfo, error) {
	src, dst = src.Unmap(), dst.Unmap()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return routeInfo{}, fmt.Errorf("offload: route to %s: %w", dst, err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return routeInfo{}, fmt.Errorf("offload: route to %s: %w", dst, err)
	}
	fam, alen := uint8(unix.AF_INET6), 16
	if dst.Is4() {
		fam, alen = unix.AF_INET, 4
	}
	attr := func(typ uint16, b []byte) []byte {
		a := make([]byte, unix.SizeofRtAttr+len(b))
		binary.NativeEndian.PutUint16(a[0:], uint16(unix.SizeofRtAttr+len(b)))
		binary.NativeEndian.PutUint16(a[2:], typ)
		copy(a[unix.SizeofRtAttr:], b)
		for len(a)%4 != 0 {
			a = append(a, 0)
		}
		return a
	}
	body := make([]byte, unix.SizeofRtMsg)
	body[0] = fam             // rtm_family
	body[1] = uint8(alen * 8) // rtm_dst_len
	body = append(body, attr(unix.RTA_DST, dst.AsSlice())...)
	if src.IsValid() && !src.IsUnspecified() && src.Is4() == dst.Is4() {
		body[2] = uint8(alen * 8) // rtm_src_len
		body = append(body, attr(unix.RTA_SRC, src.AsSlice())...)
	}
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], unix.RTM_GETROUTE)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(msg[8:], 1) // seq
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return routeInfo{}, fmt.Errorf("offload: route to %s: %w", dst, err)
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return routeInfo{}, fmt.Errorf("offload: route to %s: %w", dst, err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return routeInfo{}, fmt.Errorf("offload: route to %s: %w", dst, err)
	}
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
					return routeInfo{}, fmt.Errorf("offload: route to %s: %w", dst, unix.Errno(-e))
				}
			}
		case unix.RTM_NEWROUTE:
			if len(m.Data) < unix.SizeofRtMsg {
				continue
			}
			rtype := m.Data[7] // rtm_type
			attrs, err := syscall.ParseNetlinkRouteAttr(&m)
			if err != nil {
				return routeInfo{}, fmt.Errorf("offload: route to %s: %w", dst, err)
			}
			var ri routeInfo
			var metricMTU uint32
			for _, a := range attrs {
				switch {
				case a.Attr.Type == unix.RTA_OIF && len(a.Value) >= 4:
					ri.ifindex = binary.NativeEndian.Uint32(a.Value)
				case a.Attr.Type == unix.RTA_METRICS:
					metricMTU = routeMetricMTU(a.Value)
				}
			}
			switch rtype {
			case unix.RTN_LOCAL:
				return routeInfo{}, nil
			case unix.RTN_UNICAST:
			default:
				return routeInfo{}, fmt.Errorf("offload: route to %s: type %d is not unicast", dst, rtype)
			}
			ifc, err := net.InterfaceByIndex(int(ri.ifindex))
			if err != nil {
				return routeInfo{}, fmt.Errorf("offload: route to %s: %w", dst, err)
			}
			if ifc.Flags&net.FlagLoopback != 0 {
				return routeInfo{}, nil
			}
			// What the host's own output (user space's sends) is held to
			// (ip_dst_mtu_maybe_forward, ip6_mtu): the route's mtu metric,
			// locked or not, or a path MTU the host has learned for dst, when
			// there is one; else the interface's. A metric above the
			// interface's MTU would not fit the interface either. Read once,
			// at Bind: a later change of the route or path MTU is not seen.
			ri.mtu = uint32(ifc.MTU)
			if metricMTU != 0 && metricMTU < ri.mtu {
				ri.mtu = metricMTU
			}
			return ri, nil
		}
	}
	return routeInfo{}, fmt.Errorf("offload: route to %s: no answer", dst)
}

// routeMetricMTU is the RTAX_MTU value in the nested attributes of an
// RTA_METRICS attribute, as the kernel reports a route's `mtu` (with
// `lock` or without, the lock being a separate RTAX_LOCK bit) or a learned
// path MTU; 0 when there is none.
func routeMetricMTU(b []byte) uint32 {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:]))
		typ := binary.NativeEndian.Uint16(b[2:])
		if l < unix.SizeofRtAttr || l > len(b) {
			return 0
		}
		if typ == unix.RTAX_MTU && l >= unix.SizeofRtAttr+4 {
			return binary.NativeEndian.Uint32(b[unix.SizeofRtAttr:])
		}
		l = (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
		if l > len(b) {
			return 0
		}
		b = b[l:]
	}
	return 0
}
