// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The gateway's XDP program (Go: dataplane/xsk). IPv4 and IPv6 frames
 * addressed to the interface's cluster MAC, untagged or behind one or two
 * VLAN tags, go to the AF_XDP socket of the queue they arrived on (the
 * slow path); a queue without a socket, and every other frame, go to the
 * kernel. Per-CPU counters record each verdict.
 *
 * The fast path, when the flow cache is enabled: an untagged IPv4 or IPv6
 * frame (no fragment, no IPv6 extension header) of a TCP, UDP, UDP-Lite,
 * SCTP or DCCP connection the slow path installed in xc_flows, whose
 * headers packet.Decode would accept, is decided here. A connection whose
 * bucket this node does not own is dropped; an owned one is forwarded
 * along the kernel's route and neighbour (bpf_fib_lookup) through the
 * egress devmap, with both MACs rewritten and the TTL or hop limit
 * decremented. TCP segments with SYN, FIN or RST (or flags the tracker
 * would refuse), misses and every frame the fast path cannot forward (no
 * neighbour, TTL would expire, MTU exceeded, local, blackhole,
 * unreachable, egress not a data interface) take the slow path, counted
 * by reason.
 */
#include "bpf.h"
#include "parse.h"
#include "flow.h"

/* Counter indexes: keep in sync with dataplane/xsk's Stat constants. */
enum {
	STAT_TO_XSK,	/* cluster-MAC IP frames sent to the AF_XDP socket */
	STAT_NO_SOCKET, /* ... whose queue had no socket: passed to the kernel */
	STAT_PASSED,	/* everything else, passed to the kernel */
	NUM_STATS,
};

/* Why a cluster-MAC IP frame took the slow path: keep in sync with
 * dataplane/xsk's Slow constants and SlowReasonNames. */
enum {
	SLOW_MISS,	  /* not in the flow cache */
	SLOW_TCP_CONTROL, /* TCP with SYN, FIN or RST, or without ACK */
	SLOW_FRAGMENT,	  /* an IPv4 fragment */
	SLOW_NOT_FAST,	  /* tagged, malformed, IPv6 extension header, ICMP, other protocol */
	SLOW_TTL,	  /* TTL or hop limit would expire */
	SLOW_NO_EGRESS,	  /* the route's interface is not a data interface */
	SLOW_FIB_BLACKHOLE,
	SLOW_FIB_UNREACHABLE,
	SLOW_FIB_PROHIBIT,
	SLOW_FIB_NOT_FWDED, /* local, broadcast, multicast: not forwarded */
	SLOW_FIB_FWD_DISABLED,
	SLOW_FIB_UNSUPP_LWT,
	SLOW_FIB_NO_NEIGH, /* no valid neighbour entry yet */
	SLOW_FIB_FRAG_NEEDED,
	SLOW_FIB_NO_SRC_ADDR,
	SLOW_FIB_OTHER, /* any other result (an error) */
	NUM_SLOW,
};

#define MAX_BUCKETS 32

/* Fast-path counter indexes: keep in sync with dataplane/xsk's fast* constants. */
enum {
	FAST_FORWARDED,
	FAST_FOREIGN,
	FAST_FORWARDED_BYTES,
	FAST_FOREIGN_BYTES,
	FAST_OWNER,			     /* + bucket: packets decided here (forwarded or foreign) per bucket */
	FAST_SLOW = FAST_OWNER + MAX_BUCKETS, /* + SLOW_ reason */
	NUM_FAST = FAST_SLOW + NUM_SLOW,
};

#define MAX_QUEUES 256

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xc_xsks SEC(".maps");

XC_STATS_MAP(xc_stats, NUM_STATS);
XC_STATS_MAP(xc_fast, NUM_FAST);

/* The flow cache: both directions of each installed connection. The
 * loader sizes it (and shares it between the interfaces' programs). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 2);
	__type(key, struct xc_flow_key);
	__type(value, struct xc_flow);
} xc_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct xc_params);
} xc_params SEC(".maps");

/* The data interfaces the fast path may forward to: ifindex -> ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xc_egress SEC(".maps");

/* The cluster MAC, set by the loader. */
volatile const struct xc_mac cluster_mac;

#define FAST_SLOW_PATH -1

/* slow counts a reason and hands the frame to the slow path. */
static __always_inline int slow(__u32 reason)
{
	xc_count(&xc_fast, FAST_SLOW + reason);
	return FAST_SLOW_PATH;
}

/*
 * ipv4_csum_ok reports whether the IPv4 header of hl bytes (20 to 60, a
 * multiple of 4) at ip sums to 0xffff, as packet.Decode requires.
 */
static __always_inline int ipv4_csum_ok(void *ip, __u32 hl, void *data_end)
{
	__u64 sum = 0;

#pragma unroll
	for (int i = 0; i < 15; i++) {
		if (i * 4 >= hl)
			break;
		if (ip + (i + 1) * 4 > data_end)
			return 0;
		sum += *(__u32 *)(ip + i * 4);
	}
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

/*
 * fast_path decides a cluster-MAC frame from the flow cache: XDP_DROP
 * (foreign), XDP_REDIRECT (forwarded, rewritten), or FAST_SLOW_PATH.
 */
static __always_inline int fast_path(struct xdp_md *ctx, __u64 params)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct xc_flow_key key = {};
	struct bpf_fib_lookup fib = {};
	struct xc_flow *f;
	__u32 l4len, iplen, frame_l3, need;
	__u8 *l4, proto, ttl;
	__be16 et;
	long rc;

	if (data + ETH_HLEN > data_end)
		return slow(SLOW_NOT_FAST);
	frame_l3 = data_end - data - ETH_HLEN;
	et = *(__be16 *)(data + 12);
	if (et == bpf_htons(ETH_P_IP)) {
		struct xc_iphdr *ip = data + ETH_HLEN;
		__u32 hl;

		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return slow(SLOW_NOT_FAST);
		hl = ip->ihl * 4;
		iplen = bpf_ntohs(ip->tot_len);
		if (iplen < hl || iplen > frame_l3)
			return slow(SLOW_NOT_FAST);
		if (!ipv4_csum_ok(ip, hl, data_end))
			return slow(SLOW_NOT_FAST);
		if (ip->frag_off & bpf_htons(0x3fff)) /* MF or an offset */
			return slow(SLOW_FRAGMENT);
		proto = ip->protocol;
		ttl = ip->ttl;
		l4 = (void *)ip + hl;
		l4len = iplen - hl;
		key.family = 4;
		key.saddr[0] = ip->saddr;
		key.daddr[0] = ip->daddr;
		fib.family = AF_INET;
		fib.tos = ip->tos;
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = ip->daddr;
	} else if (et == bpf_htons(ETH_P_IPV6)) {
		struct xc_ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return slow(SLOW_NOT_FAST);
		l4len = bpf_ntohs(ip6->payload_len);
		iplen = l4len + 40;
		if (iplen > frame_l3)
			return slow(SLOW_NOT_FAST);
		proto = ip6->nexthdr;
		ttl = ip6->hop_limit;
		l4 = (void *)(ip6 + 1);
		key.family = 6;
		fib.family = AF_INET6;
		fib.flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0fffffff);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			key.saddr[i] = ip6->saddr[i];
			key.daddr[i] = ip6->daddr[i];
			fib.ipv6_src[i] = ip6->saddr[i];
			fib.ipv6_dst[i] = ip6->daddr[i];
		}
	} else {
		return slow(SLOW_NOT_FAST); /* tagged */
	}

	/* The transport header, validated as packet.Decode does. */
	switch (proto) {
	case IPPROTO_TCP:
		need = 20;
		break;
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
		need = 8;
		break;
	case IPPROTO_SCTP:
	case IPPROTO_DCCP:
		need = 4;
		break;
	default:
		return slow(SLOW_NOT_FAST);
	}
	if (l4len < need || (void *)(l4 + 4) > data_end)
		return slow(SLOW_NOT_FAST);
	if (proto == IPPROTO_TCP) {
		__u32 doff;
		__u8 flags;

		if ((void *)(l4 + 20) > data_end)
			return slow(SLOW_NOT_FAST);
		doff = (l4[12] >> 4) * 4;
		if (doff < 20 || doff > l4len)
			return slow(SLOW_NOT_FAST);
		flags = l4[13];
		if ((flags & (TCP_SYN | TCP_FIN | TCP_RST)) || !(flags & TCP_ACK))
			return slow(SLOW_TCP_CONTROL);
	} else if (proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE) {
		__u32 ulen;

		if ((void *)(l4 + 8) > data_end)
			return slow(SLOW_NOT_FAST);
		ulen = bpf_ntohs(*(__be16 *)(l4 + 4));
		if (proto == IPPROTO_UDP && (ulen < 8 || ulen > l4len))
			return slow(SLOW_NOT_FAST);
		if (proto == IPPROTO_UDPLITE && ulen != 0 && (ulen < 8 || ulen > l4len))
			return slow(SLOW_NOT_FAST);
	}
	key.proto = proto;
	key.sport = bpf_ntohs(*(__be16 *)l4);
	key.dport = bpf_ntohs(*(__be16 *)(l4 + 2));

	f = bpf_map_lookup_elem(&xc_flows, &key);
	if (!f)
		return slow(SLOW_MISS);
	f->last_seen = bpf_ktime_get_ns();
	__sync_fetch_and_add(&f->packets, 1);
	__sync_fetch_and_add(&f->bytes, iplen);

	/* cluster.Match.OwnsNode: a bucket beyond the mask is not in it. */
	if (!((f->bucket < MAX_BUCKETS && ((XC_PARAMS_MASK(params) >> f->bucket) & 1)) ^ XC_PARAMS_INVERT(params))) {
		xc_count(&xc_fast, FAST_FOREIGN);
		xc_count_n(&xc_fast, FAST_FOREIGN_BYTES, frame_l3 + ETH_HLEN);
		if (f->bucket < MAX_BUCKETS)
			xc_count(&xc_fast, FAST_OWNER + f->bucket);
		return XDP_DROP;
	}
	if (ttl <= 1)
		return slow(SLOW_TTL);

	fib.l4_protocol = proto;
	fib.sport = *(__be16 *)l4;
	fib.dport = *(__be16 *)(l4 + 2);
	fib.tot_len = iplen;
	fib.ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		if (rc >= BPF_FIB_LKUP_RET_BLACKHOLE && rc <= BPF_FIB_LKUP_RET_NO_SRC_ADDR)
			return slow(SLOW_FIB_BLACKHOLE + (rc - BPF_FIB_LKUP_RET_BLACKHOLE));
		return slow(SLOW_FIB_OTHER);
	}
	/* Sets the redirect target only if the egress is a data interface. */
	if (bpf_redirect_map(&xc_egress, fib.ifindex, XDP_PASS) != XDP_REDIRECT)
		return slow(SLOW_NO_EGRESS);
	/* Ethernet padding after the IP packet goes, as the slow path and
	 * the kernel's forwarding (ip_rcv trims to the IP length) drop it. */
	if (frame_l3 > iplen && bpf_xdp_adjust_tail(ctx, -(int)(frame_l3 - iplen)))
		return slow(SLOW_NOT_FAST);

	/* The helpers leave the frame as it was: the bounds checks are for
	 * the verifier, which forgets them across the calls. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (key.family == 4) {
		struct xc_iphdr *ip = data + ETH_HLEN;
		__u32 check;

		if ((void *)(ip + 1) > data_end)
			return slow(SLOW_NOT_FAST);
		/* RFC 1624: the TTL's word drops by 0x0100, the checksum rises. */
		check = ip->check;
		check += bpf_htons(0x0100);
		ip->check = (__u16)(check + (check >= 0xffff));
		ip->ttl--;
	} else {
		struct xc_ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end)
			return slow(SLOW_NOT_FAST);
		ip6->hop_limit--;
	}
	__builtin_memcpy(data, fib.dmac, 6);
	__builtin_memcpy(data + 6, fib.smac, 6);
	xc_count(&xc_fast, FAST_FORWARDED);
	xc_count_n(&xc_fast, FAST_FORWARDED_BYTES, frame_l3 + ETH_HLEN);
	if (f->bucket < MAX_BUCKETS)
		xc_count(&xc_fast, FAST_OWNER + f->bucket);
	return XDP_REDIRECT;
}

SEC("xdp")
int xdpcluster(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct xc_params *pr;
	__u32 zero = 0;
	void *l3;
	long ret;

	if (!xc_parse_l2(data, data_end, &cluster_mac, &l3)) {
		xc_count(&xc_stats, STAT_PASSED);
		return XDP_PASS;
	}
	pr = bpf_map_lookup_elem(&xc_params, &zero);
	if (pr) {
		/* One load: SetMatch stores the word atomically. */
		__u64 params = *(volatile __u64 *)&pr->word;

		if (XC_PARAMS_ENABLED(params)) {
			int v = fast_path(ctx, params);

			if (v != FAST_SLOW_PATH)
				return v;
		}
	}
	xc_count(&xc_stats, STAT_TO_XSK);
	ret = bpf_redirect_map(&xc_xsks, ctx->rx_queue_index, XDP_PASS);
	if (ret == XDP_PASS)
		xc_count(&xc_stats, STAT_NO_SOCKET);
	return ret;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
