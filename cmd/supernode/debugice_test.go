package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/supernode/supernode/api"
	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
)

// debugICEVerdict is the verdict the /debug/ice page publishes.
type debugICEVerdict struct {
	Verdict    string `json:"verdict"`
	Error      string `json:"error"`
	Transports map[string]struct {
		Verdict  string   `json:"verdict"`
		Reason   string   `json:"reason"`
		URLs     []string `json:"urls"`
		Attempts []struct {
			OK         bool              `json:"ok"`
			Problems   []string          `json:"problems"`
			Echo       bool              `json:"echo"`
			IceErrors  []json.RawMessage `json:"iceErrors"`
			Candidates map[string][]browserCandidate
			Audio      *struct {
				PacketsReceived int `json:"packetsReceived"`
			} `json:"audio"`
			PairOfferer *struct {
				browserPair
				RTTMs                  *float64 `json:"rttMs"`
				TransportBytesSent     int64    `json:"transportBytesSent"`
				TransportBytesReceived int64    `json:"transportBytesReceived"`
			} `json:"pairOfferer"`
			PairAnswerer *browserPair `json:"pairAnswerer"`
		} `json:"attempts"`
	} `json:"transports"`
}

// TestDebugUIEndpoint checks that /debug/ice is served only with
// --debug-ui, as a self-contained page that loads nothing from elsewhere,
// and without the API token (the page asks its user for it).
func TestDebugUIEndpoint(t *testing.T) {
	get := func(url string) (*http.Response, string) {
		t.Helper()
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}
	off := startNode(t)
	if resp, _ := get("http://" + off.http + "/debug/ice"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("without --debug-ui: %s, want 404", resp.Status)
	}
	on := startNode(t, "--debug-ui", "--api-token", "tok")
	resp, body := get("http://" + on.http + "/debug/ice")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("with --debug-ui: %s %q, want 200 text/html", resp.Status, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("Content-Security-Policy %q, want default-src 'none' and connect-src 'self'", csp)
	}
	for _, ext := range []string{"http://", "https://", "//cdn", "src=\""} {
		if strings.Contains(body, ext) {
			t.Errorf("page contains %q: it must load nothing from elsewhere", ext)
		}
	}
	if !strings.Contains(body, "/v1/ice-servers") {
		t.Error("page does not fetch /v1/ice-servers")
	}
	// The token still guards what the page does.
	if code := getJSON(t, "GET", "http://"+on.http+"/v1/ice-servers?user=x", "", nil); code != http.StatusUnauthorized {
		t.Errorf("/v1/ice-servers without token: %d, want 401", code)
	}
}

// TestBrowserDebugICEPage opens the node's /debug/ice page in headless
// Chromium and runs it as an operator would: with a wrong token the page
// reports the 401 naming --api-token; with the right one it makes a
// relay-only call through the node over UDP and over TCP, and the test
// reads the page's own verdict back, then checks it against the node's
// counters.
func TestBrowserDebugICEPage(t *testing.T) {
	chromium := findChromium(t)
	const token = "debug-ice-token"
	tn := startNode(t, "--auth-secret", "somesecret", "--debug-ui", "--api-token", token)
	// Two transports, each at most two attempts of at most 37 s (the page's
	// own waits).
	ctx, cancel := openBrowserTab(t, chromium, time.Now().Add(170*time.Second))
	defer cancel()
	page := "http://" + tn.http + "/debug/ice"
	run := func(fragment string) (debugICEVerdict, string) {
		t.Helper()
		return runDebugICEPage(t, ctx, page+fragment)
	}

	// A wrong token: the page says what is wrong, and drops the token from
	// the address bar.
	v, raw := run("#token=wrong")
	if v.Verdict != "fail" || !strings.Contains(v.Error, "401") || !strings.Contains(v.Error, "--api-token") {
		t.Errorf("wrong token: verdict %s", raw)
	}
	if hash, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash`)); err != nil || hash != "" {
		t.Errorf("location.hash after load = %q (%v), want the token removed", hash, err)
	}

	v, raw = run("#token=" + token)
	if v.Verdict != "pass" {
		t.Fatalf("page verdict %q: %s\n%s", v.Verdict, v.Error, raw)
	}
	for _, tr := range []string{"udp", "tcp"} {
		res, ok := v.Transports[tr]
		if !ok || res.Verdict != "pass" || len(res.Attempts) == 0 {
			t.Errorf("%s: %+v, want pass", tr, res)
			continue
		}
		if len(res.Attempts) > 1 {
			t.Logf("%s: passed on attempt %d; first: %v", tr, len(res.Attempts), res.Attempts[0].Problems)
		}
		a := res.Attempts[len(res.Attempts)-1]
		for _, u := range res.URLs {
			if !strings.Contains(u, tn.udp) || !strings.HasSuffix(u, "transport="+tr) {
				t.Errorf("%s: call used %q, want only this node's %s URL", tr, u, tr)
			}
		}
		if !a.Echo || a.Audio == nil || a.Audio.PacketsReceived == 0 {
			t.Errorf("%s: echo %v audio %+v, want both", tr, a.Echo, a.Audio)
		}
		p := a.PairOfferer
		if p == nil || p.Local == nil || p.Remote == nil {
			t.Errorf("%s: no selected pair in the verdict", tr)
			continue
		}
		t.Logf("%s: %s %s:%d (over %s) -> %s %s:%d, rtt %v ms, call bytes sent %d received %d, audio %d packets, candidates %d/%d",
			tr, p.Local.Type, p.Local.Address, p.Local.Port, p.Local.RelayProtocol, p.Remote.Type, p.Remote.Address, p.Remote.Port,
			fmtRTT(p.RTTMs), p.TransportBytesSent, p.TransportBytesReceived, a.Audio.PacketsReceived, len(a.Candidates["offerer"]), len(a.Candidates["answerer"]))
		if p.Local.Type != "relay" || p.Remote.Type != "relay" || p.Local.RelayProtocol != tr {
			t.Errorf("%s: selected pair %+v -> %+v, want relay -> relay allocated over %s", tr, *p.Local, *p.Remote, tr)
		}
		// The call's bytes, not the selected pair's: those start from zero
		// again when ICE switches pairs (the page gathers on two networks).
		if p.RTTMs == nil || p.TransportBytesSent == 0 || p.TransportBytesReceived == 0 {
			t.Errorf("%s: rtt %v call bytes sent %d received %d, want all shown", tr, fmtRTT(p.RTTMs), p.TransportBytesSent, p.TransportBytesReceived)
		}
		// The node relayed the call over this transport.
		if c2p, p2c := tn.counter("relay_packets", metrics.ClientToPeer, tr), tn.counter("relay_packets", metrics.PeerToClient, tr); c2p <= 0 || p2c <= 0 {
			t.Errorf("node: relay_packets{%s} client_to_peer %v peer_to_client %v, want both > 0", tr, c2p, p2c)
		}
	}
	// The page closes its connections when a call ends.
	looptest.Eventually(t, "allocations_active{udp,tcp} back to 0 after the page's calls", func() bool {
		return tn.counter("allocations_active", "udp") == 0 && tn.counter("allocations_active", "tcp") == 0
	})
}

// runDebugICEPage loads the /debug/ice page at url, runs its test as the
// Run button does, and returns the verdict the page shows in #verdict
// (decoded, and as the page's JSON).
func runDebugICEPage(t *testing.T, ctx context.Context, url string) (debugICEVerdict, string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("load %s: %v", url, err)
	}
	// Called as a click would (a user gesture, which lets the page's
	// AudioContext start).
	gesture := func(p *runtime.EvaluateParams) { g := true; p.UserGesture = &g }
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string]("window.runIceTest()", chromedp.EvalAwaitPromise, gesture)); err != nil {
		t.Fatalf("run the page's test: %v", err)
	}
	// What the page shows, not what the function returned.
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('verdict').textContent`))
	if err != nil {
		t.Fatalf("read the verdict: %v", err)
	}
	attr, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('verdict').dataset.verdict`))
	if err != nil {
		t.Fatalf("read the verdict: %v", err)
	}
	var v debugICEVerdict
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatalf("decode the page's verdict %q: %v", raw, err)
	}
	if attr != v.Verdict {
		t.Errorf("#verdict data-verdict=%q, but its JSON says %q", attr, v.Verdict)
	}
	return v, raw
}

// fmtRTT is the page's round-trip time for a log line.
func fmtRTT(ms *float64) string {
	if ms == nil {
		return "none"
	}
	return strconv.FormatFloat(*ms, 'f', -1, 64)
}

// TestDebugUIOption checks that --debug-ui is off by default and can be
// turned on by flag, by SUPERNODE_DEBUG_UI and by the config file, as the
// README and supernode.conf.example say.
func TestDebugUIOption(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "supernode.conf")
	if err := os.WriteFile(conf, []byte("debug-ui = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want bool
	}{
		{"default", nil, nil, false},
		{"flag", []string{"--debug-ui"}, nil, true},
		{"env", nil, map[string]string{"SUPERNODE_DEBUG_UI": "true"}, true},
		{"config file", nil, map[string]string{"SUPERNODE_CONFIG": conf}, true},
		{"flag over config file", []string{"--debug-ui=false"}, map[string]string{"SUPERNODE_CONFIG": conf}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOptions(tc.args, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if o.api.DebugUI != tc.want {
				t.Errorf("debugUI = %v, want %v", o.api.DebugUI, tc.want)
			}
		})
	}
}

// TestFleetIceServersLocal checks /v1/ice-servers?local=true, which the
// /debug/ice page uses: in a fleet it answers with the asked node's own
// URLs for a user id the fleet would place on another member.
func TestFleetIceServersLocal(t *testing.T) {
	nodes := startFleetNodes(t, 2)
	a, b := nodes[0], nodes[1]
	user := callOwnedBy(t, a, "node-1") // placement keys on the user id when no call is given
	base := "http://" + a.http + "/v1/ice-servers?user=" + user
	for _, tc := range []struct {
		query, want string
	}{
		{"", b.udp},
		{"&local=true", a.udp},
		{"&local=false", b.udp},
	} {
		var r api.IceServersResponse
		if code := getJSON(t, "GET", base+tc.query, "", &r); code != http.StatusOK || len(r.IceServers) != 1 {
			t.Fatalf("%s: %d %+v", tc.query, code, r)
		}
		if urls := strings.Join(r.IceServers[0].URLs, " "); !strings.Contains(urls, "turn:"+tc.want+"?transport=udp") {
			t.Errorf("%q: urls %s, want those of %s", tc.query, urls, tc.want)
		}
		if _, id, ok := strings.Cut(r.IceServers[0].Username, ":"); !ok || id != user {
			t.Errorf("%q: username %q, want <expiry>:%s", tc.query, r.IceServers[0].Username, user)
		}
	}
	for _, tc := range []struct{ query, want string }{
		{"&local=maybe", "local: want true or false"},
		{"&local=1&call=c1", "local: not with call="},
	} {
		var e struct {
			Error string `json:"error"`
		}
		if code := getJSON(t, "GET", base+tc.query, "", &e); code != http.StatusBadRequest || !strings.HasPrefix(e.Error, tc.want) {
			t.Errorf("%q: %d %q, want 400 %q", tc.query, code, e.Error, tc.want)
		}
	}
}

// TestBrowserDebugICEPageReportsFailure runs the page against a node that
// refuses one of the two allocations a call needs (a quota of one per
// user): the page fails both transports and shows the node's 486 as an ICE
// error.
func TestBrowserDebugICEPageReportsFailure(t *testing.T) {
	chromium := findChromium(t)
	tn := startNode(t, "--auth-secret", "somesecret", "--debug-ui", "--user-quota", "1")
	ctx, cancel := openBrowserTab(t, chromium, time.Now().Add(170*time.Second))
	defer cancel()
	v, raw := runDebugICEPage(t, ctx, "http://"+tn.http+"/debug/ice")
	if v.Verdict != "fail" || v.Error == "" {
		t.Fatalf("verdict %s, want fail", raw)
	}
	for _, tr := range []string{"udp", "tcp"} {
		res := v.Transports[tr]
		if res.Verdict != "fail" || len(res.Attempts) == 0 {
			t.Errorf("%s: verdict %q after %d attempts, want fail", tr, res.Verdict, len(res.Attempts))
			continue
		}
		a := res.Attempts[len(res.Attempts)-1]
		var codes []int
		for _, e := range a.IceErrors {
			var ie struct {
				ErrorCode int `json:"errorCode"`
			}
			if json.Unmarshal(e, &ie) == nil {
				codes = append(codes, ie.ErrorCode)
			}
		}
		if !slices.Contains(codes, 486) || len(a.Problems) == 0 {
			t.Errorf("%s: ICE error codes %v, problems %q; want a 486 (Allocation Quota Reached) and a problem", tr, codes, a.Problems)
		}
		t.Logf("%s: problems %q, ICE error codes %v", tr, a.Problems, codes)
	}
	// The page tells the operator which flag is behind the error.
	if text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`)); err != nil || !strings.Contains(text, "--user-quota") {
		t.Errorf("page text does not point at --user-quota (%v):\n%s", err, text)
	}
	looptest.Eventually(t, "allocations_active{udp,tcp} back to 0 after the page's calls", func() bool {
		return tn.counter("allocations_active", "udp") == 0 && tn.counter("allocations_active", "tcp") == 0
	})
}
