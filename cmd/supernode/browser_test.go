package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/supernode/supernode/looptest"
	"github.com/supernode/supernode/metrics"
)

// Thresholds the page waits for on the receiving leg, so that media is known
// to have crossed the relay, not just to have started.
const (
	browserMinVideoFrames  = 5  // frames decoded from the fake camera
	browserMinAudioPackets = 10 // RTP packets from the fake microphone
)

// browserPage is the app under test. It gets its RTCConfiguration from its
// own backend (same origin: the node's API sends no CORS headers), connects
// two relay-only peer connections in one page, sends fake camera and
// microphone media and a data channel message, and reports what getStats
// says about each side's selected candidate pair. Each wait has its own
// timeout, and any failure resolves with the state of both connections, so
// the Go side sees why rather than only a deadline.
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>supernode browser test</title></head>
<body><script>
const log = (...a) => console.log(a.map(x => typeof x === 'string' ? x : JSON.stringify(x)).join(' '));
const within = (p, ms, what) => Promise.race([p, new Promise((_, rej) =>
  setTimeout(() => rej(new Error('timed out after ' + ms + ' ms: ' + what)), ms))]);
const sleep = ms => new Promise(r => setTimeout(r, ms));

// selectedPair returns pc's selected candidate pair and both its candidates.
async function selectedPair(pc) {
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach(s => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) stats.forEach(s => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
  if (!pair) return null;
  const cand = id => { const c = stats.get(id); return c && {type: c.candidateType, address: c.address,
    port: c.port, protocol: c.protocol, relayProtocol: c.relayProtocol || '', url: c.url || ''}; };
  return {state: pair.state, nominated: !!pair.nominated, bytesSent: pair.bytesSent,
    bytesReceived: pair.bytesReceived, local: cand(pair.localCandidateId), remote: cand(pair.remoteCandidateId)};
}

// settledPair is selectedPair once its state is 'succeeded'. Chrome shows
// a pair as 'in-progress' while one of its periodic connectivity checks
// awaits a response, even when it is the pair carrying the call, so a
// single getStats can catch the selected pair between check and answer.
async function settledPair(pc, ms) {
  const end = performance.now() + ms;
  for (;;) {
    const p = await selectedPair(pc);
    if ((p && p.state === 'succeeded') || performance.now() > end) return p;
    await sleep(20);
  }
}

// allPairs is the diagnostic dump of every candidate pair of pc.
async function allPairs(pc) {
  const out = [];
  (await pc.getStats()).forEach(s => {
    if (s.type === 'candidate-pair') out.push({state: s.state, nominated: s.nominated,
      requestsSent: s.requestsSent, responsesReceived: s.responsesReceived, bytesSent: s.bytesSent});
  });
  return out;
}

window.runCall = async function (minFrames, minAudio) {
  const t0 = performance.now();
  const timings = {};
  const mark = name => { timings[name] = Math.round(performance.now() - t0); };
  let a, b, stream;
  try {
    const cfg = await (await fetch('/ice-servers')).json();
    // max-bundle, as most apps set it: with the default ('balanced') the
    // offerer first gathers for audio, video and data separately and drops
    // two of the three sets when the answer bundles them, so how many
    // allocations the node sees, and how many linger until their lifetime
    // ends, depends on timing.
    const conf = {iceServers: cfg.iceServers, iceTransportPolicy: 'relay', bundlePolicy: 'max-bundle'};
    a = new RTCPeerConnection(conf);
    b = new RTCPeerConnection(conf);
    const gathered = [];
    for (const [name, pc, other] of [['a', a, b], ['b', b, a]]) {
      gathered.push(new Promise(res => pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') res();
      })));
      pc.onicecandidate = e => {
        if (!e.candidate || !e.candidate.candidate) { log(name, 'gathering done'); return; }
        log(name, 'candidate', e.candidate.candidate);
        other.addIceCandidate(e.candidate).catch(err => log(name, '-> addIceCandidate failed', String(err)));
      };
      pc.onicecandidateerror = e => log(name, 'candidate error', e.url, e.errorCode, e.errorText);
      pc.onconnectionstatechange = () => {
        log(name, 'connection', pc.connectionState);
        if (pc.connectionState === 'connected') mark(name + 'Connected');
      };
    }

    stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 320, height: 240}});
    mark('getUserMedia');
    for (const track of stream.getTracks()) a.addTrack(track, stream);
    const dc = a.createDataChannel('chat');
    const opened = new Promise(res => { dc.onopen = res; });
    const message = new Promise(res => {
      b.ondatachannel = e => { e.channel.onmessage = m => res(m.data); };
    });

    await a.setLocalDescription();
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription();
    await a.setRemoteDescription(b.localDescription);
    mark('negotiated');

    await within(opened, 15000, 'data channel open');
    mark('channelOpen');
    const sent = 'hello through supernode ' + crypto.randomUUID();
    dc.send(sent);
    const got = await within(message, 5000, 'data channel message');
    mark('message');

    let video = null, audio = null;
    const mediaDeadline = performance.now() + 8000;
    for (;;) {
      (await b.getStats()).forEach(s => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') video = {packetsReceived: s.packetsReceived, framesDecoded: s.framesDecoded || 0};
        if (s.kind === 'audio') audio = {packetsReceived: s.packetsReceived};
      });
      if (video && video.framesDecoded >= minFrames && audio && audio.packetsReceived >= minAudio) break;
      if (performance.now() > mediaDeadline) break;
      await sleep(100);
    }
    mark('media');
    // Every allocation is ready before hangUp, so closing the connections
    // releases them all (Refresh with lifetime 0, or closing the TCP
    // connection) and the node can be checked for leftovers.
    await within(Promise.all(gathered), 3000, 'gathering complete');
    return JSON.stringify({sent, got, video, audio, timings,
      pairA: await settledPair(a, 2000), pairB: await settledPair(b, 2000)});
  } catch (err) {
    const diag = {error: String(err), timings};
    for (const [name, pc] of [['a', a], ['b', b]]) {
      if (pc) diag[name] = {ice: pc.iceConnectionState, connection: pc.connectionState,
        gathering: pc.iceGatheringState, pairs: await allPairs(pc)};
    }
    return JSON.stringify(diag);
  } finally {
    window.hangUp = () => {
      if (stream) for (const t of stream.getTracks()) t.stop();
      if (a) a.close();
      if (b) b.close();
    };
  }
};
</script></body></html>`

// browserCandidate is one end of a selected pair as the page reports it.
type browserCandidate struct {
	Type          string `json:"type"`
	Address       string `json:"address"`
	Port          int    `json:"port"`
	Protocol      string `json:"protocol"`
	RelayProtocol string `json:"relayProtocol"` // local relay candidates only
	URL           string `json:"url"`           // local candidates only
}

// browserPair is a selected candidate pair from getStats.
type browserPair struct {
	State         string            `json:"state"`
	Nominated     bool              `json:"nominated"`
	BytesSent     int64             `json:"bytesSent"`
	BytesReceived int64             `json:"bytesReceived"`
	Local         *browserCandidate `json:"local"`
	Remote        *browserCandidate `json:"remote"`
}

// browserResult is what window.runCall returns; Error is set (with A and B
// describing both connections) when the call failed.
type browserResult struct {
	Error string          `json:"error"`
	A     json.RawMessage `json:"a"`
	B     json.RawMessage `json:"b"`
	Sent  string          `json:"sent"`
	Got   string          `json:"got"`
	Video *struct {
		PacketsReceived int `json:"packetsReceived"`
		FramesDecoded   int `json:"framesDecoded"`
	} `json:"video"`
	Audio *struct {
		PacketsReceived int `json:"packetsReceived"`
	} `json:"audio"`
	Timings map[string]int `json:"timings"` // milliseconds since runCall started
	PairA   *browserPair   `json:"pairA"`
	PairB   *browserPair   `json:"pairB"`
}

// findChromium returns the browser to drive, or skips (fails, with
// SUPERNODE_REQUIRE_BROWSER set) when there is none.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "chromium"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	const msg = "chromium not found at /usr/bin/chromium or on PATH: apt-get install chromium"
	if os.Getenv("SUPERNODE_REQUIRE_BROWSER") != "" {
		t.Fatal(msg + " (SUPERNODE_REQUIRE_BROWSER is set)")
	}
	t.Skip(msg)
	return ""
}

// fetchICEServersJSON returns the node's /v1/ice-servers body unchanged,
// as an app's backend passes it on to its page.
func fetchICEServersJSON(ctx context.Context, t *testing.T, apiAddr, user string) []byte {
	t.Helper()
	u := "http://" + apiAddr + "/v1/ice-servers?user=" + url.QueryEscape(user) + "&ttl=600"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	// No keep-alive: an idle client connection would outlive the test and
	// trip the node's goroutine leak check.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v\n%s", u, resp.Status, err, body)
	}
	return body
}

// browserFlags are Chromium's command line flags for the test.
func browserFlags(chromium, profile string) []chromedp.ExecAllocatorOption {
	return []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(profile), // fresh profile each run
		// What this machine needs for any headless Chromium: no sandbox (we
		// run as root), no GPU, and none of Chromium's own connections to
		// Google, which the closed network refuses.
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("mute-audio", true),
		// A camera and a microphone without hardware (a test pattern and a
		// beep), and getUserMedia granted without a prompt.
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		// WebRTC ignores the loopback interface when it enumerates networks
		// to gather on. On a host with another interface (eth0 here) Chrome
		// then sends to the TURN server on 127.0.0.1 from a socket bound to
		// that interface's address, and the call works without this flag;
		// on a loopback-only host (a CI sandbox, a fresh network namespace:
		// checked with unshare -n) it has no network at all, gathers
		// nothing, never contacts the node, and the data channel never
		// opens. This flag lets WebRTC gather on loopback too. No other
		// flag, field trial or feature is needed: Chrome accepts a TURN
		// server on 127.0.0.1 and remote relay candidates on 127.0.0.1.
		chromedp.Flag("allow-loopback-in-peer-connection", true),
	}
}

// openBrowserTab starts Chromium (browserFlags, a fresh profile) and opens
// a tab, returning a context for it that ends at deadline. The browser's
// console and uncaught exceptions are logged if the test fails. Call it
// after startNode: its cleanup closes Chromium before the node's goroutine
// leak check runs.
func openBrowserTab(t *testing.T, chromium string, deadline time.Time) (context.Context, context.CancelFunc) {
	t.Helper()
	// The browser's contexts do not derive from the call's deadline, so
	// that the cleanup can still close Chromium gracefully after a timeout.
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), browserFlags(chromium, t.TempDir())...)
	bctx, bcancel := chromedp.NewContext(allocCtx)
	var (
		consoleMu sync.Mutex
		console   []string
	)
	logLine := func(line string) {
		consoleMu.Lock()
		defer consoleMu.Unlock()
		console = append(console, time.Now().Format("15:04:05.000 ")+line)
	}
	// Registered after startNode, so it runs before the node's goroutine
	// leak check: Cancel asks Chromium to close (Browser.close, so it takes
	// its child processes with it), bcancel ends the tab's goroutines, and
	// allocCancel kills the process if it is still there and waits for every
	// goroutine of the allocator (process waiter, pipe readers) to end.
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(bctx, 5*time.Second)
		defer ccancel()
		// Cancel can report the pipe closing under it, when Chromium exits
		// before its answer to Browser.close is read; the process is gone
		// either way, and allocCancel below waits for it.
		_ = chromedp.Cancel(cctx)
		bcancel()
		allocCancel()
		if t.Failed() {
			consoleMu.Lock()
			defer consoleMu.Unlock()
			t.Logf("browser console:\n%s", strings.Join(console, "\n"))
		}
	})

	ctx, cancel := context.WithDeadline(bctx, deadline)
	// Listen starts the browser and opens the tab.
	if err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var parts []string
			for _, a := range ev.Args {
				var s string
				switch {
				case len(a.Value) > 0 && json.Unmarshal(a.Value, &s) == nil:
					parts = append(parts, s)
				case len(a.Value) > 0:
					parts = append(parts, string(a.Value))
				default:
					parts = append(parts, a.Description)
				}
			}
			logLine(fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(parts, " ")))
		case *runtime.EventExceptionThrown:
			logLine(fmt.Sprintf("exception: %s %v", ev.ExceptionDetails.Text, ev.ExceptionDetails.Exception))
		}
	}); err != nil {
		cancel()
		t.Fatalf("start browser: %v", err)
	}
	return ctx, cancel
}

// TestBrowserRelayOnlyCall makes a call in a real Chromium between two
// relay-only RTCPeerConnections of one page, through an in-process node,
// with ICE servers from the node's /v1/ice-servers: a data channel message
// and fake camera and microphone media cross the node, and getStats shows
// relay candidates on both ends of both sides' selected pair.
func TestBrowserRelayOnlyCall(t *testing.T) {
	chromium := findChromium(t)
	tn := startNode(t, "--auth-secret", "somesecret")
	deadline := time.Now().Add(40 * time.Second) // the call (the page's own waits add up to 35s)

	ice := fetchICEServersJSON(context.Background(), t, tn.http, "browser")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, browserPage)
	})
	mux.HandleFunc("GET /ice-servers", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(ice)
	})
	site := httptest.NewServer(mux) // on 127.0.0.1
	t.Cleanup(site.Close)

	start := time.Now()
	ctx, cancel := openBrowserTab(t, chromium, deadline)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(site.URL+"/")); err != nil {
		t.Fatalf("load page: %v", err)
	}
	browserUp := time.Since(start)
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		fmt.Sprintf("window.runCall(%d, %d)", browserMinVideoFrames, browserMinAudioPackets), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("call in browser: %v", err)
	}
	var res browserResult
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		t.Fatalf("decode page result %q: %v", raw, err)
	}
	if res.Error != "" {
		t.Fatalf("call in browser: %s\nofferer: %s\nanswerer: %s", res.Error, res.A, res.B)
	}
	t.Logf("browser start and page load %v; call (ms since runCall): %v", browserUp.Round(time.Millisecond), res.Timings)

	// (a) The data channel message arrived.
	if res.Got != res.Sent {
		t.Errorf("data channel: got %q, want %q", res.Got, res.Sent)
	}
	// (b) Media arrived and was decoded.
	switch {
	case res.Video == nil || res.Video.FramesDecoded < browserMinVideoFrames:
		t.Errorf("video: %+v, want >= %d frames decoded", res.Video, browserMinVideoFrames)
	case res.Audio == nil || res.Audio.PacketsReceived < browserMinAudioPackets:
		t.Errorf("audio: %+v, want >= %d packets", res.Audio, browserMinAudioPackets)
	default:
		t.Logf("video %+v, audio %+v", *res.Video, *res.Audio)
	}
	// (c) Both sides chose a relay-to-relay pair through this node.
	for _, p := range []struct {
		who  string
		pair *browserPair
	}{{"offerer", res.PairA}, {"answerer", res.PairB}} {
		if p.pair == nil || p.pair.Local == nil || p.pair.Remote == nil {
			t.Errorf("%s: no selected candidate pair in getStats: %+v", p.who, p.pair)
			continue
		}
		l, r := *p.pair.Local, *p.pair.Remote
		t.Logf("%s pair: state %s nominated %v, local %+v, remote %+v", p.who, p.pair.State, p.pair.Nominated, l, r)
		if p.pair.State != "succeeded" || !p.pair.Nominated {
			t.Errorf("%s: selected pair state %q nominated %v, want succeeded and nominated", p.who, p.pair.State, p.pair.Nominated)
		}
		if l.Type != "relay" || r.Type != "relay" {
			t.Errorf("%s: selected pair %s -> %s, want relay on both ends", p.who, l.Type, r.Type)
		}
		if l.Address != "127.0.0.1" || r.Address != "127.0.0.1" {
			t.Errorf("%s: selected pair %s -> %s, want the node's relay IP 127.0.0.1", p.who, l.Address, r.Address)
		}
		if !strings.Contains(l.URL, tn.udp) {
			t.Errorf("%s: local candidate from %q, want this node's %s", p.who, l.URL, tn.udp)
		}
	}
	if a, b := res.PairA, res.PairB; a != nil && b != nil && a.Local != nil && a.Remote != nil && b.Local != nil && b.Remote != nil &&
		(a.Local.Port != b.Remote.Port || a.Remote.Port != b.Local.Port) {
		t.Errorf("pairs do not mirror each other: offerer %d -> %d, answerer %d -> %d",
			a.Local.Port, a.Remote.Port, b.Local.Port, b.Remote.Port)
	}

	// (d) The node saw it. Chrome allocates over UDP and, from the
	// ?transport=tcp URL, over TCP too, on each network it gathers on, so
	// both legs' UDP allocations exist whichever pair ICE selects.
	if got := tn.counter("allocations_created", "udp"); got < 2 {
		t.Errorf("allocations_created{udp} = %v, want >= 2", got)
	}
	// Packets are counted under the transport between client and node.
	// That is UDP for a leg whose selected local candidate came from the
	// UDP allocation, as it does in nearly every run. In about one run in
	// 20 to 40 here, Chrome's first Allocate on its shared UDP socket fails
	// in the browser (its log: "Failed to send TURN message, error: 11",
	// EWOULDBLOCK, the socket still opening), the retransmission 250 ms
	// later succeeds on the node, but Chrome has finished gathering by then
	// and drops the candidate ("Discarding candidate because port is
	// already done gathering"); that leg then relays through its TCP
	// allocation. So check the counters of the transport each leg used.
	used := map[string]bool{}
	for _, p := range []*browserPair{res.PairA, res.PairB} {
		if p != nil && p.Local != nil {
			used[p.Local.RelayProtocol] = true
		}
	}
	for tr := range used {
		if tr != "udp" && tr != "tcp" {
			t.Errorf("a selected local candidate was allocated over %q, want udp or tcp (the URLs served)", tr)
			continue
		}
		c2p, p2c := tn.counter("relay_packets", metrics.ClientToPeer, tr), tn.counter("relay_packets", metrics.PeerToClient, tr)
		t.Logf("node: allocations_created{%[1]s}=%[2]v relay_packets{client_to_peer,%[1]s}=%[3]v relay_packets{peer_to_client,%[1]s}=%[4]v",
			tr, tn.counter("allocations_created", tr), c2p, p2c)
		if c2p <= 0 {
			t.Errorf("relay_packets{client_to_peer,%s} = %v, want > 0", tr, c2p)
		}
		if p2c <= 0 {
			t.Errorf("relay_packets{peer_to_client,%s} = %v, want > 0", tr, p2c)
		}
	}
	if got := tn.counter("auth_failures", metrics.AuthBadPassword); got != 0 {
		t.Errorf("auth_failures{bad_password} = %v, want 0", got)
	}
	// At hang-up the leg that closes second can still send (a DTLS
	// close_notify) to the first leg's relay port after the node freed it;
	// that is counted as peer_gone, never as peer_denied (checked again below).
	if got := tn.counter("dropped", metrics.DropPeerDenied); got != 0 {
		t.Errorf("dropped{peer_denied} = %v, want 0", got)
	}

	// (e) Hanging up releases every allocation.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.hangUp()`)); err != nil {
		t.Fatalf("hang up: %v", err)
	}
	looptest.Eventually(t, "allocations_active{udp,tcp} back to 0 after the page closed its connections", func() bool {
		return tn.counter("allocations_active", "udp") == 0 && tn.counter("allocations_active", "tcp") == 0
	})
	if got := tn.counter("dropped", metrics.DropPeerDenied); got != 0 {
		t.Errorf("after hang-up: dropped{peer_denied} = %v, want 0 (late packets are peer_gone)", got)
	}
}
