package relaytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/endpoint"
	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/offload"
	"github.com/supernode/supernode/relay"
)

// Realm is the realm every Node serves and every client here signs with.
const Realm = "supernode.test"

// The limits a Node starts with unless Options or Configure say otherwise
// are the daemon's defaults (relay.DefaultMaxBPS and the others, which
// cmd/supernode's flags default to), so a test sees the relay as an
// operator who set nothing runs it.

// Options say what a Node serves. The zero value is a relay on one
// 127.0.0.1 UDP+TCP listener with two UDP sockets, relaying from
// 127.0.0.1, with no credentials.
type Options struct {
	// Users are static long-term users, name to password.
	Users map[string]string
	// Secrets are TURN REST secrets; the first mints.
	Secrets []string
	// AllowPeer and DenyPeer are the operator's peer rules (CIDRs or IPs).
	AllowPeer, DenyPeer []string
	// Listen are the UDP+TCP listen addresses; nil is 127.0.0.1:0.
	Listen []string
	// UDPSockets is the SO_REUSEPORT sockets per Listen address; zero is 2.
	// Rcvbuf is each UDP socket's receive buffer in bytes; zero is
	// relay.DefaultUDPRcvbuf.
	UDPSockets int
	Rcvbuf     int
	// RelayIPs are the relay addresses; nil is 127.0.0.1.
	RelayIPs []string
	// TLS and DTLS add a TLS and a DTLS listener on 127.0.0.1 with a
	// self-signed certificate for 127.0.0.1 and ::1.
	TLS, DTLS bool
	// UserQuota is the per-user allocation quota; zero is
	// allocation.DefaultUserQuota, negative unlimited. TotalQuota is the
	// node's; zero is unlimited.
	UserQuota, TotalQuota int
	// Offload is the kernel path as the daemon's --offload takes it: auto,
	// on or off. Empty is auto, or off when the environment's
	// SUPERNODE_OFFLOAD says off (CI runs a set of tests again that way).
	// On fails the test when the kernel path cannot start, or skips it
	// when SUPERNODE_OFFLOAD_OPTIONAL=1 (a machine without BPF).
	Offload offload.Mode
	// LogLevel is what the Node's logger keeps; zero is info. LogJSON
	// writes JSON lines (the daemon's --log-format json) instead of text.
	LogLevel slog.Level
	LogJSON  bool
	// Configure, when set, has the last word on the relay's Config.
	Configure func(*relay.Config)
}

// Node is a relay.Server started on loopback with real sockets, as the
// daemon starts it but from a relay.Config built here: no flags, no HTTP.
type Node struct {
	t testing.TB
	// Server is the running relay; Config what it was started with, and
	// Options the Options it was started from, zero values filled.
	Server  *relay.Server
	Config  relay.Config
	Options Options
	// Metrics is the registry the relay counts on.
	Metrics *metrics.Metrics
	// Store holds the credentials; Table the allocations and quotas.
	Store *allocation.Store
	Table *allocation.Table
	// Offload is the kernel path, nil when it is off.
	Offload *offload.Offload
	// UDP is each Listen address as bound (UDP and TCP share the port);
	// TLS and DTLS the TLS and DTLS listeners', empty without them.
	UDP       []string
	TLS, DTLS string
	// UDPConns are the UDP listener sockets.
	UDPConns []net.PacketConn
	// Logs is what the relay logged.
	Logs *looptest.Log

	closers []func() error
	stopped sync.Once
}

// Addr is the first UDP+TCP listener's address.
func (n *Node) Addr() string { return n.UDP[0] }

// Start runs a Node as o says and stops it when the test ends, then checks
// that no goroutine leaked.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	n := &Node{t: t, Metrics: metrics.New("test"), Logs: &looptest.Log{}}
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			t.Logf("relay log:\n%s", n.Logs)
		}
		VerifyNoLeaks(t, ignore)
	})
	var h slog.Handler = slog.NewTextHandler(n.Logs, &slog.HandlerOptions{Level: o.LogLevel})
	if o.LogJSON {
		h = slog.NewJSONHandler(n.Logs, &slog.HandlerOptions{Level: o.LogLevel})
	}
	log := slog.New(h)
	if len(o.Listen) == 0 {
		o.Listen = []string{"127.0.0.1:0"}
	}
	if o.UDPSockets == 0 {
		o.UDPSockets = 2
	}
	if o.Rcvbuf == 0 {
		o.Rcvbuf = relay.DefaultUDPRcvbuf
	}
	if len(o.RelayIPs) == 0 {
		o.RelayIPs = []string{"127.0.0.1"}
	}
	switch {
	case o.UserQuota == 0:
		o.UserQuota = allocation.DefaultUserQuota
	case o.UserQuota < 0:
		o.UserQuota = 0
	}
	n.Options = o
	relayIPs := make([]netip.Addr, len(o.RelayIPs))
	for i, s := range o.RelayIPs {
		relayIPs[i] = netip.MustParseAddr(s)
	}
	n.Store = allocation.NewStore(Realm, allocation.Credentials{Users: o.Users, Secrets: o.Secrets}, nil)
	n.Table = allocation.NewTable(allocation.TableConfig{UserQuota: o.UserQuota, TotalQuota: o.TotalQuota})
	policy, err := relay.NewPolicy(o.AllowPeer, o.DenyPeer)
	if err != nil {
		t.Fatal(err)
	}
	ls, listenIPs := n.listen(o)
	n.Offload = n.startOffload(o.Offload, append(relayIPs, listenIPs...), log)
	n.Config = relay.Config{
		Offload:         n.Offload,
		Listeners:       ls,
		Realm:           Realm,
		Credentials:     n.Store,
		Table:           n.Table,
		Policy:          policy,
		Metrics:         n.Metrics,
		Logger:          log,
		RelayIPs:        relayIPs,
		LocalIPs:        endpoint.LocalIPs(),
		MaxBPS:          relay.DefaultMaxBPS,
		MaxConnsPerIP:   relay.DefaultMaxConnsPerIP,
		MaxPendingConns: relay.DefaultMaxPendingConns,
		UserAllocRate:   relay.DefaultUserAllocRate,
		UnauthRate:      relay.DefaultUnauthRate,
		LogSessions:     true,
	}
	if o.Configure != nil {
		o.Configure(&n.Config)
	}
	if n.Server, err = relay.New(n.Config); err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	return n
}

// listen opens every listener o asks for and returns them with the
// addresses they listen on.
func (n *Node) listen(o Options) ([]relay.Listener, []netip.Addr) {
	t := n.t
	t.Helper()
	var ls []relay.Listener
	var ips []netip.Addr
	for _, a := range o.Listen {
		pcs, tl, err := relay.ListenUDPAndTCP(a, o.UDPSockets, o.Rcvbuf)
		if err != nil {
			t.Fatal(err)
		}
		for _, pc := range pcs {
			n.closers = append(n.closers, pc.Close)
			ls = append(ls, relay.Listener{Transport: "udp", PacketConn: pc})
		}
		n.closers = append(n.closers, tl.Close)
		ls = append(ls, relay.Listener{Transport: "tcp", Listener: tl})
		n.UDPConns = append(n.UDPConns, pcs...)
		n.UDP = append(n.UDP, pcs[0].LocalAddr().String())
		ips = append(ips, netip.MustParseAddrPort(pcs[0].LocalAddr().String()).Addr())
	}
	if err := relay.CountRcvbufDrops(n.Metrics, n.UDPConns); err != nil && !errors.Is(err, relay.ErrDropsUnsupported) {
		t.Fatal(err)
	}
	if !o.TLS && !o.DTLS {
		return ls, ips
	}
	certFile, keyFile := WriteCert(t, nil, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	cert, err := relay.LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if o.TLS {
		tl, err := relay.ListenTLS("127.0.0.1:0", cert)
		if err != nil {
			t.Fatal(err)
		}
		n.closers = append(n.closers, tl.Close)
		ls = append(ls, relay.Listener{Transport: "tls", Listener: tl})
		n.TLS = tl.Addr().String()
	}
	if o.DTLS {
		dl, err := relay.ListenDTLS("127.0.0.1:0", cert)
		if err != nil {
			t.Fatal(err)
		}
		n.closers = append(n.closers, dl.Close)
		ls = append(ls, relay.Listener{Transport: "dtls", Listener: dl})
		n.DTLS = dl.Addr().String()
	}
	return ls, ips
}

// startOffload starts the kernel path as mode says, the daemon's way
// (offload.Start): auto goes without it when it cannot load, on fails the
// test.
func (n *Node) startOffload(mode offload.Mode, addrs []netip.Addr, log *slog.Logger) *offload.Offload {
	t := n.t
	t.Helper()
	if mode == "" {
		mode = offload.Auto
		if os.Getenv("SUPERNODE_OFFLOAD") == "off" {
			mode = offload.Off
		}
	}
	k, err := offload.Start(mode, offload.Config{Addrs: addrs, Logger: log})
	switch {
	case err == nil:
	case os.Getenv("SUPERNODE_OFFLOAD_OPTIONAL") == "1":
		t.Skipf("kernel path unavailable here: %v", err)
	default:
		// CI runs as root, where it must work.
		t.Fatalf("kernel path did not start (run as root, or set SUPERNODE_OFFLOAD_OPTIONAL=1): %v", err)
	}
	if k != nil {
		k.Register(n.Metrics)
	}
	return k
}

// Stop stops the relay, then the kernel path, then the sockets, as the
// daemon does on SIGINT; the test's end calls it too, and once is enough.
func (n *Node) Stop() { n.stopped.Do(n.close) }

func (n *Node) close() {
	if n.Server != nil {
		_ = n.Server.Close()
	}
	if n.Offload != nil {
		_ = n.Offload.Close()
	}
	for _, c := range n.closers {
		_ = c()
	}
}

// Counter is the current value of one of the relay's metrics; see Counter.
func (n *Node) Counter(name string, labels ...any) float64 {
	n.t.Helper()
	return Counter(n.t, n.Metrics, name, labels...)
}

// VerifyNoLeaks fails t if a goroutine started since ignore was taken is
// still running ten seconds on. goleak's own retries last about two
// seconds; on a 2-core machine under a full test run, closing DTLS and
// pion goroutines can take longer. A real leak is still there after ten.
func VerifyNoLeaks(t testing.TB, ignore goleak.Option) {
	t.Helper()
	opts := []goleak.Option{ignore, goleak.IgnoreTopFunction("github.com/pion/transport/v5/deadline.(*Deadline).SetDeadline.func1")}
	for deadline := time.Now().Add(10 * time.Second); goleak.Find(opts...) != nil && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	goleak.VerifyNone(t, opts...)
}

// WriteCert writes a self-signed certificate for exactly these names and
// addresses, valid for an hour either side of now, and returns its files.
func WriteCert(t testing.TB, dnsNames []string, ips []net.IP) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: Realm},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     dnsNames,
		IPAddresses:  ips,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
