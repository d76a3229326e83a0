package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTestCert writes a self-signed certificate for 127.0.0.1 and ::1.
func writeTestCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	return writeCert(t, nil, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
}

// writeCert writes a self-signed certificate for exactly these names and
// addresses.
func writeCert(t *testing.T, dnsNames []string, ips []net.IP) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "supernode.test"},
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

func ioReadFull(r io.Reader, b []byte) (int, error) { return io.ReadFull(r, b) }

// TestPublicHostNotInCertificate: a --public-host name that the TLS
// certificate does not cover is warned about at start (clients given this
// node's turns: URLs, or redirected to it by name, would reject it); a name
// it covers, or an IP, is not.
func TestPublicHostNotInCertificate(t *testing.T) {
	const warning = "--public-host is not a name in --cert"
	cert, key := writeCert(t, []string{"turn.example.test"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	for _, tc := range []struct {
		host string
		warn bool
	}{{"other.example.test", true}, {"turn.example.test", false}, {"127.0.0.1", false}} {
		t.Run(tc.host, func(t *testing.T) {
			tn := startNode(t, "--user", "alice:pw", "--tls-listen", "127.0.0.1:0", "--cert", cert, "--key", key,
				"--public-host", tc.host)
			if got := strings.Contains(tn.logs.String(), warning); got != tc.warn {
				t.Fatalf("warned %v, want %v; log:\n%s", got, tc.warn, tn.logs)
			}
		})
	}
}
