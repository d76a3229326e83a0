package main

import (
	"io"
	"net"
	"strings"
	"testing"

	"github.com/supernode/supernode/relay/relaytest"
)

// writeTestCert writes a self-signed certificate for 127.0.0.1 and ::1.
func writeTestCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	return writeCert(t, nil, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
}

// writeCert writes a self-signed certificate for exactly these names and
// addresses.
var writeCert = relaytest.WriteCert

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
