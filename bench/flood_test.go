package main

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/relay"
)

// TestFloodDatagrams checks that every kind is what its name says.
func TestFloodDatagrams(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	decode := func(b []byte) (*stun.Message, error) {
		m := &stun.Message{Raw: append([]byte(nil), b...)}
		return m, m.Decode()
	}
	for _, kind := range floodKinds {
		t.Run(kind, func(t *testing.T) {
			for range 50 {
				b, vary := floodDatagram(kind, rng)
				if len(b) == 0 || len(b) > 1500 {
					t.Fatalf("%d bytes", len(b))
				}
				if vary && len(b) < stunHeaderLen {
					t.Fatalf("a %d-byte datagram with a transaction id to vary", len(b))
				}
				switch kind {
				case "truncated_stun":
					if len(b) >= stunHeaderLen || b[0]>>6 != 0 {
						t.Fatalf("not a truncated STUN header: % x", b)
					}
				case "bad_length":
					if int(binary.BigEndian.Uint16(b[2:4])) == len(b)-stunHeaderLen {
						t.Fatal("the length field is right")
					}
					if _, err := decode(b); err == nil {
						t.Fatal("pion decodes it")
					}
				case "channeldata_unbound":
					ch := binary.BigEndian.Uint16(b[0:2])
					if ch < 0x4000 || ch > 0x7FFF || int(binary.BigEndian.Uint16(b[2:4])) != len(b)-4 {
						t.Fatalf("channel %#x, length %d of %d", ch, binary.BigEndian.Uint16(b[2:4]), len(b))
					}
				case "binding", "binding_unknown_required", "allocate_noauth", "allocate_many_attrs":
					m, err := decode(b)
					if err != nil {
						t.Fatal(err)
					}
					wantType := stun.BindingRequest
					if strings.HasPrefix(kind, "allocate") {
						wantType = stun.NewType(stun.MethodAllocate, stun.ClassRequest)
					}
					if m.Type != wantType || m.Contains(stun.AttrMessageIntegrity) {
						t.Fatalf("type %s, MESSAGE-INTEGRITY %v", m.Type, m.Contains(stun.AttrMessageIntegrity))
					}
					switch kind {
					case "allocate_many_attrs":
						if len(m.Attributes) < 60 {
							t.Fatalf("%d attributes", len(m.Attributes))
						}
					case "binding_unknown_required":
						if !m.Contains(stun.AttrType(0x7F00)) || !stun.AttrType(0x7F00).Required() {
							t.Fatal("no unknown comprehension-required attribute")
						}
					}
				}
			}
		})
	}
}

// TestFloodBounds: a flood refuses to start without its limits or off
// loopback.
func TestFloodBounds(t *testing.T) {
	lo := netip.MustParseAddrPort("127.0.0.1:9")
	src := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	for _, f := range []Flood{
		{Target: lo, Sources: src, Duration: 0, Packets: 10},
		{Target: lo, Sources: src, Duration: 2 * time.Minute, Packets: 10},
		{Target: lo, Sources: src, Duration: time.Second, Packets: 0},
		{Target: lo, Sources: src, Duration: time.Second, Packets: maxFloodPackets + 1},
		{Target: netip.MustParseAddrPort("192.0.2.1:9"), Sources: src, Duration: time.Second, Packets: 10},
		{Target: lo, Sources: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Duration: time.Second, Packets: 10},
	} {
		if _, err := f.Run(context.Background()); err == nil {
			t.Errorf("%+v ran", f)
		}
	}
}

// TestFloodSendsExactly: a flood bounded by count sends exactly that many
// datagrams, spread over the kinds, from every source.
func TestFloodSendsExactly(t *testing.T) {
	// A 16 MiB buffer holds all 1,000 datagrams even when the reader is
	// not scheduled while they arrive (the kernel's default of 208 KiB held
	// fewer than one source's share on a busy machine).
	pcs, err := relay.ListenUDP("127.0.0.1:0", 1, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	sink := pcs[0]
	defer sink.Close()
	seen := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_, from, err := sink.ReadFrom(buf)
			if err != nil {
				return
			}
			seen[from.(*net.UDPAddr).IP.String()] = true
		}
	}()
	f := Flood{
		Target:   sink.LocalAddr().(*net.UDPAddr).AddrPort(),
		Sources:  []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")},
		Duration: 10 * time.Second,
		Packets:  1000,
	}
	res, err := f.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 1000 || res.Errors != 0 {
		t.Errorf("sent %d with %d errors (%s), want 1000 and none", res.Sent, res.Errors, res.FirstError)
	}
	var sum int64
	for _, k := range floodKinds {
		if res.ByKind[k] == 0 {
			t.Errorf("no %s sent", k)
		}
		sum += res.ByKind[k]
	}
	if sum != res.Sent {
		t.Errorf("by kind %d, sent %d", sum, res.Sent)
	}
	time.Sleep(100 * time.Millisecond)
	sink.Close()
	<-done
	if !seen["127.0.0.2"] || !seen["127.0.0.3"] {
		t.Errorf("datagrams came from %v, want both sources", seen)
	}
}
