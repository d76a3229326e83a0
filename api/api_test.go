package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/supernode/supernode/allocation"
	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/relay"
)

// drainState is the node and admin side the handler acts on, kept in
// memory: these tests are about the HTTP surface (status codes, JSON,
// which requests get through); relay_test.go runs the same endpoints
// against a real relay, and cmd/supernode's admin tests through the binary.
type drainState struct{ draining, killed bool }

func (d *drainState) Draining() bool                           { return d.draining }
func (d *drainState) AllocationCount() int                     { return 0 }
func (d *drainState) Allocations(relay.Filter) []relay.Session { return nil }
func (d *drainState) Kill(relay.Filter) int                    { d.killed = true; return 0 }
func (d *drainState) SetDraining(on bool) error                { d.draining = on; return nil }
func (d *drainState) Fleet() []Member                          { return nil }

func newTestServer(t *testing.T, token string) (*httptest.Server, *drainState) {
	t.Helper()
	st := &drainState{}
	h, err := New(Config{
		Metrics:     metrics.New("test"),
		Credentials: allocation.NewStore("test", allocation.Credentials{Secrets: []string{"s3cret-s3cret-s3cret"}}, time.Now),
		Node:        st, Admin: st, Token: token,
		URLs: []string{"turn:127.0.0.1:3478"},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, st
}

// do sends method url with headers and returns the status, the body's
// "error" (failing unless the body is JSON) and the raw body.
func do(t *testing.T, srv *httptest.Server, method, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); method != http.MethodHead && ct != "application/json" {
		t.Fatalf("%s %s: %d with Content-Type %q, want JSON: %s", method, path, resp.StatusCode, ct, raw)
	}
	var e struct {
		Error string `json:"error"`
	}
	if method != http.MethodHead {
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("%s %s: %d, body not JSON: %v: %s", method, path, resp.StatusCode, err, raw)
		}
	}
	return resp.StatusCode, e.Error
}

// TestRebindingRefused: without a token, a request naming this node by a
// DNS name (a page that rebound its name to 127.0.0.1, with headers a
// browser sends for a same-origin request) changes nothing; by IP or as
// localhost it works.
func TestRebindingRefused(t *testing.T) {
	srv, st := newTestServer(t, "")
	rebound := map[string]string{"Host": "evil.example:9641", "Origin": "http://evil.example:9641", "Sec-Fetch-Site": "same-origin"}
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/drain"}, {"DELETE", "/v1/allocations?user=u"}, {"GET", "/v1/allocations"},
		{"GET", "/v1/fleet"}, {"GET", "/v1/ice-servers?user=u"},
	} {
		code, msg := do(t, srv, c.method, c.path, rebound)
		if code != http.StatusMisdirectedRequest || !strings.Contains(msg, "--api-token") {
			t.Errorf("%s %s with Host evil.example: %d %q, want 421 naming --api-token", c.method, c.path, code, msg)
		}
	}
	if st.draining || st.killed {
		t.Fatalf("a rebound request got through: draining=%v killed=%v", st.draining, st.killed)
	}
	for _, host := range []string{"localhost:9641", "LocalHost", "127.0.0.1:9641", "[::1]:9641"} {
		st.draining = false
		if code, msg := do(t, srv, "POST", "/v1/drain", map[string]string{"Host": host}); code != http.StatusOK || !st.draining {
			t.Errorf("POST /v1/drain with Host %s: %d %q, draining=%v", host, code, msg, st.draining)
		}
	}
	// With a token, the token is what guards /v1/*, whatever the Host.
	srv, st = newTestServer(t, "a-token-of-enough-length")
	if code, msg := do(t, srv, "POST", "/v1/drain", map[string]string{"Host": "relay.example.net", "Authorization": "Bearer a-token-of-enough-length"}); code != http.StatusOK || !st.draining {
		t.Errorf("POST /v1/drain by name with the token: %d %q", code, msg)
	}
}

// TestErrorsAreJSON: cross-origin refusals, wrong methods, unknown /v1
// paths and unknown parameters are answered in JSON naming what is wrong.
func TestErrorsAreJSON(t *testing.T) {
	srv, st := newTestServer(t, "")
	cases := []struct {
		method, path string
		hdr          map[string]string
		code         int
		want         string
	}{
		{"POST", "/v1/drain", map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, 403, "cross-origin"},
		{"DELETE", "/v1/allocations?user=u", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "cross-origin"},
		{"PUT", "/v1/drain", nil, 405, "want DELETE or GET or HEAD or POST"},
		{"POST", "/v1/allocations", nil, 405, "want DELETE or GET or HEAD"},
		{"GET", "/v1/nothing", nil, 404, "/v1/nothing: no such endpoint"},
		{"GET", "/v1/ice-servers?user=u&bogus=1", nil, 400, `unknown parameter "bogus"`},
		{"GET", "/v1/drain?now=1", nil, 400, `unknown parameter "now"`},
		{"GET", "/v1/allocations?transport=sctp", nil, 400, "transport: want udp, tcp, tls or dtls"},
		{"DELETE", "/v1/allocations", nil, 400, "missing user or call"},
	}
	for _, c := range cases {
		code, msg := do(t, srv, c.method, c.path, c.hdr)
		if code != c.code || !strings.Contains(msg, c.want) {
			t.Errorf("%s %s: %d %q, want %d containing %q", c.method, c.path, code, msg, c.code, c.want)
		}
	}
	if st.draining || st.killed {
		t.Fatalf("a refused request changed state: draining=%v killed=%v", st.draining, st.killed)
	}
	if code, msg := do(t, srv, "GET", "/v1/ice-servers?user=u&ttl=60&zone=z1&local=true", nil); code != http.StatusOK || msg != "" {
		t.Fatalf("ice-servers with every parameter: %d %q", code, msg)
	}
}
