package main

import (
	"net"
	"testing"

	"github.com/pion/stun/v4"

	"github.com/supernode/supernode/relay/relaytest"
)

// rawClient is relaytest.RawClient with the fields this package's tests
// set and read directly.
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

// with runs f on a relaytest.RawClient that shares c's socket and
// challenge, and keeps the challenge f ends with.
func (c *rawClient) with(f func(r *relaytest.RawClient) *stun.Message) *stun.Message {
	r := &relaytest.RawClient{T: c.t, Conn: c.conn, Server: c.server, Nonce: c.nonce, Realm: c.realm}
	defer func() { c.nonce, c.realm = r.Nonce, r.Realm }()
	return f(r)
}

// do is relaytest.RawClient.Do.
func (c *rawClient) do(method stun.Method, user, pass string, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	return c.with(func(r *relaytest.RawClient) *stun.Message { return r.Do(method, user, pass, attrs...) })
}

// allocate is relaytest.RawClient.Allocate.
func (c *rawClient) allocate(user, pass string) *stun.Message {
	c.t.Helper()
	return c.with(func(r *relaytest.RawClient) *stun.Message { return r.Allocate(user, pass) })
}
