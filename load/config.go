// Package load is turnload's engine: it simulates relayed calls against a
// TURN server (two pion/turn clients per call, each sending media to the
// other's relayed address) and measures what a capacity planner needs:
// setup latency, loss, one-way latency, jitter, rates, and the CPU and
// memory the server and the loader itself spend.
package load

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrConfig is wrapped by every Config validation error.
var ErrConfig = errors.New("load: bad config")

// Config describes one load run. Zero values are documented per field.
type Config struct {
	// Server is the TURN server as host:port. Required unless ICEServers is
	// set; when both are set it overrides the address in the ICE answer.
	Server string
	// Transport to the server: "udp" (zero), "tcp" or "tls".
	Transport string
	// TLS configures the "tls" transport; nil verifies against the system
	// roots with the server's host name.
	TLS *tls.Config

	// Username and Password are long-term credentials shared by every leg.
	Username, Password string
	// Realm is informational: the client takes the realm from the server's
	// 401 challenge, as RFC 8489 requires.
	Realm string
	// Secret makes every call mint its own TURN REST credentials
	// ("<expiry>:turnload-<run>-<call>").
	Secret string
	// ICEServers is a URL answering RTCIceServer JSON (supernode's
	// /v1/ice-servers); it is asked once per call. APIToken is sent as a
	// bearer token when set.
	ICEServers, APIToken string

	// Calls is the number of calls (two allocations each). Zero is 1.
	Calls int
	// Ramp is calls started per second; zero starts them as fast as
	// SetupConcurrency allows.
	Ramp float64
	// PPS is packets per second each leg sends; zero makes idle calls that
	// allocate, create permissions (and channels) and hold them.
	PPS int
	// Size is the payload size in bytes, MinSize..MaxSize. Zero is 172 (an
	// RTP packet of 20 ms of G.711).
	Size int
	// Duration is the steady window: every call sends (or, idle, holds) for
	// Duration after the last call is set up. Zero is 10s.
	Duration time.Duration
	// SendIndications sends media as Send indications instead of binding a
	// channel and sending ChannelData.
	SendIndications bool

	// SetupConcurrency bounds calls being set up at once. Zero is 64.
	SetupConcurrency int
	// SetupTimeout bounds one call's setup (both allocations, permissions
	// and channel bindings). Zero is 10s.
	SetupTimeout time.Duration
	// Drain is how long to wait for packets in flight after sending stops.
	// Zero is 1s; negative does not wait.
	Drain time.Duration

	// ServerPID, when non-zero, is a local server process whose CPU time
	// (over the steady window) and resident memory (before the first call
	// and at the end of the window) are read from /proc.
	ServerPID int

	// Progress, when set, is called about every ProgressInterval (zero is
	// 1s) with a snapshot, from a goroutine of its own.
	Progress         func(Snapshot)
	ProgressInterval time.Duration

	// Logger receives setup errors at debug level; nil discards.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	switch c.Transport {
	case "":
		c.Transport = "udp"
	case "udp", "tcp", "tls":
	default:
		return bad("--transport %q: want udp, tcp or tls", c.Transport)
	}
	if c.Server == "" && c.ICEServers == "" {
		return bad("--server host:port (or --ice-servers URL) is required")
	}
	if c.ICEServers == "" && c.Secret == "" && (c.Username == "" || c.Password == "") {
		return fmt.Errorf("%w: %w", ErrConfig, errNoCredentials)
	}
	if c.Calls == 0 {
		c.Calls = 1
	}
	if c.Calls < 0 {
		return bad("--calls %d: want 1 or more", c.Calls)
	}
	if c.Ramp < 0 {
		return bad("--ramp %g: want calls per second, 0 for as fast as possible", c.Ramp)
	}
	if c.PPS < 0 || c.PPS > 10000 {
		return bad("--pps %d: want 0 (idle calls) to 10000 packets per second per leg", c.PPS)
	}
	if c.Size == 0 {
		c.Size = 172
	}
	if c.Size < MinSize || c.Size > MaxSize {
		return bad("--size %d: want %d..%d bytes (the payload carries a %d-byte header)", c.Size, MinSize, MaxSize, MinSize)
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Duration < 0 {
		return bad("--duration %s: want a positive duration", c.Duration)
	}
	if c.SetupConcurrency == 0 {
		c.SetupConcurrency = 64
	}
	if c.SetupConcurrency < 0 {
		return bad("--setup-concurrency %d: want 1 or more", c.SetupConcurrency)
	}
	if c.SetupTimeout == 0 {
		c.SetupTimeout = 10 * time.Second
	}
	if c.Drain == 0 {
		c.Drain = time.Second
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
