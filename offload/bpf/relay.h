/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * The structs the kernel program and supernode's Go side share. bpf2go
 * generates a Go type for each (offload/relay_bpfel.go), so every key and
 * value is defined once, here.
 *
 * Byte order: addresses and ports are in network order, as they sit in the
 * packet; the Go side converts. An IPv4 address takes the first four bytes
 * of its 16-byte field, the rest zero.
 */
#ifndef SUPERNODE_RELAY_H
#define SUPERNODE_RELAY_H

#include <linux/types.h>

/* family values */
#define FAMILY_V4 4
#define FAMILY_V6 6

/* flags in chan_client and chan_peer */
#define FLAG_FLEET 1 /* the peer is another fleet member: count cross-host bytes */

/*
 * A ChannelData message from a client: which allocation, which channel.
 * server_ip is the listener's address, or zero when the listener is bound
 * to the wildcard address (the program then looks the packet up a second
 * time with it zeroed).
 */
struct chan_key {
	__u8 family;
	__u8 pad;
	__be16 channel;
	__be16 client_port;
	__be16 server_port;
	__u8 client_ip[16];
	__u8 server_ip[16];
};

/*
 * Where a client's channel goes: the relayed address and the peer, and
 * the route to the peer as the Go side looked it up when it installed the
 * entry: the interface to send on (0: the peer is on this host) and the
 * route's MTU (its mtu metric when it has one, else the interface's).
 * (bpf_fib_lookup refuses to answer on a host with forwarding off, as a
 * relay normally is.)
 */
struct chan_peer {
	__u32 alloc;
	__be16 relay_port;
	__be16 peer_port;
	__u8 relay_ip[16];
	__u8 peer_ip[16];
	__u32 flags;
	__u32 ifindex;
	__u32 mtu;
};

/* A datagram from a peer to a relayed address. */
struct peer_key {
	__u8 family;
	__u8 pad;
	__be16 relay_port;
	__be16 peer_port;
	__u16 pad2;
	__u8 relay_ip[16];
	__u8 peer_ip[16];
};

/*
 * Where a peer's datagram goes: the client, as ChannelData on channel,
 * from the listener address. server_ip zero means the listener is bound to
 * the wildcard: the program uses the address the client last sent
 * ChannelData to (struct alloc.server_ip), and leaves the packet to user
 * space until there is one.
 */
struct chan_client {
	__u32 alloc;
	__be16 channel;
	__be16 client_port;
	__be16 server_port;
	__u16 pad;
	__u8 client_ip[16];
	__u8 server_ip[16];
	__u32 flags;
	__u32 ifindex; /* route to the client, as in chan_peer */
	__u32 mtu;
};

/* direction indexes */
#define DIR_C2P 0 /* client to peer */
#define DIR_P2C 1 /* peer to client */

/*
 * One allocation: its --max-bps token buckets, one per direction, and the
 * listener address its client uses (learned from the client's ChannelData
 * when the listener is bound to the wildcard).
 *
 * Tokens are in byte-nanoseconds (bytes x 10^9), so a refill is
 * elapsed_ns x rate without a division. rate zero is unlimited.
 */
struct alloc {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 rate;    /* bytes per second; 0: unlimited */
	__u64 burst;   /* bucket size in byte-nanoseconds */
	__u64 fill_ns; /* nanoseconds that fill an empty bucket */
	__u64 tokens[2];
	__u64 last_ns[2];
	__u8 server_ip[16];
	__u8 has_server_ip;
	__u8 pad2[7];
};

/* Per-allocation counters (a per-CPU hash, summed by the Go side). */
struct alloc_stats {
	__u64 packets[2];
	__u64 bytes[2];
};

/* Node-wide counters: one __u64 per index of a per-CPU array. */
enum counter {
	CNT_C2P_PACKETS,     /* ChannelData relayed client to peer */
	CNT_C2P_BYTES,       /* their application data bytes */
	CNT_P2C_PACKETS,     /* peer datagrams relayed to a client */
	CNT_P2C_BYTES,
	CNT_ONEPASS_PACKETS, /* client to client across two allocations, one pass */
	CNT_ONEPASS_BYTES,
	CNT_CROSS_OUT_BYTES, /* to another fleet member */
	CNT_CROSS_IN_BYTES,  /* from another fleet member */
	CNT_DROP_RATE,       /* dropped: the allocation's --max-bps bucket was empty */
	CNT_PASS_MTU,        /* left to user space: too big for the route's MTU */
	CNT_PASS_ROUTE,      /* left to user space: the destination is this host (the entry's
	                      * ifindex is 0) and the packet did not arrive on loopback */
	CNT_PASS_NO_SERVER,  /* left to user space: listener address not learned yet */
	CNT_PASS_SHAPE,      /* left to user space: fragment, IP options, GSO, bad length, bad
	                      * IPv4 header checksum or IP version, a client datagram of 1600
	                      * bytes or more, a peer datagram over 1600 */
	CNT_ERR_REWRITE,     /* dropped: a helper failed mid-rewrite */
	CNT_MAX,
};

#endif
