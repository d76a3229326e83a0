package relay

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/pion/turn/v5"

	"github.com/supernode/supernode/looptest"
)

// TestAllocFailedLogged: a relay socket that cannot be bound (a relay IP not
// on this host) is logged at warn, rate-limited; a family without a relay
// IP, which is the client's choice, is not.
func TestAllocFailedLogged(t *testing.T) {
	l := newInspectListener(t, false)
	var buf looptest.Log
	l.srv.log = slog.New(slog.NewTextHandler(&buf, nil))
	l.srv.addrs.relay4 = netip.MustParseAddr("192.0.2.1") // TEST-NET-1: on no host
	g := &generator{l: l}
	for range 3 * logBurst {
		if _, _, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4"}); err == nil {
			t.Fatal("bound a relay socket on 192.0.2.1 (net.ipv4.ip_nonlocal_bind set?)")
		}
	}
	if _, _, err := g.AllocateListener(turn.AllocateListenerConfig{Network: "tcp6"}); err == nil {
		t.Fatal("a tcp6 relay without an IPv6 relay IP")
	}
	l.srv.logs.flush()
	got := buf.Lines("cannot open a relay socket")
	if len(got) != logBurst+1 || !strings.Contains(got[0], "level=WARN") || !strings.Contains(got[0], "relay_ip=192.0.2.1") ||
		!strings.Contains(got[logBurst], "suppressed=") {
		t.Errorf("want %d warn lines and a summary, got:\n%s", logBurst, strings.Join(got, "\n"))
	}
	if n := len(buf.Lines("level=")); n != len(got) {
		t.Errorf("%d lines logged, want only the relay socket's %d", n, len(got))
	}
}
