package relaytest

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// RawClient speaks STUN/TURN by hand over one socket, so tests can send
// exactly the requests a hostile or unusual client would.
type RawClient struct {
	T      testing.TB
	Conn   net.PacketConn
	Server net.Addr
	// Nonce and Realm are the last challenge's, signed with by Do.
	Nonce, Realm string
}

// NewRawClient is a RawClient on a new UDP socket on 127.0.0.1, closed
// when the test ends.
func NewRawClient(t testing.TB, server string) *RawClient {
	t.Helper()
	return &RawClient{T: t, Conn: ListenUDP(t, "udp4", "127.0.0.1:0"), Server: UDPAddr(t, server)}
}

// PeerAddr is an XOR-PEER-ADDRESS attribute.
type PeerAddr struct {
	IP   net.IP
	Port int
}

// AddTo adds the attribute to m.
func (p PeerAddr) AddTo(m *stun.Message) error {
	return (&stun.XORMappedAddress{IP: p.IP, Port: p.Port}).AddToAs(m, stun.AttrXORPeerAddress)
}

// RequestedTransport is REQUESTED-TRANSPORT (17 = UDP, 6 = TCP).
type RequestedTransport byte

// AddTo adds the attribute to m.
func (r RequestedTransport) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{byte(r), 0, 0, 0})
	return nil
}

// ChannelNumber is CHANNEL-NUMBER.
type ChannelNumber uint16

// AddTo adds the attribute to m.
func (c ChannelNumber) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChannelNumber, []byte{byte(c >> 8), byte(c), 0, 0})
	return nil
}

// Lifetime is LIFETIME in seconds.
type Lifetime uint32

// AddTo adds the attribute to m.
func (l Lifetime) AddTo(m *stun.Message) error {
	m.Add(stun.AttrLifetime, []byte{byte(l >> 24), byte(l >> 16), byte(l >> 8), byte(l)})
	return nil
}

// EvenPort is EVEN-PORT with the R bit: reserve the next port too.
type EvenPort struct{}

// AddTo adds the attribute to m.
func (EvenPort) AddTo(m *stun.Message) error {
	m.Add(stun.AttrEvenPort, []byte{0x80})
	return nil
}

// ReservationToken is RESERVATION-TOKEN.
type ReservationToken []byte

// AddTo adds the attribute to m.
func (r ReservationToken) AddTo(m *stun.Message) error {
	m.Add(stun.AttrReservationToken, r)
	return nil
}

// RoundTrip sends one message and waits for the response with its
// transaction id, sending it again after a second without one, three times
// in all; nil when none came.
func (c *RawClient) RoundTrip(setters ...stun.Setter) *stun.Message {
	c.T.Helper()
	m, err := stun.Build(setters...)
	if err != nil {
		c.T.Fatal(err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		if _, err := c.Conn.WriteTo(m.Raw, c.Server); err != nil {
			c.T.Fatal(err)
		}
		buf := make([]byte, 2048)
		deadline := time.Now().Add(time.Second)
		for {
			_ = c.Conn.SetReadDeadline(deadline)
			n, _, err := c.Conn.ReadFrom(buf)
			if err != nil {
				break // retransmit
			}
			resp := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if resp.Decode() == nil && resp.TransactionID == m.TransactionID {
				return resp
			}
		}
	}
	return nil
}

// Do sends an authenticated request, answering one 401/438 challenge, and
// returns the final response (nil if none came).
func (c *RawClient) Do(method stun.Method, user, pass string, attrs ...stun.Setter) *stun.Message {
	c.T.Helper()
	for range 2 {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if c.Nonce != "" {
			setters = append(setters, stun.NewUsername(user), stun.NewRealm(c.Realm), stun.NewNonce(c.Nonce),
				stun.NewLongTermIntegrity(user, c.Realm, pass))
		}
		setters = append(setters, stun.Fingerprint)
		resp := c.RoundTrip(setters...)
		if resp == nil {
			return nil
		}
		code := ErrCode(resp)
		if code != 401 && code != 438 {
			return resp
		}
		var n stun.Nonce
		var r stun.Realm
		if n.GetFrom(resp) != nil || r.GetFrom(resp) != nil {
			return resp // a 401 for bad credentials carries them too; no nonce means final
		}
		if c.Nonce == string(n) && code == 401 {
			return resp // already tried with this nonce: the credentials are wrong
		}
		c.Nonce, c.Realm = string(n), string(r)
	}
	return c.Do(method, user, pass, attrs...)
}

// Allocate performs an Allocate for UDP relaying and fails the test on
// error.
func (c *RawClient) Allocate(user, pass string) *stun.Message {
	c.T.Helper()
	resp := c.Do(stun.MethodAllocate, user, pass, RequestedTransport(17))
	if code := ErrCode(resp); code != 0 {
		c.T.Fatalf("allocate as %s: error code %d", user, code)
	}
	return resp
}

// ErrCode returns the response's error code, 0 for a success, -1 for no
// response and -2 for an error response without ERROR-CODE.
func ErrCode(m *stun.Message) int {
	if m == nil {
		return -1
	}
	if m.Type.Class == stun.ClassSuccessResponse {
		return 0
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(m); err != nil {
		return -2
	}
	return int(ec.Code)
}

// RelayedPort returns the port of XOR-RELAYED-ADDRESS.
func RelayedPort(t testing.TB, m *stun.Message) int {
	t.Helper()
	var a stun.XORMappedAddress
	if err := a.GetFromAs(m, stun.AttrXORRelayedAddress); err != nil {
		t.Fatalf("no XOR-RELAYED-ADDRESS: %v", err)
	}
	return a.Port
}
