package main

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// rawClient speaks STUN/TURN by hand over one UDP socket, so tests can send
// exactly the requests a hostile or unusual client would.
type rawClient struct {
	t      *testing.T
	conn   net.PacketConn
	server net.Addr
	nonce  string
	realm  string
}

func newRawClient(t *testing.T, server string) *rawClient {
	t.Helper()
	return &rawClient{t: t, conn: mustListenUDP(t, "udp4", "127.0.0.1:0"), server: mustUDPAddr(t, server)}
}

// peerAddr is an XOR-PEER-ADDRESS attribute.
type peerAddr struct {
	ip   net.IP
	port int
}

func (p peerAddr) AddTo(m *stun.Message) error {
	return (&stun.XORMappedAddress{IP: p.ip, Port: p.port}).AddToAs(m, stun.AttrXORPeerAddress)
}

// requestedTransport is REQUESTED-TRANSPORT (17 = UDP, 6 = TCP).
type requestedTransport byte

func (r requestedTransport) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{byte(r), 0, 0, 0})
	return nil
}

// channelNumber is CHANNEL-NUMBER.
type channelNumber uint16

func (c channelNumber) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChannelNumber, []byte{byte(c >> 8), byte(c), 0, 0})
	return nil
}

// lifetime is LIFETIME in seconds.
type lifetime uint32

func (l lifetime) AddTo(m *stun.Message) error {
	m.Add(stun.AttrLifetime, []byte{byte(l >> 24), byte(l >> 16), byte(l >> 8), byte(l)})
	return nil
}

// roundTrip sends one message and waits for the response with its
// transaction id; nil on timeout.
func (c *rawClient) roundTrip(setters ...stun.Setter) *stun.Message {
	c.t.Helper()
	m, err := stun.Build(setters...)
	if err != nil {
		c.t.Fatal(err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		if _, err := c.conn.WriteTo(m.Raw, c.server); err != nil {
			c.t.Fatal(err)
		}
		buf := make([]byte, 2048)
		deadline := time.Now().Add(time.Second)
		for {
			_ = c.conn.SetReadDeadline(deadline)
			n, _, err := c.conn.ReadFrom(buf)
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

// do sends an authenticated request, answering one 401/438 challenge, and
// returns the final response (nil if none came).
func (c *rawClient) do(method stun.Method, user, pass string, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	for range 2 {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if c.nonce != "" {
			setters = append(setters, stun.NewUsername(user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
				stun.NewLongTermIntegrity(user, c.realm, pass))
		}
		setters = append(setters, stun.Fingerprint)
		resp := c.roundTrip(setters...)
		if resp == nil {
			return nil
		}
		code := errCode(resp)
		if code != 401 && code != 438 {
			return resp
		}
		var n stun.Nonce
		var r stun.Realm
		if n.GetFrom(resp) != nil || r.GetFrom(resp) != nil {
			return resp // a 401 for bad credentials carries them too; no nonce means final
		}
		if c.nonce == string(n) && code == 401 {
			return resp // already tried with this nonce: the credentials are wrong
		}
		c.nonce, c.realm = string(n), string(r)
	}
	return c.do(method, user, pass, attrs...)
}

// errCode returns the response's error code, or 0 for a success.
func errCode(m *stun.Message) int {
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

// allocate performs an Allocate for UDP relaying and fails the test on error.
func (c *rawClient) allocate(user, pass string) *stun.Message {
	c.t.Helper()
	resp := c.do(stun.MethodAllocate, user, pass, requestedTransport(17))
	if code := errCode(resp); code != 0 {
		c.t.Fatalf("allocate as %s: error code %d", user, code)
	}
	return resp
}

// evenPort is EVEN-PORT with the R bit: reserve the next port too.
type evenPort struct{}

func (evenPort) AddTo(m *stun.Message) error {
	m.Add(stun.AttrEvenPort, []byte{0x80})
	return nil
}

// reservationToken is RESERVATION-TOKEN.
type reservationToken []byte

func (r reservationToken) AddTo(m *stun.Message) error {
	m.Add(stun.AttrReservationToken, r)
	return nil
}

// relayedPort returns the port of XOR-RELAYED-ADDRESS.
func relayedPort(t *testing.T, m *stun.Message) int {
	t.Helper()
	var a stun.XORMappedAddress
	if err := a.GetFromAs(m, stun.AttrXORRelayedAddress); err != nil {
		t.Fatalf("no XOR-RELAYED-ADDRESS: %v", err)
	}
	return a.Port
}
