package relay_test

import (
	"net"
	"os"
	"testing"

	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// A Certificate answers for the names and addresses in it, and after a
// Reload for those of the new files.
func TestCertificateVerifyHostname(t *testing.T) {
	certFile, keyFile := relaytest.WriteCert(t, []string{"turn.example.test"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	c, err := relay.LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, ok := range map[string]bool{"turn.example.test": true, "127.0.0.1": true, "other.example.test": false, "::1": false} {
		if err := c.VerifyHostname(name); (err == nil) != ok {
			t.Errorf("VerifyHostname(%s): %v, want valid %v", name, err, ok)
		}
	}
	otherCert, otherKey := relaytest.WriteCert(t, []string{"other.example.test"}, nil)
	for from, to := range map[string]string{otherCert: certFile, otherKey: keyFile} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if c.VerifyHostname("other.example.test") != nil || c.VerifyHostname("turn.example.test") == nil {
		t.Error("VerifyHostname does not follow Reload")
	}
}
