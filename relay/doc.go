// Package relay is supernode's data plane in user space: it serves
// STUN/TURN on the listener sockets it is handed (UDP, TCP, TLS, DTLS),
// with pion/turn doing the protocol work and this package adding what a
// production relay needs around it — peer-address policy, quotas, drain,
// per-packet counting, rate limits and hardening against hostile input.
// Channels whose media the kernel can relay are handed to offload; every
// other packet takes the path below, with the same rules and counters.
//
// # The pieces
//
// A [Server] runs one pion/turn server per listener socket, all sharing one
// allocation table, credential store, [Policy] and metrics (server.go,
// config.go). Each socket is wrapped so that this package sees every
// message before pion does and every message pion sends: clientPacketConn
// for a UDP socket (clientconn.go), clientStreamConn for each TCP, TLS or
// DTLS connection (streamconn.go). Pion opens relay sockets through the
// generator (generator.go), which takes ports from a pool of free ones
// (portpool.go), holds the port an EVEN-PORT reserves (reserve.go), and
// wraps each socket in a relayPacketConn (relayconn.go). Each allocation
// has one record (record.go): its permissions and channels as pion's
// events report them, its --max-bps limiter, its traffic counters, its
// part of the kernel path (kernel.go) and what ended it (sessions.go).
//
// # Life of a packet
//
// A ChannelData message from a UDP client to its peer:
//
//  1. If its channel is in the kernel path (offload), the eBPF program
//     relays it at the interface's ingress and nothing below runs.
//  2. clientPacketConn.ReadFrom (clientconn.go) takes it from a batch read
//     with recvmmsg (batchReader.read, batchread_linux.go) and gives it a
//     shared source address (addrCache.get, batchread.go); a datagram
//     over maxMessageSize is dropped as oversized.
//  3. udpGroup.steer (steer.go) hands it to another SO_REUSEPORT socket
//     of the address if its client's allocation lives there (a claimed
//     RESERVATION-TOKEN); the check takes no lock.
//  4. listener.inspect (inspect.go): classify checks its header, and
//     clientSet.has (clients.go) drops ChannelData and indications from a
//     source with no allocation on the socket. A request goes further:
//     scanAttributes, the unauthenticated budget (budget.go), the nonce
//     (nonce.go), then request.authenticate, request.check (for an
//     Allocate: the fleet's redirect, request.checkRedirect, before the
//     drain) and request.handOver (request.go).
//  5. Pion's read loop finds the allocation by its 5-tuple and the channel
//     by its number (handleChannelData in pion's internal/server) and
//     writes the payload with relayPacketConn.WriteTo (relayconn.go).
//  6. relayPacketConn.WriteTo: the record's permission for the peer
//     (record.has), one peer decision (Server.judgePeer, peer.go: the
//     node's own addresses of self.go, the fleet's of fleet.go), the
//     limiter (bucket.allow, record.go), the socket write, and the counts:
//     the listener's counters, the record's (allocCounters, sessions.go)
//     and, to a fleet member, cross-host bytes.
//
// A datagram from the peer back to the client:
//
//  1. The kernel path again, for a channel installed there.
//  2. relayPacketConn.ReadFrom reads it with ReadFromUDPAddrPort, checks
//     the record's permission and the limiter, counts it (the peer
//     decision only when the node is in a fleet), and hands pion the
//     peer's address from a few kept per socket (peerAddrs).
//  3. Pion's relay loop for the allocation (packetConnHandler in pion's
//     internal/allocation) wraps it in ChannelData, or a Data indication
//     when no channel is bound, and writes it to the client.
//  4. clientPacketConn.WriteTo reads the outgoing header once
//     (readOutHeader, respond.go) and hands it to each step that looks at
//     it: listener.finishResponse (error responses only: reason phrase,
//     the node's nonce), listener.observeResponse (responses counted by
//     method and result) and udpGroup.noteReservation (Allocate successes
//     only); then the socket write.
//
// Over TCP, TLS and DTLS, clientStreamConn.Read cuts the stream into
// frames (frameLen, streamconn.go), each inspected like a datagram, and
// clientStreamConn.Write does step 4 above. RFC 6062 peer connections are
// counted by relayConn (relayconn.go).
//
// Requests change the state the packet path reads. A new authenticated
// Allocate is first offered to Config.Redirect (request.checkRedirect,
// request.go): in a fleet that is fleet.Fleet.Redirect, which decides
// whether the call belongs on another member, and the client then gets a
// signed 300 Try Alternate instead of an allocation here. One that stays
// passes pion's auth and quota callbacks (listener.auth, listener.quota,
// server.go) and the generator, which files the allocation's record when it
// opens the relay socket; pion's events (listener.events) then link the
// record to its client (record.go), and keep its permissions and channels
// there and in the kernel (kernelSync, kernel.go).
//
// Per relayed packet (ChannelData, a Send or Data indication, a datagram
// from a peer) nothing in this package allocates: relay/hotpath_test.go
// asserts it with testing.AllocsPerRun for every step above that is this
// package's, in both directions, on real sockets where there is one.
// Pion's steps (5 on the way out, 3 on the way back) do allocate; the
// README has the count.
package relay
