package load

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/pion/stun/v4"
)

// ProbeResult is what one probe saw.
type ProbeResult struct {
	Server     string        `json:"server"`
	Relayed    string        `json:"relayed"`
	Peer       string        `json:"peer"`
	Allocate   time.Duration `json:"-"`
	RoundTrip  time.Duration `json:"-"`
	AllocateMS float64       `json:"allocate_ms"`
	RoundMS    float64       `json:"round_trip_ms"`
	// Redirected is set when the first server answered 300 Try Alternate
	// and Server is the alternate.
	Redirected bool `json:"redirected,omitempty"`
}

// ProbeError says which step of a probe failed.
type ProbeError struct {
	Step string // credentials, dial, allocate, peer, permission, relay
	Err  error
}

// Error names the step that failed and why.
func (e *ProbeError) Error() string { return "probe: " + e.Step + ": " + e.Err.Error() }

// Unwrap is the step's own error.
func (e *ProbeError) Unwrap() error { return e.Err }

// Probe makes one allocation and sends one packet through it and back: the
// client sends to a plain UDP socket of its own (the peer) through the
// relay, the peer echoes it to the relayed address, and the client reads it.
// The peer's address as the server sees it is learned with a STUN Binding
// request to the server's UDP port (same host and port), falling back to
// its local address. Only Server, Transport, TLS, the credentials and
// SetupTimeout of cfg are used.
func Probe(ctx context.Context, cfg Config) (*ProbeResult, error) {
	cfg.Calls, cfg.PPS = 1, 0
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.SetupTimeout)
	defer cancel()
	r := &runner{cfg: cfg, errs: map[string]uint64{}, hc: &http.Client{Timeout: cfg.SetupTimeout}, base: time.Now(), runID: "probe"}
	got := make(chan struct{}, 1)
	token := []byte(fmt.Sprintf("turnload probe %d", time.Now().UnixNano()))
	r.probeEcho = func(p []byte) {
		if bytes.Equal(p, token) {
			select {
			case got <- struct{}{}:
			default:
			}
		}
	}
	creds, err := r.credentials(ctx, 0)
	if err != nil {
		return nil, &ProbeError{"credentials", err}
	}
	defer r.hc.CloseIdleConnections()
	l, err := r.openLeg(ctx, creds.server, 0, 0, creds)
	if l != nil {
		defer l.release() // a monitoring probe must not leave allocations behind
	}
	if err != nil {
		step := "allocate"
		if l == nil {
			step = "dial"
		}
		return nil, &ProbeError{step, err}
	}
	res := &ProbeResult{Server: l.server, Allocate: l.allocTime, Redirected: l.redirected}
	res.Relayed = l.relayAP.String()

	network := "udp4"
	if !l.relayAP.Addr().Is4() {
		network = "udp6"
	}
	peer, err := net.ListenUDP(network, nil)
	if err != nil {
		return nil, &ProbeError{"peer", err}
	}
	defer peer.Close()
	peerAddr := reflexive(ctx, peer, creds.server)
	res.Peer = peerAddr.String()

	if err := l.client.CreatePermission(peerAddr); err != nil {
		return nil, &ProbeError{"permission", err}
	}
	// Echo whatever arrives from the relayed address back to it.
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := peer.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if from.Port() == l.relayAP.Port() {
				_, _ = peer.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	peerAP := peerAddr.AddrPort()
	l.peerAP = netip.AddrPortFrom(peerAP.Addr().Unmap(), peerAP.Port())
	l.prepare(len(token))
	t1 := time.Now()
	// Send until the echo comes back: the first packet can race the
	// permission on some servers, and UDP may drop one.
	retry := time.NewTicker(250 * time.Millisecond)
	defer retry.Stop()
	for {
		copy(l.payload, token)
		_ = l.sendRaw()
		select {
		case <-got:
			res.RoundTrip = time.Since(t1)
			res.AllocateMS, res.RoundMS = ms(res.Allocate), ms(res.RoundTrip)
			return res, nil
		case <-retry.C:
		case <-ctx.Done():
			return nil, &ProbeError{"relay", fmt.Errorf("no echo through the relay from peer %s (a server whose policy refuses that address drops the packets without an error): %w", peerAddr, ctx.Err())}
		}
	}
}

// reflexive returns the address the server sees for sock: a STUN Binding
// to server over UDP, else sock's local address.
func reflexive(ctx context.Context, sock *net.UDPConn, server string) *net.UDPAddr {
	local := sock.LocalAddr().(*net.UDPAddr)
	fallback := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: local.Port}
	if local.IP.To4() == nil {
		fallback.IP = net.IPv6loopback
	}
	if !local.IP.IsUnspecified() {
		fallback.IP = local.IP
	}
	ua, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return fallback
	}
	if !ua.IP.IsLoopback() {
		// A non-loopback server sees us from the interface that routes to it.
		if c, err := net.DialUDP("udp", nil, ua); err == nil {
			fallback.IP = c.LocalAddr().(*net.UDPAddr).IP
			_ = c.Close()
		}
	} else {
		fallback.IP = ua.IP
	}
	if ip4 := fallback.IP.To4(); ip4 != nil {
		fallback.IP = ip4
	}
	msg, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return fallback
	}
	defer sock.SetReadDeadline(time.Time{})
	buf := make([]byte, 1500)
	for attempt := range 3 {
		if ctx.Err() != nil {
			return fallback
		}
		if _, err := sock.WriteToUDP(msg.Raw, ua); err != nil {
			return fallback
		}
		_ = sock.SetReadDeadline(time.Now().Add(time.Duration(200*(attempt+1)) * time.Millisecond))
		for {
			n, _, err := sock.ReadFromUDP(buf)
			if err != nil {
				break // timeout: try again
			}
			resp := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if resp.Decode() != nil || resp.TransactionID != msg.TransactionID {
				continue
			}
			var xa stun.XORMappedAddress
			if xa.GetFrom(resp) == nil {
				return &net.UDPAddr{IP: xa.IP, Port: xa.Port}
			}
			return fallback
		}
	}
	return fallback
}
