package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/supernode/supernode/metrics"
)

// rtpWant is how many distinct RTP packets the receiving leg must get.
const rtpWant = 40

// fetchICEServers asks the node's API for a call's ICE servers the way a
// browser app's signaling backend would, and decodes the W3C RTCIceServer
// JSON straight into pion's type.
func fetchICEServers(ctx context.Context, t *testing.T, apiAddr, user string) []webrtc.ICEServer {
	t.Helper()
	var body struct {
		IceServers []webrtc.ICEServer `json:"iceServers"`
	}
	if err := json.Unmarshal(fetchICEServersJSON(ctx, t, apiAddr, user), &body); err != nil {
		t.Fatalf("decode ice servers: %v", err)
	}
	if len(body.IceServers) == 0 {
		t.Fatal("no ice servers in response")
	}
	return body.IceServers
}

// relayOnlyAPI builds a pion/webrtc API that can reach a TURN server on
// loopback and never touches any other interface.
func relayOnlyAPI(t *testing.T, networks []webrtc.NetworkType) *webrtc.API {
	t.Helper()
	var se webrtc.SettingEngine
	se.LoggerFactory = pionLogs
	// pion drops loopback interfaces by default; the node and its relay
	// addresses are on 127.0.0.1, so let loopback in ...
	se.SetIncludeLoopbackCandidate(true)
	// ... and only loopback: with an IP filter set, pion binds each TURN
	// client socket to the kept addresses (127.0.0.1:0) instead of 0.0.0.0:0.
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	// IPv4 only (the node listens on 127.0.0.1). pion uses a TURN URL only
	// if its transport is among these types, and publishes relay candidates
	// only if UDP is.
	se.SetNetworkTypes(networks)
	// No mDNS: it would multicast off loopback.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)

	var me webrtc.MediaEngine
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	// No interceptors: the test checks payloads end to end; NACK, reports
	// and TWCC would only add goroutines and traffic.
	return webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(&me))
}

// rtpPayload is the payload of the i-th test packet: its index and a
// pattern derived from it, so the receiver can check every byte.
func rtpPayload(i int) []byte {
	b := []byte(fmt.Sprintf("supernode opus %05d ", i))
	for j := range 100 {
		b = append(b, byte(i*7+j))
	}
	return b
}

// parseRTPPayload returns the index encoded in p if p is exactly
// rtpPayload(index).
func parseRTPPayload(p []byte) (int, bool) {
	var i int
	if _, err := fmt.Sscanf(string(p), "supernode opus %05d ", &i); err != nil {
		return 0, false
	}
	return i, string(p) == string(rtpPayload(i))
}

// waitOrFail waits for ch or fails the test when ctx ends first.
func waitOrFail[T any](ctx context.Context, t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// gatherAndGetSDP waits until pc has gathered every candidate (no trickle)
// and returns its local description, which then carries them all.
func gatherAndGetSDP(ctx context.Context, t *testing.T, pc *webrtc.PeerConnection, sd webrtc.SessionDescription) webrtc.SessionDescription {
	t.Helper()
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(sd); err != nil {
		t.Fatalf("set local %s: %v", sd.Type, err)
	}
	waitOrFail(ctx, t, "ICE gathering ("+sd.Type.String()+")", done)
	local := pc.LocalDescription()
	if !strings.Contains(local.SDP, "typ relay") {
		t.Fatalf("%s has no relay candidate:\n%s", sd.Type, local.SDP)
	}
	for _, typ := range []string{"typ host", "typ srflx", "typ prflx"} {
		if strings.Contains(local.SDP, typ) {
			t.Fatalf("%s has a %q candidate under relay-only policy:\n%s", sd.Type, typ, local.SDP)
		}
	}
	return *local
}

// connectedPromise is closed when pc reaches the connected state.
func connectedPromise(pc *webrtc.PeerConnection) <-chan struct{} {
	ch := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(ch) })
		}
	})
	return ch
}

// selectedPair returns pc's nominated ICE candidate pair.
func selectedPair(t *testing.T, pc *webrtc.PeerConnection) *webrtc.ICECandidatePair {
	t.Helper()
	sctp := pc.SCTP()
	if sctp == nil {
		t.Fatal("no SCTP transport")
	}
	pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		t.Fatalf("no selected candidate pair: %v", err)
	}
	return pair
}

// TestWebRTCRelayOnly connects two relay-only pion/webrtc peers through one
// node, with ICE servers from /v1/ice-servers: both legs allocate on this
// node and reach each other relay port to relay port (the node's own relay
// IP is a peer it allows, on relay ports only). A data channel message
// crosses each way and an Opus track delivers packets with known payloads.
func TestWebRTCRelayOnly(t *testing.T) {
	for _, tc := range []struct {
		transport string // how the clients reach the node; the relay side is UDP either way
		networks  []webrtc.NetworkType
	}{
		// UDP4 alone also skips the ?transport=tcp URL: one UDP allocation a leg.
		{"udp", []webrtc.NetworkType{webrtc.NetworkTypeUDP4}},
		// A client whose UDP is blocked: TURN over TCP. UDP4 stays in the
		// list because pion publishes relay candidates only for UDP types.
		{"tcp", []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4}},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			tn := startNode(t, "--auth-secret", "somesecret")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			servers := fetchICEServers(ctx, t, tn.http, "call-"+tc.transport)
			if tc.transport == "tcp" {
				servers = onlyTURNOver(t, servers, "tcp")
			}
			testWebRTCRelayOnly(ctx, t, tn, tc.transport, servers, relayOnlyAPI(t, tc.networks))
		})
	}
}

// onlyTURNOver keeps only the turn: URLs whose transport is transport, as
// an app does when it knows UDP is blocked.
func onlyTURNOver(t *testing.T, servers []webrtc.ICEServer, transport string) []webrtc.ICEServer {
	t.Helper()
	var out []webrtc.ICEServer
	for _, s := range servers {
		var urls []string
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turn:") && strings.HasSuffix(u, "?transport="+transport) {
				urls = append(urls, u)
			}
		}
		if len(urls) > 0 {
			s.URLs = urls
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no turn: URL with transport=%s in %+v", transport, servers)
	}
	return out
}

// testWebRTCRelayOnly runs one call between two relay-only peers configured
// with servers, whose TURN client traffic reaches tn over transport.
func testWebRTCRelayOnly(ctx context.Context, t *testing.T, tn *testNode, transport string, servers []webrtc.ICEServer, api *webrtc.API) {
	cfg := webrtc.Configuration{ICEServers: servers, ICETransportPolicy: webrtc.ICETransportPolicyRelay}
	offerer, err := api.NewPeerConnection(cfg)
	if err != nil {
		t.Fatal(err)
	}
	answerer, err := api.NewPeerConnection(cfg)
	if err != nil {
		_ = offerer.GracefulClose()
		t.Fatal(err)
	}
	// Registered after startNode, so it runs before the node stops and its
	// leak check: GracefulClose waits for pion's goroutines, and readers
	// waits for the track reader, which ends when the connection closes.
	var readers sync.WaitGroup
	t.Cleanup(func() {
		for _, pc := range []*webrtc.PeerConnection{offerer, answerer} {
			if err := pc.GracefulClose(); err != nil {
				t.Errorf("close peer connection: %v", err)
			}
		}
		readers.Wait()
	})
	offererUp, answererUp := connectedPromise(offerer), connectedPromise(answerer)

	// Data channel: the offerer says ping on open, the answerer replies.
	fromOfferer := make(chan string, 1)
	fromAnswerer := make(chan string, 1)
	dc, err := offerer.CreateDataChannel("chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	dc.OnOpen(func() {
		if err := dc.SendText("ping from offerer"); err != nil {
			t.Errorf("offerer send: %v", err)
		}
	})
	dc.OnMessage(func(m webrtc.DataChannelMessage) {
		select {
		case fromAnswerer <- string(m.Data):
		default:
		}
	})
	answerer.OnDataChannel(func(d *webrtc.DataChannel) {
		d.OnMessage(func(m webrtc.DataChannelMessage) {
			select {
			case fromOfferer <- string(m.Data):
			default:
			}
			if err := d.SendText("pong from answerer"); err != nil {
				t.Errorf("answerer send: %v", err)
			}
		})
	})

	// Media: an Opus track from offerer to answerer.
	track, err := webrtc.NewTrackLocalStaticRTP(
		webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "supernode")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := offerer.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	type rtpResult struct {
		distinct int
		err      error
	}
	rtpDone := make(chan rtpResult, 1)
	answerer.OnTrack(func(remote *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		readers.Add(1)
		defer readers.Done()
		finish := func(r rtpResult) {
			select {
			case rtpDone <- r:
			default:
			}
		}
		if !strings.EqualFold(remote.Codec().MimeType, webrtc.MimeTypeOpus) {
			finish(rtpResult{err: fmt.Errorf("remote track codec %q, want opus", remote.Codec().MimeType)})
			return
		}
		seen := map[int]bool{}
		for {
			pkt, _, err := remote.ReadRTP()
			if err != nil {
				finish(rtpResult{distinct: len(seen), err: fmt.Errorf("read rtp: %w", err)})
				return // the connection closed
			}
			i, ok := parseRTPPayload(pkt.Payload)
			if !ok {
				finish(rtpResult{distinct: len(seen), err: fmt.Errorf("unexpected RTP payload %q", pkt.Payload)})
				return
			}
			if pkt.PayloadType != uint8(remote.Codec().PayloadType) {
				finish(rtpResult{err: fmt.Errorf("payload type %d, want %d", pkt.PayloadType, remote.Codec().PayloadType)})
				return
			}
			seen[i] = true
			if len(seen) == rtpWant {
				finish(rtpResult{distinct: len(seen)})
			}
		}
	})

	// Signaling, without trickle: each side gathers all its candidates.
	offer, err := offerer.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	offer = gatherAndGetSDP(ctx, t, offerer, offer)
	if err := answerer.SetRemoteDescription(offer); err != nil {
		t.Fatalf("answerer set remote: %v", err)
	}
	answer, err := answerer.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	answer = gatherAndGetSDP(ctx, t, answerer, answer)
	if err := offerer.SetRemoteDescription(answer); err != nil {
		t.Fatalf("offerer set remote: %v", err)
	}
	waitOrFail(ctx, t, "offerer connected", offererUp)
	waitOrFail(ctx, t, "answerer connected", answererUp)

	// (a) A data channel message each way.
	if got := waitOrFail(ctx, t, "message from offerer", fromOfferer); got != "ping from offerer" {
		t.Errorf("answerer got %q", got)
	}
	if got := waitOrFail(ctx, t, "message from answerer", fromAnswerer); got != "pong from answerer" {
		t.Errorf("offerer got %q", got)
	}

	// (b) RTP. Packets written before the sender is bound (just after
	// DTLS) are dropped by pion, so keep sending, paced like 20 ms audio,
	// until the receiver has rtpWant distinct packets.
	var res rtpResult
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i, got := 0, false; !got; i++ {
		select {
		case res = <-rtpDone:
			got = true
			continue
		case <-ctx.Done():
			t.Fatalf("timed out: %d RTP packets sent, receiver has not reported", i)
		case <-tick.C:
		}
		err := track.WriteRTP(&rtp.Packet{
			Header:  rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(i) * 960}, //nolint:gosec // test counter
			Payload: rtpPayload(i),
		})
		if err != nil {
			t.Fatalf("write rtp %d: %v", i, err)
		}
	}
	if res.err != nil || res.distinct < rtpWant {
		t.Fatalf("RTP: %d distinct packets, err %v", res.distinct, res.err)
	}

	// Both legs must be relayed, and relayed by this node: each side's
	// remote candidate is the other side's relay address.
	op, ap := selectedPair(t, offerer), selectedPair(t, answerer)
	for _, p := range []struct {
		who  string
		pair *webrtc.ICECandidatePair
	}{{"offerer", op}, {"answerer", ap}} {
		if p.pair.Local.Typ != webrtc.ICECandidateTypeRelay || p.pair.Remote.Typ != webrtc.ICECandidateTypeRelay {
			t.Errorf("%s selected pair %s, want relay on both ends", p.who, p.pair)
		}
		if p.pair.Local.Address != "127.0.0.1" || p.pair.Remote.Address != "127.0.0.1" {
			t.Errorf("%s selected pair %s, want the node's relay IP 127.0.0.1", p.who, p.pair)
		}
	}
	t.Logf("offerer pair %s; answerer pair %s", op, ap)
	if op.Local.Port != ap.Remote.Port || op.Remote.Port != ap.Local.Port {
		t.Errorf("pairs do not mirror each other: offerer %s, answerer %s", op, ap)
	}

	t.Logf("allocations_created{%[1]s}=%[2]v relay_packets{client_to_peer,%[1]s}=%[3]v relay_packets{peer_to_client,%[1]s}=%[4]v",
		transport, tn.counter("allocations_created", transport), tn.counter("relay_packets", metrics.ClientToPeer, transport),
		tn.counter("relay_packets", metrics.PeerToClient, transport))
	if got := tn.counter("allocations_created", transport); got < 2 {
		t.Errorf("allocations_created{%s} = %v, want >= 2", transport, got)
	}
	if got := tn.counter("allocations_active", transport); got < 2 {
		t.Errorf("allocations_active{%s} = %v, want >= 2", transport, got)
	}
	if got := tn.counter("relay_packets", metrics.ClientToPeer, transport); got < rtpWant {
		t.Errorf("relay_packets{client_to_peer,%s} = %v, want >= %d", transport, got, rtpWant)
	}
	if got := tn.counter("relay_packets", metrics.PeerToClient, transport); got < rtpWant {
		t.Errorf("relay_packets{peer_to_client,%s} = %v, want >= %d", transport, got, rtpWant)
	}
	if got := tn.counter("dropped", metrics.DropPeerDenied); got != 0 {
		t.Errorf("dropped{peer_denied} = %v, want 0", got)
	}
	if got := tn.counter("auth_failures", metrics.AuthBadPassword); got != 0 {
		t.Errorf("auth_failures{bad_password} = %v, want 0", got)
	}
}
