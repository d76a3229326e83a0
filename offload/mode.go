package offload

import (
	"fmt"
	"log/slog"
)

// Mode is how a node uses the kernel path (the daemon's --offload).
type Mode string

const (
	// Auto uses the kernel path when it loads, and relays in user space,
	// saying why, when it does not.
	Auto Mode = "auto"
	// On refuses to run without the kernel path.
	On Mode = "on"
	// Off never loads it.
	Off Mode = "off"
)

// Valid reports whether m is Auto, On or Off.
func (m Mode) Valid() bool { return m == Auto || m == On || m == Off }

// Start starts the kernel path as mode says. It returns nil, and logs why
// on cfg.Logger, when mode is Off or when mode is Auto and New fails: the
// user-space path then relays everything. With On, New's error is
// returned. The caller registers the started path's counters (Register).
func Start(mode Mode, cfg Config) (*Offload, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if mode == Off {
		log.Info("kernel path off (--offload off): ChannelData is relayed in user space")
		return nil, nil
	}
	k, err := New(cfg)
	switch {
	case err == nil:
		log.Info("kernel path on: UDP ChannelData is relayed by the eBPF program", "interfaces", fmt.Sprint(k.Interfaces()))
		return k, nil
	case mode == On:
		return nil, err
	default:
		log.Info("kernel path off: ChannelData is relayed in user space", "reason", err.Error())
		return nil, nil
	}
}
