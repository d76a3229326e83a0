// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * supernode's kernel data path: a TC (TCX ingress) program that relays TURN
 * ChannelData over UDP without entering user space.
 *
 *  client -> peer: a ChannelData to a listener, on a channel the client's
 *      allocation has bound, with a live permission for the peer: the
 *      4-byte header (and padding) is stripped and the data goes to the
 *      peer from the relayed address.
 *  peer -> client: a datagram to a relayed address from a peer with a bound
 *      channel and a live permission: a ChannelData header (and padding to
 *      4 bytes, as pion writes it) is added and it goes to the client from
 *      the listener address.
 *  one pass: when the peer is another allocation's relayed address on this
 *      node and that allocation has a channel bound toward this one, the
 *      client's ChannelData goes straight to the other client as
 *      ChannelData.
 *
 * Everything else goes on untouched (NEXT: the next TCX program, if another
 * node on this host has one, then the stack) and takes the user-space
 * path. The maps hold only channels whose permission is live: supernode's
 * Go side adds and removes entries from pion's events, so expiry, Refresh(0),
 * the owner check and the peer policy are pion's, not this program's.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "relay.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* The most application data one packet may carry through the kernel path:
 * pion reads peer datagrams into a buffer this size (and cuts longer ones),
 * so longer packets go up to keep exactly its behaviour. A client's
 * datagram goes into a buffer of the same size, and user space
 * (relay/clientconn.go, and pion's read loop) drops one that fills it: a
 * client datagram of MAX_DATA bytes or more, ChannelData header and
 * padding included, goes up to be dropped there. */
#define MAX_DATA 1600
#define CHUNK 256
#define CHUNKS ((MAX_DATA + CHUNK - 1) / CHUNK)
#define LOOPBACK_IFINDEX 1
#define TTL 64
#define NSEC 1000000000ULL
/* TCX_NEXT: not ours, let the next program on the interface (another node
 * on this host) or the stack have it. TC_ACT_OK (TCX_PASS) would end the
 * chain. */
#define NEXT TC_ACT_UNSPEC

/*
 * channels: client ChannelData -> where it goes. Written by the Go side when
 * a channel is bound and its peer's permission is live (both, or neither);
 * read here. Bounded by max_entries (set by the Go side); a full map leaves
 * new channels to user space.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct chan_key);
	__type(value, struct chan_peer);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} channels SEC(".maps");

/* peers: peer datagram -> which client and channel. Same writer, reader
 * and bound as channels; an entry exists exactly when its channels twin
 * does. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct peer_key);
	__type(value, struct chan_client);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} peers SEC(".maps");

/* allocations: per allocation, the --max-bps buckets and the learned listener
 * address. Created by the Go side with the allocation's first channel,
 * deleted with the allocation; written here (buckets, server_ip). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct alloc);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} allocations SEC(".maps");

/* alloc_counters: per allocation and CPU, relayed packets and bytes. Created
 * and deleted by the Go side with allocations; added to here. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u32);
	__type(value, struct alloc_stats);
	__uint(max_entries, 65536);
} alloc_counters SEC(".maps");

/* counters: node-wide, per CPU, indexed by enum counter; read by the Go
 * side's Prometheus collector at scrape time. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, enum counter);
	__type(value, __u64);
	__uint(max_entries, CNT_MAX);
} counters SEC(".maps");

/* scratch: one chunk of packet data being moved (the stack is too small
 * for it). Private to this program, per CPU. */
struct chunk {
	__u8 b[CHUNK];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct chunk);
	__uint(max_entries, 1);
} scratch SEC(".maps");

static __always_inline void count(enum counter idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += n;
}

static __always_inline void count_alloc(__u32 alloc, int dir, __u64 bytes)
{
	struct alloc_stats *s = bpf_map_lookup_elem(&alloc_counters, &alloc);
	if (!s)
		return;
	if (dir == DIR_C2P) {
		s->packets[DIR_C2P]++;
		s->bytes[DIR_C2P] += bytes;
	} else {
		s->packets[DIR_P2C]++;
		s->bytes[DIR_P2C] += bytes;
	}
}

/* take spends bytes from the allocation's bucket for dir, reporting
 * whether they were there: the same bucket as user space's, half a second
 * of --max-bps deep (at least two full-size messages). */
static __always_inline int take(struct alloc *a, int dir, __u64 bytes)
{
	__u64 now, el, t, need;
	int ok;

	if (!a->rate)
		return 1;
	now = bpf_ktime_get_ns();
	need = bytes * NSEC;
	bpf_spin_lock(&a->lock);
	if (dir == DIR_C2P) {
		el = now - a->last_ns[DIR_C2P];
		t = el >= a->fill_ns ? a->burst : a->tokens[DIR_C2P] + el * a->rate;
		if (t > a->burst)
			t = a->burst;
		ok = t >= need;
		a->tokens[DIR_C2P] = ok ? t - need : t;
		a->last_ns[DIR_C2P] = now;
	} else {
		el = now - a->last_ns[DIR_P2C];
		t = el >= a->fill_ns ? a->burst : a->tokens[DIR_P2C] + el * a->rate;
		if (t > a->burst)
			t = a->burst;
		ok = t >= need;
		a->tokens[DIR_P2C] = ok ? t - need : t;
		a->last_ns[DIR_P2C] = now;
	}
	bpf_spin_unlock(&a->lock);
	return ok;
}

/* A parsed UDP datagram. */
struct pkt {
	__u8 saddr[16]; /* first: word-aligned for ip_equal */
	__u8 daddr[16];
	__u32 l4;       /* offset of the UDP header */
	__u32 dlen;     /* UDP payload length */
	__be16 sport, dport;
	__be16 csum;
	__u8 family;
};

/* ip_sum is the folded one's complement sum of a 20-byte IPv4 header:
 * 0xffff when its checksum is right. */
static __always_inline __u32 ip_sum(const __u16 *w)
{
	__u32 s = 0;

	for (int i = 0; i < 10; i++)
		s += w[i];
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

/* parse reports 1 for a plain UDP datagram this program may rewrite, 0 for
 * anything else (counted as CNT_PASS_SHAPE when it is UDP we refuse). */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data, *end;
	struct ethhdr *eth;
	struct udphdr *udp;
	__u32 hdr;

	/* A frame for another host's MAC address (a promiscuous device):
	 * the stack drops it, so it is not ours to relay. */
	if (skb->pkt_type == PACKET_OTHERHOST)
		return 0;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		hdr = sizeof(*eth) + sizeof(struct iphdr) + sizeof(*udp);
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		hdr = sizeof(*eth) + sizeof(struct ipv6hdr) + sizeof(*udp);
	else
		return 0;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (data + hdr > end) {
		if (bpf_skb_pull_data(skb, hdr))
			return 0;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		if (data + hdr > end)
			return 0;
	}
	eth = data;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 tot;

		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end || ip->protocol != IPPROTO_UDP)
			return 0;
		tot = bpf_ntohs(ip->tot_len);
		/* IP options, fragments, GSO and lengths that do not agree go
		 * up; so does what the stack drops (a wrong version or header
		 * checksum), which the rewrite would otherwise mend. */
		if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) || skb->gso_size ||
		    tot != sizeof(*ip) + bpf_ntohs(udp->len) || bpf_ntohs(udp->len) < sizeof(*udp) ||
		    skb->len < sizeof(*eth) + tot || ip_sum((const __u16 *)ip) != 0xffff) {
			count(CNT_PASS_SHAPE, 1);
			return 0;
		}
		p->family = FAMILY_V4;
		__builtin_memset(p->saddr, 0, sizeof(p->saddr));
		__builtin_memset(p->daddr, 0, sizeof(p->daddr));
		__builtin_memcpy(p->saddr, &ip->saddr, 4);
		__builtin_memcpy(p->daddr, &ip->daddr, 4);
		p->l4 = sizeof(*eth) + sizeof(*ip);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > end || ip6->nexthdr != IPPROTO_UDP)
			return 0; /* extension headers included: user space */
		/* a zero UDP checksum is invalid over IPv6: the stack drops it */
		if (ip6->version != 6 || skb->gso_size || bpf_ntohs(ip6->payload_len) != bpf_ntohs(udp->len) ||
		    bpf_ntohs(udp->len) < sizeof(*udp) || udp->check == 0 ||
		    skb->len < sizeof(*eth) + sizeof(*ip6) + bpf_ntohs(udp->len)) {
			count(CNT_PASS_SHAPE, 1);
			return 0;
		}
		p->family = FAMILY_V6;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		p->l4 = sizeof(*eth) + sizeof(*ip6);
	} else {
		return 0;
	}
	p->sport = udp->source;
	p->dport = udp->dest;
	p->csum = udp->check;
	p->dlen = bpf_ntohs(udp->len) - sizeof(*udp);
	return 1;
}

static __always_inline int ip_zero(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	return (w[0] | w[1] | w[2] | w[3]) == 0;
}

static __always_inline int ip_equal(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

/* Where a rewritten packet goes. */
struct out {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport, dport;
	__u32 dlen;    /* new UDP payload length */
	__u32 ifindex; /* redirect target; 0: deliver locally (TC_ACT_OK) */
	__u32 mtu;
};

/* route decides whether a packet of o->dlen bytes of UDP payload can
 * leave as the entry's route says, before anything is changed: 1 when it
 * can, 0 to leave it to user space. */
static __always_inline int route(struct __sk_buff *skb, __u32 family, struct out *o)
{
	__u32 len = o->dlen + sizeof(struct udphdr) +
		    (family == FAMILY_V4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr));

	if (o->ifindex == 0) {
		/* A local destination. Delivered from loopback's ingress it
		 * reaches its socket; arriving anywhere else, a packet from
		 * one of our own addresses would be a martian: user space. */
		if (skb->ingress_ifindex == LOOPBACK_IFINDEX)
			return 1;
		count(CNT_PASS_ROUTE, 1);
		return 0;
	}
	if (len > o->mtu) {
		count(CNT_PASS_MTU, 1);
		return 0;
	}
	return 1;
}

/* pad_sum is the checksum contribution of the n (< 4) bytes at off, the
 * first of which sits at position pos (from an even offset) of the UDP
 * payload. */
static __always_inline __u32 pad_sum(struct __sk_buff *skb, __u32 off, __u32 pos, __u64 n)
{
	__u8 b[3] = {};
	__u32 s = 0;

	n &= 3; /* never more than 3; this tells the verifier so */
	if (n == 0)
		return 0;
	if (bpf_skb_load_bytes(skb, off, b, n))
		return 0;
	for (int i = 0; i < 3; i++) {
		if (i >= n)
			break;
		s += ((pos + i) & 1) ? b[i] : (__u32)b[i] << 8;
	}
	return s;
}

/* move copies n bytes from src to dst inside the packet, front to back
 * when dst < src and back to front otherwise, so overlap is safe. */
static __always_inline int move(struct __sk_buff *skb, __u32 dst, __u32 src, __u64 n)
{
	__u32 zero = 0;
	__u8 *buf = bpf_map_lookup_elem(&scratch, &zero);

	if (!buf || n > MAX_DATA)
		return -1;
	if (dst < src) {
		for (__u64 off = 0; off < MAX_DATA; off += CHUNK) {
			__u64 len;

			if (off >= n)
				break;
			len = n - off;
			if (len > CHUNK)
				len = CHUNK;
			if (len == 0)
				break;
			if (bpf_skb_load_bytes(skb, src + off, buf, len) ||
			    bpf_skb_store_bytes(skb, dst + off, buf, len, 0))
				return -1;
		}
	} else {
		for (__u64 done = 0; done < MAX_DATA; done += CHUNK) {
			__u64 top, start, len;

			if (done >= n)
				break;
			top = n - done;
			start = top > CHUNK ? top - CHUNK : 0;
			len = top - start;
			if (len > CHUNK)
				len = CHUNK;
			if (len == 0)
				break;
			if (bpf_skb_load_bytes(skb, src + start, buf, len) ||
			    bpf_skb_store_bytes(skb, dst + start, buf, len, 0))
				return -1;
		}
	}
	return 0;
}

struct edit {
	__be32 hdr;
	__u32 hlen;
	__u32 from;
	__u32 data_len;
	__be32 old_hdr;
	__u32 old_pad;
};

static __noinline int rewrite(struct __sk_buff *skb, struct pkt *p, struct out *o, struct edit *e)
{
	__be32 hdr = e->hdr;
	__u32 hlen = e->hlen, from = e->from, data_len = e->data_len, old_pad = e->old_pad;
	__be32 old_hdr = e->old_hdr;
	__u32 payload = p->l4 + sizeof(struct udphdr);
	__u32 old_end = payload + p->dlen, new_end = payload + o->dlen;
	__u64 new_pad = (o->dlen - hlen - data_len) & 3;
	__u32 check = p->l4 + offsetof(struct udphdr, check);
	__be32 hfrom[4] = {}, hto[4] = {};
	__u64 flags = BPF_F_MARK_MANGLED_0;
	__s64 diff;

	/* Grow first, so the data has room to move into; shrink after. The
	 * frame may carry bytes after its IP packet (the Ethernet padding of
	 * a short frame): the new frame ends where its IP packet does. */
	if (new_end > old_end && bpf_skb_change_tail(skb, new_end, 0))
		return -1;
	if (from != hlen && move(skb, payload + hlen, payload + from, data_len))
		return -1;
	if (skb->len != new_end && bpf_skb_change_tail(skb, new_end, 0))
		return -1;
	if (hlen && bpf_skb_store_bytes(skb, payload, &hdr, 4, 0))
		return -1;
	if (new_pad) {
		__u8 zero[3] = {};

		if (bpf_skb_store_bytes(skb, payload + hlen + data_len, zero, new_pad, 0))
			return -1;
	}

	if (p->family == FAMILY_V4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ip, sizeof(ip)))
			return -1;
		ip.tot_len = bpf_htons(sizeof(ip) + sizeof(struct udphdr) + o->dlen);
		ip.ttl = TTL;
		__builtin_memcpy(&ip.saddr, o->saddr, 4);
		__builtin_memcpy(&ip.daddr, o->daddr, 4);
		ip.check = 0;
		ip.check = ~ip_sum((const __u16 *)&ip);
		if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &ip, sizeof(ip), 0))
			return -1;
		diff = bpf_csum_diff((__be32 *)p->saddr, 4, (__be32 *)o->saddr, 4, 0);
		if (diff >= 0)
			diff = bpf_csum_diff((__be32 *)p->daddr, 4, (__be32 *)o->daddr, 4, diff);
	} else {
		__be16 plen = bpf_htons(sizeof(struct udphdr) + o->dlen);
		__u8 hop = TTL;
		__u32 l3 = sizeof(struct ethhdr);

		if (bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, payload_len), &plen, 2, 0) ||
		    bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, hop_limit), &hop, 1, 0) ||
		    bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, saddr), o->saddr, 16, 0) ||
		    bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, daddr), o->daddr, 16, 0))
			return -1;
		diff = bpf_csum_diff((__be32 *)p->saddr, 16, (__be32 *)o->saddr, 16, 0);
		if (diff >= 0)
			diff = bpf_csum_diff((__be32 *)p->daddr, 16, (__be32 *)o->daddr, 16, diff);
		flags |= BPF_F_IPV6;
	}
	if (diff >= 0) {
		__be32 lfrom = bpf_htonl(sizeof(struct udphdr) + p->dlen);
		__be32 lto = bpf_htonl(sizeof(struct udphdr) + o->dlen);

		diff = bpf_csum_diff(&lfrom, 4, &lto, 4, diff);
	}
	if (diff < 0)
		return -1;

	/* The UDP header goes in with the old checksum, which two updates
	 * then correct: the pseudo-header part (all that changes while the
	 * checksum is still the device's to finish) and the rest. */
	{
		struct udphdr udp = {
			.source = o->sport,
			.dest = o->dport,
			.len = bpf_htons(sizeof(struct udphdr) + o->dlen),
			.check = p->csum,
		};

		if (bpf_skb_store_bytes(skb, p->l4, &udp, sizeof(udp), 0))
			return -1;
	}
	if (bpf_l4_csum_replace(skb, check, 0, diff, flags | BPF_F_PSEUDO_HDR))
		return -1;
	hfrom[0] = ((__u32)p->dport << 16) | p->sport;
	hfrom[1] = bpf_htonl((sizeof(struct udphdr) + p->dlen) << 16);
	hfrom[2] = old_hdr;
	hfrom[3] = bpf_htonl(old_pad);
	hto[0] = ((__u32)o->dport << 16) | o->sport;
	hto[1] = bpf_htonl((sizeof(struct udphdr) + o->dlen) << 16);
	hto[2] = hlen ? hdr : 0;
	diff = bpf_csum_diff(hfrom, 16, hto, 16, 0);
	if (diff < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, check, 0, diff, flags))
		return -1;
	return 0;
}

/* deliver sends the rewritten packet on: out of o->ifindex with the
 * neighbour resolved by the kernel, or up the local stack. */
static __always_inline int deliver(struct out *o)
{
	if (o->ifindex == 0)
		return TC_ACT_OK;
	return bpf_redirect_neigh(o->ifindex, NULL, 0, 0);
}

/* server_addr fills ip with the listener address a client's packets go
 * to: the entry's own, or the one learned for the allocation. */
static __always_inline int server_addr(const struct chan_client *c, struct alloc *a, __u8 *ip)
{
	if (!ip_zero(c->server_ip)) {
		__builtin_memcpy(ip, c->server_ip, 16);
		return 1;
	}
	if (!a->has_server_ip)
		return 0;
	bpf_spin_lock(&a->lock);
	__builtin_memcpy(ip, a->server_ip, 16);
	bpf_spin_unlock(&a->lock);
	return 1;
}

static __always_inline int round4(__u32 n)
{
	return (n + 3) & ~3U;
}

/* client_to_peer handles a ChannelData from a client whose channel entry
 * is cp. */
static __always_inline int client_to_peer(struct __sk_buff *skb, struct pkt *p, struct chan_peer *cp,
					  int wildcard, __be32 old_hdr, __u32 chlen)
{
	struct alloc *a = bpf_map_lookup_elem(&allocations, &cp->alloc);
	struct alloc *b;
	struct peer_key pk = {};
	struct chan_client *cc;
	struct out o = {};
	__u32 old_pad;

	if (!a)
		return NEXT;
	/* User space drops a client datagram of MAX_DATA bytes or more: so
	 * must this path (see MAX_DATA). */
	if (p->dlen >= MAX_DATA) {
		count(CNT_PASS_SHAPE, 1);
		return NEXT;
	}
	/* Learn the listener address a wildcard listener is reached on. */
	if (wildcard && (!a->has_server_ip || !ip_equal(a->server_ip, p->daddr))) {
		bpf_spin_lock(&a->lock);
		__builtin_memcpy(a->server_ip, p->daddr, 16);
		a->has_server_ip = 1;
		bpf_spin_unlock(&a->lock);
	}
	old_pad = pad_sum(skb, p->l4 + sizeof(struct udphdr) + 4 + chlen, chlen, p->dlen - 4 - chlen);

	/* One pass: the peer is another allocation here with a channel back. */
	pk.family = p->family;
	pk.relay_port = cp->peer_port;
	pk.peer_port = cp->relay_port;
	__builtin_memcpy(pk.relay_ip, cp->peer_ip, 16);
	__builtin_memcpy(pk.peer_ip, cp->relay_ip, 16);
	cc = bpf_map_lookup_elem(&peers, &pk);
	if (cc && (b = bpf_map_lookup_elem(&allocations, &cc->alloc)) && server_addr(cc, b, o.saddr)) {
		__builtin_memcpy(o.daddr, cc->client_ip, 16);
		o.sport = cc->server_port;
		o.dport = cc->client_port;
		o.ifindex = cc->ifindex;
		o.mtu = cc->mtu;
		o.dlen = 4 + round4(chlen);
		if (!route(skb, p->family, &o))
			return NEXT;
		if (!take(a, DIR_C2P, chlen) || !take(b, DIR_P2C, chlen)) {
			count(CNT_DROP_RATE, 1);
			return TC_ACT_SHOT;
		}
		struct edit e = {.hdr = bpf_htonl((__u32)bpf_ntohs(cc->channel) << 16 | chlen),
				 .hlen = 4, .from = 4, .data_len = chlen, .old_hdr = old_hdr, .old_pad = old_pad};

		if (rewrite(skb, p, &o, &e)) {
			count(CNT_ERR_REWRITE, 1);
			return TC_ACT_SHOT;
		}
		count(CNT_C2P_PACKETS, 1);
		count(CNT_C2P_BYTES, chlen);
		count(CNT_P2C_PACKETS, 1);
		count(CNT_P2C_BYTES, chlen);
		count(CNT_ONEPASS_PACKETS, 1);
		count(CNT_ONEPASS_BYTES, chlen);
		count_alloc(cp->alloc, DIR_C2P, chlen);
		count_alloc(cc->alloc, DIR_P2C, chlen);
		return deliver(&o);
	}

	__builtin_memcpy(o.saddr, cp->relay_ip, 16);
	__builtin_memcpy(o.daddr, cp->peer_ip, 16);
	o.sport = cp->relay_port;
	o.dport = cp->peer_port;
	o.ifindex = cp->ifindex;
	o.mtu = cp->mtu;
	o.dlen = chlen;
	if (!route(skb, p->family, &o))
		return NEXT;
	if (!take(a, DIR_C2P, chlen)) {
		count(CNT_DROP_RATE, 1);
		return TC_ACT_SHOT;
	}
	struct edit e = {.from = 4, .data_len = chlen, .old_hdr = old_hdr, .old_pad = old_pad};

	if (rewrite(skb, p, &o, &e)) {
		count(CNT_ERR_REWRITE, 1);
		return TC_ACT_SHOT;
	}
	count(CNT_C2P_PACKETS, 1);
	count(CNT_C2P_BYTES, chlen);
	if (cp->flags & FLAG_FLEET)
		count(CNT_CROSS_OUT_BYTES, chlen);
	count_alloc(cp->alloc, DIR_C2P, chlen);
	return deliver(&o);
}

/* peer_to_client handles a datagram from a peer whose entry is cc. */
static __always_inline int peer_to_client(struct __sk_buff *skb, struct pkt *p, struct chan_client *cc)
{
	struct alloc *a = bpf_map_lookup_elem(&allocations, &cc->alloc);
	struct out o = {};
	__u32 n = p->dlen;

	if (!a)
		return NEXT;
	if (n > MAX_DATA) {
		count(CNT_PASS_SHAPE, 1);
		return NEXT;
	}
	if (!server_addr(cc, a, o.saddr)) {
		count(CNT_PASS_NO_SERVER, 1);
		return NEXT;
	}
	__builtin_memcpy(o.daddr, cc->client_ip, 16);
	o.sport = cc->server_port;
	o.dport = cc->client_port;
	o.ifindex = cc->ifindex;
	o.mtu = cc->mtu;
	o.dlen = 4 + round4(n);
	if (!route(skb, p->family, &o))
		return NEXT;
	if (!take(a, DIR_P2C, n)) {
		count(CNT_DROP_RATE, 1);
		return TC_ACT_SHOT;
	}
	struct edit e = {.hdr = bpf_htonl((__u32)bpf_ntohs(cc->channel) << 16 | n), .hlen = 4, .data_len = n};

	if (rewrite(skb, p, &o, &e)) {
		count(CNT_ERR_REWRITE, 1);
		return TC_ACT_SHOT;
	}
	count(CNT_P2C_PACKETS, 1);
	count(CNT_P2C_BYTES, n);
	if (cc->flags & FLAG_FLEET)
		count(CNT_CROSS_IN_BYTES, n);
	count_alloc(cc->alloc, DIR_P2C, n);
	return deliver(&o);
}

SEC("tc")
int relay(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct peer_key pk = {};
	struct chan_client *cc;
	__be32 hdr;

	if (!parse(skb, &p))
		return NEXT;

	/* A ChannelData message: channel number 0x4000-0x7FFF (RFC 8656
	 * §12), its length within the datagram, at most 3 bytes of padding
	 * after it (anything else goes up, for pion to judge). */
	if (p.dlen >= 4 && bpf_skb_load_bytes(skb, p.l4 + sizeof(struct udphdr), &hdr, 4) == 0) {
		__u32 h = bpf_ntohl(hdr);
		__u32 chlen = h & 0xffff;

		if ((h >> 30) == 1 && chlen + 4 <= p.dlen && p.dlen - 4 - chlen <= 3) {
			struct chan_key k = {};
			struct chan_peer *cp;

			k.family = p.family;
			k.channel = bpf_htons(h >> 16);
			k.client_port = p.sport;
			k.server_port = p.dport;
			__builtin_memcpy(k.client_ip, p.saddr, 16);
			__builtin_memcpy(k.server_ip, p.daddr, 16);
			cp = bpf_map_lookup_elem(&channels, &k);
			if (cp)
				return client_to_peer(skb, &p, cp, 0, hdr, chlen);
			__builtin_memset(k.server_ip, 0, 16);
			cp = bpf_map_lookup_elem(&channels, &k);
			if (cp)
				return client_to_peer(skb, &p, cp, 1, hdr, chlen);
		}
	}

	pk.family = p.family;
	pk.relay_port = p.dport;
	pk.peer_port = p.sport;
	__builtin_memcpy(pk.relay_ip, p.daddr, 16);
	__builtin_memcpy(pk.peer_ip, p.saddr, 16);
	cc = bpf_map_lookup_elem(&peers, &pk);
	if (cc)
		return peer_to_client(skb, &p, cc);
	return NEXT;
}
