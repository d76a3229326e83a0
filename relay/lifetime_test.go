package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// TestLifetimeNoteReplacedByNextAllocate: an Allocate with LIFETIME that
// pion then refuses (quota, no port) leaves a note; the client's next
// Allocate without LIFETIME is granted pion's default, and the admin API
// and the session record must say so, not the refused one's lifetime.
func TestLifetimeNoteReplacedByNextAllocate(t *testing.T) {
	l := newInspectListener(t, false)
	l.srv.cfg.AllocationLifetime = 10 * time.Minute
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	nonce := testNonces.issue(netip.MustParseAddr("127.0.0.1"))
	allocate := func(extra ...stun.Setter) {
		t.Helper()
		if _, pass := l.inspect(authRequest(t, stun.MethodAllocate, nonce, "pw", append([]stun.Setter{requestedUDP{}}, extra...)...), src, &discardReplier{}); !pass {
			t.Fatal("Allocate not passed to pion")
		}
	}
	allocate(lifetimeSetter(time.Minute)) // refused by pion: nothing created
	allocate()
	if got := l.srv.grantedLifetime(l.key(src)); got != 10*time.Minute {
		t.Fatalf("Allocate without LIFETIME after a refused one with 1m: granted %v, want the default 10m", got)
	}
	allocate(lifetimeSetter(2 * time.Minute))
	if got := l.srv.grantedLifetime(l.key(src)); got != 2*time.Minute {
		t.Fatalf("Allocate with LIFETIME 2m: granted %v", got)
	}
}

// lifetimeSetter adds a LIFETIME attribute of d.
type lifetimeSetter time.Duration

func (d lifetimeSetter) AddTo(m *stun.Message) error {
	m.Add(stun.AttrLifetime, binary.BigEndian.AppendUint32(nil, uint32(time.Duration(d)/time.Second)))
	return nil
}
