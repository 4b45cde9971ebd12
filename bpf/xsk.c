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
#include "fast.h"

/* Counter indexes: keep in sync with dataplane/xsk's Stat constants. */
enum {
	STAT_TO_XSK,	/* cluster-MAC IP frames sent to the AF_XDP socket */
	STAT_NO_SOCKET, /* ... whose queue had no socket: passed to the kernel */
	STAT_PASSED,	/* everything else, passed to the kernel */
	NUM_STATS,
};

#define MAX_QUEUES 256

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xc_xsks SEC(".maps");

XC_STATS_MAP(xc_stats, NUM_STATS);

/* The cluster MAC, set by the loader. */
volatile const struct xc_mac cluster_mac;

#define FAST_SLOW_PATH -1

/*
 * fast_path decides a cluster-MAC frame from the flow cache (fast.h):
 * XDP_DROP (foreign), XDP_REDIRECT (forwarded, rewritten), or
 * FAST_SLOW_PATH.
 */
static __always_inline int fast_path(struct xdp_md *ctx, __u64 params)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct xc_fast_decision d = {};
	__u32 frame_l3;

	switch (xc_fast_decide(ctx, data, data_end, data_end - data, ctx->ingress_ifindex, 0, params, &d)) {
	case XC_FAST_DROP:
		return XDP_DROP;
	case XC_FAST_FORWARD:
		break;
	default:
		return FAST_SLOW_PATH;
	}
	/* Sets the redirect target only if the egress is a data interface. */
	if (bpf_redirect_map(&xc_egress, d.fib.ifindex, XDP_PASS) != XDP_REDIRECT)
		return xc_fast_slow(SLOW_NO_EGRESS);
	/* Ethernet padding after the IP packet goes, as the slow path and
	 * the kernel's forwarding (ip_rcv trims to the IP length) drop it. */
	frame_l3 = d.frame_len - ETH_HLEN;
	if (frame_l3 > d.iplen && bpf_xdp_adjust_tail(ctx, -(int)(frame_l3 - d.iplen)))
		return xc_fast_slow(SLOW_NOT_FAST);

	/* The helpers leave the frame as it was: the bounds checks are for
	 * the verifier, which forgets them across the calls. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (d.family == 4) {
		struct xc_iphdr *ip = data + ETH_HLEN;
		__u32 *w = (void *)ip + 8; /* TTL, protocol, checksum */

		if ((void *)(ip + 1) > data_end)
			return xc_fast_slow(SLOW_NOT_FAST);
		*w = xc_ipv4_ttl_word(*w);
	} else {
		struct xc_ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end)
			return xc_fast_slow(SLOW_NOT_FAST);
		ip6->hop_limit--;
	}
	__builtin_memcpy(data, d.fib.dmac, 6);
	__builtin_memcpy(data + 6, d.fib.smac, 6);
	xc_fast_count(FAST_FORWARDED, d.frame_len, d.bucket);
	return XDP_REDIRECT;
}

SEC("xdp")
int xdpcluster(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 params;
	void *l3;
	long ret;

	if (!xc_parse_l2(data, data_end, &cluster_mac, &l3)) {
		xc_count(&xc_stats, STAT_PASSED);
		return XDP_PASS;
	}
	params = xc_fast_params();
	if (XC_PARAMS_ENABLED(params)) {
		int v = fast_path(ctx, params);

		if (v != FAST_SLOW_PATH)
			return v;
	}
	xc_count(&xc_stats, STAT_TO_XSK);
	ret = bpf_redirect_map(&xc_xsks, ctx->rx_queue_index, XDP_PASS);
	if (ret == XDP_PASS)
		xc_count(&xc_stats, STAT_NO_SOCKET);
	return ret;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
