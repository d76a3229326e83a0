// Package relaytest starts a relay.Server on loopback for tests, in the
// packages built on relay and in relay's own external tests, and holds the
// clients that talk to it: a raw STUN/TURN client that sends exactly the
// bytes a test asks for (RawClient), pion/turn clients over UDP, TCP, TLS
// and DTLS (NewClient, StreamClient), an RFC 6062 TCP allocation and a TCP
// echo peer, and the relay's counters by short name (Counter).
//
// A Node is built from a relay.Config directly, as the daemon builds one
// from its flags, with the daemon's default limits; Options name what a
// test changes. Free ports, UDP echo peers, waiting and log buffers are
// looptest's. Relay's in-package tests cannot import this package (it
// imports relay); ipforms, below it, holds what they share.
package relaytest
