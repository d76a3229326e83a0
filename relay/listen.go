package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"

	"github.com/pion/dtls/v3"
	"golang.org/x/sys/unix"
)

// network returns "udp4"/"udp6" (or tcp) for a host:port so that an IPv6
// wildcard listener does not also claim the IPv4 port.
func network(base, addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if host == "" {
		return base + "4", nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("relay: listen address %q: host must be an IP address", addr)
	}
	if ip.Unmap().Is4() {
		return base + "4", nil
	}
	return base + "6", nil
}

func reusePortControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// ListenUDP opens n UDP sockets on addr with SO_REUSEPORT, so the kernel
// spreads clients over n read loops (a client's 5-tuple always hashes to the
// same socket). With port 0 the first socket picks the port for the rest.
//
// rcvbuf is each socket's receive buffer in bytes, set before the socket is
// bound (0 leaves the kernel's default, net.core.rmem_default). On Linux a
// process with CAP_NET_ADMIN gets it whatever net.core.rmem_max says; any
// other is capped there silently: RcvbufSize tells what was obtained.
func ListenUDP(addr string, n, rcvbuf int) ([]net.PacketConn, error) {
	netw, err := network("udp", addr)
	if err != nil {
		return nil, err
	}
	if n < 1 {
		n = 1
	}
	if rcvbuf < 0 {
		return nil, fmt.Errorf("relay: listen udp %s: receive buffer %d bytes: want 0 (kernel default) or more", addr, rcvbuf)
	}
	lc := net.ListenConfig{Control: func(netw, a string, c syscall.RawConn) error {
		if err := reusePortControl(netw, a, c); err != nil || rcvbuf == 0 {
			return err
		}
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setRcvbuf(int(fd), rcvbuf) }); err != nil {
			return err
		}
		return serr
	}}
	var out []net.PacketConn
	for range n {
		pc, err := lc.ListenPacket(context.Background(), netw, addr)
		if err != nil {
			for _, c := range out {
				_ = c.Close()
			}
			return nil, fmt.Errorf("relay: listen udp %s: %w", addr, err)
		}
		addr = pc.LocalAddr().String()
		out = append(out, pc)
	}
	return out, nil
}

// ListenUDPAndTCP opens ListenUDP's n sockets and a ListenTCP listener on
// one port of addr, as a TURN listen address serves both. With port 0 the
// kernel picks the UDP port, and TCP may already use that port (an outgoing
// connection's, say): then the pair is tried again on another, up to 20
// times.
func ListenUDPAndTCP(addr string, n, rcvbuf int) ([]net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	for try := 1; ; try++ {
		pcs, err := ListenUDP(addr, n, rcvbuf)
		if err != nil {
			return nil, nil, err
		}
		tl, err := ListenTCP(pcs[0].LocalAddr().String())
		if err == nil {
			return pcs, tl, nil
		}
		for _, pc := range pcs {
			_ = pc.Close()
		}
		if port != "0" || !errors.Is(err, syscall.EADDRINUSE) || try == 20 {
			return nil, nil, err
		}
	}
}

// RcvbufSize is the receive buffer pc obtained, in the bytes ListenUDP's
// rcvbuf counts (Linux reports twice that, its bookkeeping included, and
// this halves it back).
func RcvbufSize(pc net.PacketConn) (int, error) {
	rc, err := rawConn(pc)
	if err != nil {
		return 0, err
	}
	var size int
	var serr error
	if err := rc.Control(func(fd uintptr) { size, serr = getRcvbuf(int(fd)) }); err != nil {
		return 0, fmt.Errorf("relay: receive buffer: %w", err)
	}
	if serr != nil {
		return 0, fmt.Errorf("relay: receive buffer: %w", serr)
	}
	return size, nil
}

// rawConn is pc's file descriptor, for socket options.
func rawConn(pc net.PacketConn) (syscall.RawConn, error) {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("relay: %T has no file descriptor", pc)
	}
	return sc.SyscallConn()
}

// ListenTCP opens a TCP listener on addr.
func ListenTCP(addr string) (net.Listener, error) {
	netw, err := network("tcp", addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen(netw, addr)
	if err != nil {
		return nil, fmt.Errorf("relay: listen tcp %s: %w", addr, err)
	}
	return ln, nil
}

// Certificate holds the TLS/DTLS certificate and swaps it on Reload, so
// SIGHUP picks up a renewed certificate without closing any connection.
type Certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadCertificate reads a PEM certificate chain and key.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload re-reads the files; on error the old certificate stays in use.
func (c *Certificate) Reload() error {
	kp, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("relay: load --cert %s / --key %s: %w", c.certFile, c.keyFile, err)
	}
	c.cur.Store(&kp)
	return nil
}

// Get returns the current certificate.
func (c *Certificate) Get() *tls.Certificate { return c.cur.Load() }

// VerifyHostname reports whether the current certificate is valid for
// name (a host name or an IP address), as a client dialling name checks
// it; nil means it is.
func (c *Certificate) VerifyHostname(name string) error {
	leaf, err := x509.ParseCertificate(c.Get().Certificate[0])
	if err != nil {
		return err
	}
	return leaf.VerifyHostname(name)
}

// ListenTLS opens a TLS listener on addr serving cert.
func ListenTLS(addr string, cert *Certificate) (net.Listener, error) {
	ln, err := ListenTCP(addr)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(ln, &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cert.Get(), nil
		},
	}), nil
}

// ListenDTLS opens a DTLS listener on addr serving cert.
func ListenDTLS(addr string, cert *Certificate) (net.Listener, error) {
	netw, err := network("udp", addr)
	if err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr(netw, addr)
	if err != nil {
		return nil, err
	}
	ln, err := dtls.ListenWithOptions(netw, ua,
		dtls.WithGetCertificate(func(*dtls.ClientHelloInfo) (*tls.Certificate, error) {
			return cert.Get(), nil
		}),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
	)
	if err != nil {
		return nil, fmt.Errorf("relay: listen dtls %s: %w", addr, err)
	}
	return ln, nil
}
