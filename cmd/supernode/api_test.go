package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/looptest"
)

// getJSON is looptest.JSON.
var getJSON = looptest.JSON

func TestIceServersEndpoint(t *testing.T) {
	cert, key := writeTestCert(t)
	tn := startNode(t, "--auth-secret", "topsecret", "--tls-listen", "127.0.0.1:0", "--cert", cert, "--key", key,
		"--api-token", "tok")
	base := "http://" + tn.http + "/v1/ice-servers"
	var r api.IceServersResponse
	if code := getJSON(t, "GET", base+"?user=alice&ttl=600", "", &r); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", code)
	}
	for _, method := range []string{"GET", "POST"} {
		r = api.IceServersResponse{}
		if code := getJSON(t, method, base+"?user=alice&ttl=600", "tok", &r); code != http.StatusOK {
			t.Fatalf("%s: %d", method, code)
		}
		if len(r.IceServers) != 1 || r.TTL != 600 {
			t.Fatalf("%s: %+v", method, r)
		}
		s := r.IceServers[0]
		urls := strings.Join(s.URLs, " ")
		for _, want := range []string{"stun:" + tn.udp, "turn:" + tn.udp + "?transport=udp",
			"turn:" + tn.udp + "?transport=tcp", "turns:" + tn.tls + "?transport=tcp"} {
			if !strings.Contains(urls, want) {
				t.Errorf("urls %v lack %s", s.URLs, want)
			}
		}
		exp, id, ok := allocation.ParseRESTUsername(s.Username)
		if !ok || id != "alice" || time.Until(exp) > 601*time.Second || time.Until(exp) < 590*time.Second {
			t.Errorf("username %q", s.Username)
		}
		if s.Credential != allocation.RESTPassword("topsecret", s.Username) {
			t.Errorf("credential is not HMAC-SHA1 of the first secret")
		}
		// And the minted credentials work on the relay.
		c := newClient(t, mustListenUDP(t, "udp4", "127.0.0.1:0"), tn.udp, s.Username, s.Credential)
		rc, err := c.Allocate()
		if err != nil {
			t.Fatalf("allocate with minted credentials: %v", err)
		}
		_ = rc.Close()
	}
	for _, q := range []string{"", "?user=", "?user=a&ttl=-5", "?user=a&ttl=abc", "?user=a&ttl=99999999"} {
		if code := getJSON(t, "GET", base+q, "tok", nil); code != http.StatusBadRequest {
			t.Errorf("query %q: %d, want 400", q, code)
		}
	}
	if code := getJSON(t, "GET", "http://"+tn.http+"/readyz", "", nil); code != http.StatusOK {
		t.Errorf("readyz: %d", code)
	}
}

func TestPprofEndpoint(t *testing.T) {
	off := startNode(t)
	if code := getJSON(t, "GET", "http://"+off.http+"/debug/pprof/", "", nil); code != http.StatusNotFound {
		t.Fatalf("without --pprof: %d, want 404", code)
	}
	on := startNode(t, "--pprof", "--api-token", "tok")
	url := "http://" + on.http + "/debug/pprof/"
	if code := getJSON(t, "GET", url, "", nil); code != http.StatusUnauthorized {
		t.Fatalf("--pprof without token: %d, want 401", code)
	}
	if code := getJSON(t, "GET", url+"goroutine?debug=1", "tok", nil); code != http.StatusOK {
		t.Fatalf("--pprof with token: %d, want 200", code)
	}
}
