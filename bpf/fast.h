/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The gateway's fast path, shared by its XDP program (xsk.c, with AF_XDP
 * as the slow path) and its tc program (tc.c, with raw sockets as the slow
 * path): the flow cache's maps, the fast-path counters, and the decision
 * for one untagged cluster-MAC frame, which both programs take the same
 * way. Only how a decided frame is rewritten and sent differs (XDP writes
 * the frame and redirects through the devmap; tc stores through helpers,
 * which copy a cloned skb's header only when they write it, and
 * redirects by ifindex).
 *
 * Include it once per program, after bpf.h, parse.h and flow.h.
 */
#ifndef XC_FAST_H
#define XC_FAST_H

#include "bpf.h"
#include "parse.h"
#include "flow.h"

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

XC_STATS_MAP(xc_fast, NUM_FAST);

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

/* xc_fast_params returns the ownership word, 0 (off) when it cannot. */
static __always_inline __u64 xc_fast_params(void)
{
	struct xc_params *pr;
	__u32 zero = 0;

	pr = bpf_map_lookup_elem(&xc_params, &zero);
	if (!pr)
		return 0;
	/* One load: SetMatch stores the word atomically. */
	return *(volatile __u64 *)&pr->word;
}

/* What xc_fast_decide returns. */
#define XC_FAST_SLOW -1	  /* counted by reason: the slow path's */
#define XC_FAST_DROP 1	  /* another node's: counted, drop it */
#define XC_FAST_FORWARD 2 /* owned and routed: d->fib says where */

/* A decided frame, for the caller's rewrite. */
struct xc_fast_decision {
	struct bpf_fib_lookup fib; /* the route's egress and MACs */
	__u32 iplen;		   /* the IP packet's length (the rest is padding) */
	__u32 frame_len;	   /* the frame's, with its Ethernet header */
	__u8 bucket;
	__u8 family; /* 4 or 6 */
};

/* xc_fast_slow counts a reason and hands the frame to the slow path. */
static __always_inline int xc_fast_slow(__u32 reason)
{
	xc_count(&xc_fast, FAST_SLOW + reason);
	return XC_FAST_SLOW;
}

/* xc_fast_count counts a decided frame as verdict (FAST_FORWARDED or
 * FAST_FOREIGN) with its bytes and its bucket. */
static __always_inline void xc_fast_count(__u32 verdict, __u32 frame_len, __u8 bucket)
{
	xc_count(&xc_fast, verdict);
	xc_count_n(&xc_fast, verdict + (FAST_FORWARDED_BYTES - FAST_FORWARDED), frame_len);
	if (bucket < MAX_BUCKETS)
		xc_count(&xc_fast, FAST_OWNER + bucket);
}

/*
 * xc_ipv4_csum_ok reports whether the IPv4 header of hl bytes (20 to 60, a
 * multiple of 4) at ip sums to 0xffff, as packet.Decode requires.
 */
static __always_inline int xc_ipv4_csum_ok(void *ip, __u32 hl, void *data_end)
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
 * xc_fast_decide decides a cluster-MAC frame from the flow cache. data to
 * data_end is what the program can read of it (from its Ethernet header
 * on), frame_len its whole length, ifindex the interface it came in on,
 * gso the payload of each segment of a GSO packet (tc only: GRO merged
 * it, or a local sender left it unsegmented; 0 for any other), whose
 * segments, not its length, the route's MTU must bound, as when the
 * kernel forwards one.
 * It returns XC_FAST_DROP (counted) for another node's connection,
 * XC_FAST_SLOW (counted by reason) for the slow path, or XC_FAST_FORWARD
 * with d filled in: the node owns the connection and the kernel routes
 * it; the caller checks that the route's egress is a data interface (else
 * SLOW_NO_EGRESS), rewrites and sends the frame, and counts it with
 * xc_fast_count(FAST_FORWARDED, ...). The cache entry's time and counters
 * are updated for every decided frame.
 */
static __always_inline int xc_fast_decide(void *ctx, void *data, void *data_end, __u32 frame_len, __u32 ifindex,
					  __u32 gso, __u64 params, struct xc_fast_decision *d)
{
	struct xc_flow_key key = {};
	struct bpf_fib_lookup *fib = &d->fib;
	struct xc_flow *f;
	__u32 l4len, iplen, frame_l3, need, seg;
	__u8 *l4, proto, ttl;
	__be16 et;
	long rc;

	if (data + ETH_HLEN > data_end || frame_len < ETH_HLEN)
		return xc_fast_slow(SLOW_NOT_FAST);
	frame_l3 = frame_len - ETH_HLEN;
	et = *(__be16 *)(data + 12);
	if (et == bpf_htons(ETH_P_IP)) {
		struct xc_iphdr *ip = data + ETH_HLEN;
		__u32 hl;

		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return xc_fast_slow(SLOW_NOT_FAST);
		hl = ip->ihl * 4;
		iplen = bpf_ntohs(ip->tot_len);
		if (iplen < hl || iplen > frame_l3)
			return xc_fast_slow(SLOW_NOT_FAST);
		if (!xc_ipv4_csum_ok(ip, hl, data_end))
			return xc_fast_slow(SLOW_NOT_FAST);
		if (ip->frag_off & bpf_htons(0x3fff)) /* MF or an offset */
			return xc_fast_slow(SLOW_FRAGMENT);
		proto = ip->protocol;
		ttl = ip->ttl;
		l4 = (void *)ip + hl;
		l4len = iplen - hl;
		key.family = 4;
		key.saddr[0] = ip->saddr;
		key.daddr[0] = ip->daddr;
		fib->family = AF_INET;
		fib->tos = ip->tos;
		fib->ipv4_src = ip->saddr;
		fib->ipv4_dst = ip->daddr;
	} else if (et == bpf_htons(ETH_P_IPV6)) {
		struct xc_ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return xc_fast_slow(SLOW_NOT_FAST);
		l4len = bpf_ntohs(ip6->payload_len);
		iplen = l4len + 40;
		if (iplen > frame_l3)
			return xc_fast_slow(SLOW_NOT_FAST);
		proto = ip6->nexthdr;
		ttl = ip6->hop_limit;
		l4 = (void *)(ip6 + 1);
		key.family = 6;
		fib->family = AF_INET6;
		fib->flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0fffffff);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			key.saddr[i] = ip6->saddr[i];
			key.daddr[i] = ip6->daddr[i];
			fib->ipv6_src[i] = ip6->saddr[i];
			fib->ipv6_dst[i] = ip6->daddr[i];
		}
	} else {
		return xc_fast_slow(SLOW_NOT_FAST); /* tagged */
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
		return xc_fast_slow(SLOW_NOT_FAST);
	}
	if (l4len < need || (void *)(l4 + 4) > data_end)
		return xc_fast_slow(SLOW_NOT_FAST);
	if (proto == IPPROTO_TCP) {
		__u32 doff;
		__u8 flags;

		if ((void *)(l4 + 20) > data_end)
			return xc_fast_slow(SLOW_NOT_FAST);
		doff = (l4[12] >> 4) * 4;
		if (doff < 20 || doff > l4len)
			return xc_fast_slow(SLOW_NOT_FAST);
		need = doff; /* a GSO segment's transport header */
		flags = l4[13];
		if ((flags & (TCP_SYN | TCP_FIN | TCP_RST)) || !(flags & TCP_ACK))
			return xc_fast_slow(SLOW_TCP_CONTROL);
	} else if (proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE) {
		__u32 ulen;

		if ((void *)(l4 + 8) > data_end)
			return xc_fast_slow(SLOW_NOT_FAST);
		ulen = bpf_ntohs(*(__be16 *)(l4 + 4));
		if (proto == IPPROTO_UDP && (ulen < 8 || ulen > l4len))
			return xc_fast_slow(SLOW_NOT_FAST);
		if (proto == IPPROTO_UDPLITE && ulen != 0 && (ulen < 8 || ulen > l4len))
			return xc_fast_slow(SLOW_NOT_FAST);
	}
	key.proto = proto;
	key.sport = bpf_ntohs(*(__be16 *)l4);
	key.dport = bpf_ntohs(*(__be16 *)(l4 + 2));

	f = bpf_map_lookup_elem(&xc_flows, &key);
	if (!f)
		return xc_fast_slow(SLOW_MISS);
	/* The clock at its last tick: expiry counts in seconds, and on a VM
	 * reading the clock itself cost a quarter of this program's time. */
	f->last_seen = bpf_ktime_get_coarse_ns();
	__sync_fetch_and_add(&f->packets, 1);
	__sync_fetch_and_add(&f->bytes, iplen);
	d->bucket = f->bucket;
	d->iplen = iplen;
	d->frame_len = frame_len;
	d->family = key.family;

	/* cluster.Match.OwnsNode: a bucket beyond the mask is not in it. */
	if (!((d->bucket < MAX_BUCKETS && ((XC_PARAMS_MASK(params) >> d->bucket) & 1)) ^ XC_PARAMS_INVERT(params))) {
		xc_fast_count(FAST_FOREIGN, frame_len, d->bucket);
		return XC_FAST_DROP;
	}
	if (ttl <= 1)
		return xc_fast_slow(SLOW_TTL);

	fib->l4_protocol = proto;
	fib->sport = *(__be16 *)l4;
	fib->dport = *(__be16 *)(l4 + 2);
	/* A GSO packet leaves as segments of gso payload bytes behind the
	 * IP and transport headers: the route's MTU bounds those. */
	seg = iplen;
	if (gso && (iplen - l4len) + need + gso < iplen)
		seg = (iplen - l4len) + need + gso;
	fib->tot_len = seg;
	fib->ifindex = ifindex;
	rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		if (rc >= BPF_FIB_LKUP_RET_BLACKHOLE && rc <= BPF_FIB_LKUP_RET_NO_SRC_ADDR)
			return xc_fast_slow(SLOW_FIB_BLACKHOLE + (rc - BPF_FIB_LKUP_RET_BLACKHOLE));
		return xc_fast_slow(SLOW_FIB_OTHER);
	}
	return XC_FAST_FORWARD;
}

/*
 * xc_ipv4_ttl_word returns the IPv4 header's bytes 8 to 11 (TTL,
 * protocol, checksum: as loaded from the packet) with the TTL one less
 * and the checksum updated to match (RFC 1624: the TTL's word drops by
 * 0x0100, the checksum rises by it).
 */
static __always_inline __u32 xc_ipv4_ttl_word(__u32 w)
{
	__u32 check = w >> 16;
	__u8 ttl = w & 0xff;

	check += bpf_htons(0x0100);
	check = (__u16)(check + (check >= 0xffff));
	return check << 16 | (w & 0xff00) | (__u8)(ttl - 1);
}

#endif
