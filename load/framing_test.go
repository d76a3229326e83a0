package load

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

func TestSendIndicationDecodesWithPion(t *testing.T) {
	for _, peer := range []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.7:40000"),
		netip.MustParseAddrPort("[::ffff:192.0.2.8]:40001"), // as net.UDPAddr.AddrPort gives IPv4
		netip.MustParseAddrPort("[2001:db8::9]:50001"),
	} {
		for _, size := range []int{32, 33, 172, 1400} {
			payload := bytes.Repeat([]byte{0xab}, size)
			b := make([]byte, sendIndicationLen(size, peer))
			copy(b[payloadOffsetSend(peer):], payload)
			txid := []byte("0123456789ab")
			n := putSendIndication(b, txid, peer, size)
			if n != len(b) || n%4 != 0 {
				t.Fatalf("%v/%d: length %d of %d", peer, size, n, len(b))
			}
			m := &stun.Message{Raw: b}
			if err := m.Decode(); err != nil {
				t.Fatalf("%v/%d: pion cannot decode: %v", peer, size, err)
			}
			if m.Type != stun.NewType(stun.MethodSend, stun.ClassIndication) || string(m.TransactionID[:]) != string(txid) {
				t.Fatalf("%v/%d: type %v txid %x", peer, size, m.Type, m.TransactionID)
			}
			var xa stun.XORMappedAddress // same wire form as XOR-PEER-ADDRESS
			if err := xa.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
				t.Fatal(err)
			}
			if got, _ := netip.AddrFromSlice(xa.IP); got.Unmap() != peer.Addr().Unmap() || xa.Port != int(peer.Port()) {
				t.Errorf("%v/%d: peer decoded as %v:%d", peer, size, xa.IP, xa.Port)
			}
			data, err := m.Get(stun.AttrData)
			if err != nil || !bytes.Equal(data, payload) {
				t.Errorf("%v/%d: DATA %d bytes, err %v", peer, size, len(data), err)
			}
		}
	}
}

func TestInboundData(t *testing.T) {
	payload := []byte("media payload of some length....")
	peer := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9}
	ind, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodData, stun.ClassIndication),
		&stun.XORMappedAddress{IP: peer.IP, Port: peer.Port}, stun.RawAttribute{Type: stun.AttrData, Value: payload}, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	// pion writes XOR-MAPPED-ADDRESS here; rewrite the type to XOR-PEER-ADDRESS
	// is unnecessary: inboundData only looks for DATA.
	resp, _ := stun.Build(stun.TransactionID, stun.BindingSuccess, stun.Fingerprint)
	cd := append([]byte{0x40, 0x01, 0, byte(len(payload))}, payload...)
	cdPadded := append(append([]byte{}, cd...), 0, 0, 0, 0)[:len(cd)+pad4(len(payload))-len(payload)]
	for _, tc := range []struct {
		name string
		in   []byte
		kind frameKind
		want []byte
	}{
		{"data indication", ind.Raw, frameData, payload},
		{"channel data", cd, frameData, payload},
		{"channel data padded", cdPadded, frameData, payload},
		{"binding response", resp.Raw, frameOther, nil},
		{"empty", nil, frameOther, nil},
		{"channel data short", cd[:10], frameBroken, nil},
		{"channel number out of range", append([]byte{0x5f, 0xff, 0, 1}, 1), frameBroken, nil},
		{"data indication truncated", ind.Raw[:30], frameBroken, nil},
	} {
		got, kind := inboundData(tc.in)
		if kind != tc.kind || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: kind %d payload %q, want %d %q", tc.name, kind, got, tc.kind, tc.want)
		}
	}
}

func TestChannelDataFraming(t *testing.T) {
	for _, stream := range []bool{false, true} {
		for _, size := range []int{32, 33, 34, 35, 172} {
			b := make([]byte, channelDataLen(size, stream))
			for i := range b {
				b[i] = 0xee
			}
			putChannelHeader(b, 0x4001, size, stream)
			got, kind := inboundData(b)
			if kind != frameData || len(got) != size {
				t.Errorf("stream=%v size=%d: kind %d len %d", stream, size, kind, len(got))
			}
			if stream && (len(b)%4 != 0 || (len(b) > 4+size && b[len(b)-1] != 0)) {
				t.Errorf("stream=%v size=%d: frame %d bytes, padding not zero", stream, size, len(b))
			}
			// pion's stream framer must take the frame whole.
			if stream {
				c1, c2 := net.Pipe()
				go func() { _, _ = c1.Write(b); _ = c1.Close() }()
				buf := make([]byte, 2048)
				n, _, err := turn.NewSTUNConn(c2).ReadFrom(buf)
				if err != nil || n != len(b) {
					t.Errorf("size %d: STUNConn read %d, %v; want %d", size, n, err, len(b))
				}
				_ = c2.Close()
			}
		}
	}
}

func TestMediaRoundTrip(t *testing.T) {
	b := make([]byte, 172)
	in := media{call: 77, leg: 1, seq: 1 << 40, sent: 123456789}
	putMedia(b, in)
	out, ok := parseMedia(b)
	if !ok || out != in {
		t.Fatalf("got %+v ok=%v, want %+v", out, ok, in)
	}
	if _, ok := parseMedia(b[:31]); ok {
		t.Error("short payload parsed")
	}
	if _, ok := parseMedia(hello); ok {
		t.Error("hello parsed as media")
	}
}

// FuzzInboundData: inboundData reads bytes from the network; it must never
// panic and never return a payload outside its input.
func FuzzInboundData(f *testing.F) {
	seeds, _ := os.ReadDir("testdata/fuzz/FuzzInboundData")
	if len(seeds) == 0 {
		f.Add([]byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4})
		f.Add([]byte{0x00, 0x17, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x13, 0x00, 0x04, 1, 2, 3, 4})
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, kind := inboundData(b)
		if kind != frameData && p != nil {
			t.Fatal("payload without frameData")
		}
		if len(p) > len(b) {
			t.Fatal("payload longer than input")
		}
		if kind == frameData {
			parseMedia(p)
		}
	})
}

func TestTurnURLFor(t *testing.T) {
	for _, tc := range []struct {
		url, transport, want string
	}{
		{"turn:192.0.2.1:3478?transport=udp", "udp", "192.0.2.1:3478"},
		{"turn:192.0.2.1:3478", "udp", "192.0.2.1:3478"},
		{"turn:192.0.2.1:3478?transport=tcp", "tcp", "192.0.2.1:3478"},
		{"turn:192.0.2.1:3478?transport=tcp", "udp", ""},
		{"turns:relay.example:5349?transport=tcp", "tls", "relay.example:5349"},
		{"turns:relay.example:5349", "tls", "relay.example:5349"}, // RFC 7065: turns: is TCP
		{"turns:relay.example", "tls", "relay.example:5349"},
		{"turn:[2001:db8::1]", "udp", "[2001:db8::1]:3478"},
		{"turn:192.0.2.1:3478?foo=bar&transport=tcp", "tcp", "192.0.2.1:3478"},
		{"stun:192.0.2.1:3478", "udp", ""},
		{"turns:relay.example:5349", "udp", ""},
	} {
		got, ok := turnURLFor(tc.url, tc.transport)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("turnURLFor(%q, %s) = %q %v, want %q", tc.url, tc.transport, got, ok, tc.want)
		}
	}
}
