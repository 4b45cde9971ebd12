// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The back-end XDP program (Go: node/backend). It decides ownership of
 * each IPv4/IPv6 frame addressed to the cluster MAC bit-exact with the
 * kernel's xt_cluster: jhash_1word over the first 32 bits of the source
 * address, reciprocal_scale to a node, the node mask, invert. Owned frames
 * get the interface's own MAC as destination and go up the stack; foreign
 * ones are dropped; everything not IP to the cluster MAC passes untouched.
 * ICMP and ICMPv6 errors are decided by the destination of the packet they
 * embed (the client of the connection they report on).
 */
#include "bpf.h"
#include "parse.h"
#include "jhash.h"

/* Counter indexes: keep in sync with node/backend's Stat constants. */
enum {
	STAT_OWNED,	 /* owned: destination MAC rewritten, passed to the stack */
	STAT_FOREIGN,	 /* another node's: dropped */
	STAT_OTHER,	 /* not IP to the cluster MAC: passed untouched */
	STAT_ICMP_INNER, /* ICMP errors decided by their embedded packet */
	STAT_MALFORMED,	 /* IP to the cluster MAC but unreadable: dropped */
	NUM_STATS,
};

/* The decision's parameters, written by SetMatch at run time through the
 * map's memory mapping, each word with one atomic store: the program
 * reads the ownership (mask and invert: takeover, release) with one load,
 * so a packet never sees the new mask with the old invert. */
struct params {
	__u64 own;   /* the mask (bit n = node n) in the low 32 bits, invert in bit 32 */
	__u32 total; /* number of nodes; 0: not configured, drop */
	__u32 seed;  /* xt_cluster's hash seed */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct params);
} xc_be_params SEC(".maps");

XC_STATS_MAP(xc_be_stats, NUM_STATS);

/* The cluster MAC and the interface's own MAC, set by the loader. */
volatile const struct xc_mac cluster_mac;
volatile const struct xc_mac own_mac;

/*
 * icmp4_inner returns 1 and the embedded destination in *key if the ICMP
 * message at icmp is an error (unreachable, source quench, redirect, time
 * exceeded, parameter problem) with room for the embedded IPv4 header.
 */
static __always_inline int icmp4_inner(__u8 *icmp, void *data_end, __u32 *key)
{
	if ((void *)(icmp + 8 + 20) > data_end)
		return 0;
	switch (icmp[0]) {
	case 3: case 4: case 5: case 11: case 12:
		*key = *(__u32 *)(icmp + 8 + 16);
		return 1;
	}
	return 0;
}

/* icmp6_inner: the same for ICMPv6 errors (types 1 to 4). */
static __always_inline int icmp6_inner(__u8 *icmp, void *data_end, __u32 *key)
{
	if ((void *)(icmp + 8 + 40) > data_end)
		return 0;
	if (icmp[0] < 1 || icmp[0] > 4)
		return 0;
	*key = *(__u32 *)(icmp + 8 + 24);
	return 1;
}

SEC("xdp")
int xdpcluster_be(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct params *p;
	__u32 zero = 0, key, node, owns, total;
	__u64 own;
	void *l3;
	__be16 proto;

	proto = xc_parse_l2(data, data_end, &cluster_mac, &l3);
	if (!proto) {
		xc_count(&xc_be_stats, STAT_OTHER);
		return XDP_PASS;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct xc_iphdr *ip = xc_parse_ipv4(l3, data_end);

		if (!ip)
			goto malformed;
		key = ip->saddr;
		/* A later fragment has no ICMP header. */
		if (ip->protocol == IPPROTO_ICMP && !(ip->frag_off & bpf_htons(0x1fff)) &&
		    icmp4_inner((__u8 *)ip + ip->ihl * 4, data_end, &key))
			xc_count(&xc_be_stats, STAT_ICMP_INNER);
	} else {
		struct xc_ipv6hdr *ip6 = xc_parse_ipv6(l3, data_end);

		if (!ip6)
			goto malformed;
		key = ip6->saddr[0];
		/* ICMPv6 right after the header only. */
		if (ip6->nexthdr == IPPROTO_ICMPV6 && icmp6_inner((__u8 *)(ip6 + 1), data_end, &key))
			xc_count(&xc_be_stats, STAT_ICMP_INNER);
	}

	p = bpf_map_lookup_elem(&xc_be_params, &zero);
	if (!p)
		goto malformed;
	total = *(volatile __u32 *)&p->total;
	if (!total)
		goto malformed;
	own = *(volatile __u64 *)&p->own;
	/* reciprocal_scale(hash, total), then the node's bit of the mask. */
	node = ((__u64)jhash_1word(key, *(volatile __u32 *)&p->seed) * total) >> 32;
	if (node >= 32) /* total > 32: SetMatch never writes it */
		goto malformed;
	owns = ((own >> node) & 1) ^ ((own >> 32) & 1);
	if (!owns) {
		xc_count(&xc_be_stats, STAT_FOREIGN);
		return XDP_DROP;
	}
	/* Owned: our own MAC as destination (so the stack sees PACKET_HOST). */
	xc_mac_write(data, &own_mac);
	xc_count(&xc_be_stats, STAT_OWNED);
	return XDP_PASS;

malformed:
	xc_count(&xc_be_stats, STAT_MALFORMED);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
