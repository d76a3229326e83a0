package main

import "github.com/supernode/supernode/relay/relaytest"

// The clients, peers and request attributes of the node's tests are
// relaytest's; these names are theirs in this package.
var (
	newClient     = relaytest.NewClient
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
