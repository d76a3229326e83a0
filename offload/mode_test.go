package offload

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/supernode/supernode/looptest"
)

// Start follows the daemon's --offload: off never loads, auto goes on
// without the kernel path when it cannot load (saying why), on fails;
// when the program loads, auto and on both return it.
func TestStartModes(t *testing.T) {
	for _, tc := range []struct {
		mode    Mode
		wantErr bool
		log     string
	}{
		{Off, false, "kernel path off (--offload off)"},
		{Auto, false, "kernel path off: ChannelData is relayed in user space"},
		{On, true, ""},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			var logs looptest.Log
			// No address to attach for: New fails (it is not consulted for off).
			k, err := Start(tc.mode, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if k != nil || (err != nil) != tc.wantErr {
				t.Fatalf("Start(%s): %v, %v", tc.mode, k, err)
			}
			if tc.wantErr && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Start(on): %v, want an ErrUnsupported", err)
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Fatalf("Start(%s) logged %q, want %q", tc.mode, logs.String(), tc.log)
			}
			if tc.mode == Auto && !strings.Contains(logs.String(), "no addresses to attach for") {
				t.Fatalf("Start(auto) did not say why: %q", logs.String())
			}
		})
	}
	for _, mode := range []Mode{Auto, On} {
		t.Run(string(mode)+"-loads", func(t *testing.T) {
			ns := newTestNetns(t)
			var k *Offload
			var err error
			ns.do(t, func() {
				k, err = Start(mode, Config{Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, MaxChannels: 16})
			})
			if err != nil || k == nil {
				unavailable(t, "Start(%s): %v", mode, err)
			}
			k.Close()
		})
	}
	for _, m := range []Mode{"", "yes", "ON"} {
		if m.Valid() {
			t.Errorf("%q is a valid mode", m)
		}
	}
}
