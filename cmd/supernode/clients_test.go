package main

import (
	"testing"

	"github.com/supernode/supernode/relay/relaytest"
)

// The clients, peers and request attributes of the node's tests are
// relaytest's; these names are theirs in this package.
var (
	newClient     = relaytest.NewClient
	streamClient  = relaytest.StreamClient
	exchange      = relaytest.Exchange
	pionLogs      = relaytest.PionLogs
	mustListenUDP = relaytest.ListenUDP
	mustUDPAddr   = relaytest.UDPAddr
	errCode       = relaytest.ErrCode
)

type (
	// tapConn counts what a pion client sends and receives by kind.
	tapConn = relaytest.TapConn
	// The attributes of raw requests.
	requestedTransport = relaytest.RequestedTransport
	lifetime           = relaytest.Lifetime
)

// allocateTCP makes an RFC 6062 TCP allocation on tn as user, over a TCP
// control connection to its listener; both close when the test ends.
func allocateTCP(t *testing.T, tn *testNode, user, pass string) relaytest.TCPAllocation {
	t.Helper()
	return relaytest.AllocateTCP(t, tn.udp, user, pass)
}
