package api_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	supernodeapi "github.com/supernode/supernode/api"
	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/relay"
	"github.com/supernode/supernode/relay/relaytest"
)

// The admin endpoints against a real relay (relaytest) behind the real
// handler on a loopback HTTP server.

// relayAdmin is a relay.Server as the admin endpoints see it: its
// allocations and its drain, in a fleet of one.
type relayAdmin struct{ *relay.Server }

func (a relayAdmin) SetDraining(on bool) error {
	if on {
		a.Drain()
	} else {
		a.Undrain()
	}
	return nil
}

func (relayAdmin) Fleet() []supernodeapi.Member { return nil }

// startAPI starts a relay as o says and the API's handler in front of it,
// on 127.0.0.1; it returns the relay and the handler's host:port.
func startAPI(t *testing.T, o relaytest.Options) (*relaytest.Node, string) {
	t.Helper()
	tn := relaytest.Start(t, o)
	h, err := supernodeapi.New(supernodeapi.Config{Metrics: tn.Metrics, Credentials: tn.Store, Node: tn.Server,
		Admin: relayAdmin{tn.Server}, URLs: []string{"turn:" + tn.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		http.DefaultClient.CloseIdleConnections()
	})
	return tn, srv.Listener.Addr().String()
}

// listAllocations is GET /v1/allocations?query.
func listAllocations(t *testing.T, api, query string) []relay.Session {
	t.Helper()
	var resp supernodeapi.AllocationsResponse
	if code := looptest.JSON(t, http.MethodGet, "http://"+api+"/v1/allocations?"+query, "", &resp); code != http.StatusOK {
		t.Fatalf("GET /v1/allocations?%s: %d", query, code)
	}
	return resp.Allocations
}

// TestAdminKillTCPRelay: an RFC 6062 allocation is listed with what its
// peer data connections carried, and a kill closes its listener and its
// data connections.
func TestAdminKillTCPRelay(t *testing.T) {
	tn, api := startAPI(t, relaytest.Options{Users: map[string]string{"alice": "pw"}, AllowPeer: []string{"127.0.0.1"}})
	ln := relaytest.TCPEchoPeer(t)
	alloc := relaytest.AllocateTCP(t, tn.Addr(), "alice", "pw")
	data, err := alloc.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	msg := []byte("twenty bytes of data")
	if _, err := data.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	_ = data.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(data, buf); err != nil {
		t.Fatal(err)
	}
	// The relay counts a write once it returns, which can be after the
	// echo is back: wait for both directions.
	looptest.Eventually(t, "20 bytes each way on the TCP allocation", func() bool {
		as := listAllocations(t, api, "user=alice")
		return len(as) == 1 && as[0].BytesToPeer == 20 && as[0].BytesToClient == 20
	})
	if as := listAllocations(t, api, "user=alice"); as[0].RelayProtocol != "tcp" || as[0].Transport != "tcp" || as[0].PacketsToPeer != 1 {
		t.Fatalf("the TCP allocation: %+v", as)
	}
	var kr supernodeapi.KillResponse
	if code := looptest.JSON(t, http.MethodDelete, "http://"+api+"/v1/allocations?user=alice", "", &kr); code != 200 || kr.Killed != 1 {
		t.Fatalf("DELETE ?user=alice: %d %+v", code, kr)
	}
	looptest.Eventually(t, "the TCP allocation to go", func() bool { return len(listAllocations(t, api, "")) == 0 })
	_ = data.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := data.Read(buf); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the peer data connection outlived the kill: read %v", err)
	}
}

// TestIceServersWithoutSecret: with static users only, there is nothing to
// mint credentials with, and the answer says which setting is missing.
func TestIceServersWithoutSecret(t *testing.T) {
	_, api := startAPI(t, relaytest.Options{Users: map[string]string{"alice": "pw"}})
	var body map[string]string
	if code := looptest.JSON(t, "GET", "http://"+api+"/v1/ice-servers?user=a", "", &body); code != http.StatusServiceUnavailable ||
		!strings.Contains(body["error"], "--auth-secret") {
		t.Fatalf("got %d %v, want 503 naming --auth-secret", code, body)
	}
}
