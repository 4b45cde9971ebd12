// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The gateway's fast path as a tc ingress program (Go: dataplane/xsk's
 * TCProgram), for the raw-socket backend (dataplane/afpacket): the same
 * flow cache and the same decision as the XDP program (fast.h), for
 * interfaces where any XDP program costs a copy of every frame (veth and
 * other skb-path devices copy a cloned skb, such as every frame a bridge
 * floods, before an XDP program may see it; tc reads it in place).
 *
 * An untagged frame to the cluster MAC of a cached connection is dropped
 * (TC_ACT_SHOT) when another node owns it, or rewritten (MACs, TTL or hop
 * limit, padding trimmed) and redirected to the route's egress interface;
 * writing copies the header of a cloned skb, and only for the frames this
 * node forwards. Every other frame goes on (TC_ACT_UNSPEC: to the next tc
 * program, if any, then the stack, as XDP_PASS never ends anything), where
 * the slow path's raw sockets, bound to ETH_P_IP and ETH_P_IPV6 and so
 * served after tc ingress, read the cluster-MAC frames among them; the
 * kernel's IP forwarding never forwards those (they are not PACKET_HOST).
 * A GSO packet (GRO merged it, or a local sender left it unsegmented) of a
 * cached connection is forwarded whole when its segments fit the route's
 * MTU (the egress segments it). Per-CPU counters
 * record each verdict; the fast path's are fast.h's.
 */
#include "bpf.h"
#include "parse.h"
#include "flow.h"
#include "fast.h"

/* Counter indexes: keep in sync with dataplane/xsk's TCStat constants. */
enum {
	TC_STAT_TO_SOCKET, /* cluster-MAC IP frames left to the slow path's sockets */
	TC_STAT_PASSED,	   /* everything else, left to the kernel */
	NUM_TC_STATS,
};

XC_STATS_MAP(xc_tc_stats, NUM_TC_STATS);

/* The cluster MAC, set by the loader. */
volatile const struct xc_mac cluster_mac;

/*
 * fast_path decides a cluster-MAC frame from the flow cache: TC_ACT_SHOT
 * (foreign), TC_ACT_REDIRECT (forwarded, rewritten) or TC_ACT_UNSPEC (the
 * slow path's, counted by reason).
 */
static __always_inline int fast_path(struct __sk_buff *skb, __u64 params)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct xc_fast_decision d = {};
	__u32 *egress, frame_l3, w;
	__u8 hdr[26];

	switch (xc_fast_decide(skb, data, data_end, skb->len, skb->ifindex, skb->gso_size, params, &d)) {
	case XC_FAST_DROP:
		return TC_ACT_SHOT;
	case XC_FAST_FORWARD:
		break;
	default:
		return TC_ACT_UNSPEC;
	}
	egress = bpf_map_lookup_elem(&xc_egress, &d.fib.ifindex);
	if (!egress)
		return xc_fast_slow(SLOW_NO_EGRESS), TC_ACT_UNSPEC;
	/* Ethernet padding after the IP packet goes, as the slow path and
	 * the kernel's forwarding (ip_rcv trims to the IP length) drop it. */
	frame_l3 = d.frame_len - ETH_HLEN;
	if (frame_l3 > d.iplen && bpf_skb_change_tail(skb, ETH_HLEN + d.iplen, 0))
		return xc_fast_slow(SLOW_NOT_FAST), TC_ACT_UNSPEC;

	/*
	 * The new header, from the MACs to the TTL and checksum (IPv4) or the
	 * hop limit (IPv6), written with one store: if it fails nothing is
	 * written, and the slow path gets the frame as it came (a second
	 * store failing after a first would hand it a decremented TTL, or
	 * MACs that are no longer the cluster's). The helpers may move the
	 * data: read it again.
	 */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + sizeof(hdr) > data_end)
		return xc_fast_slow(SLOW_NOT_FAST), TC_ACT_UNSPEC;
	__builtin_memcpy(hdr, d.fib.dmac, 6);
	__builtin_memcpy(hdr + 6, d.fib.smac, 6);
	__builtin_memcpy(hdr + 12, data + 12, sizeof(hdr) - 12);
	if (d.family == 4) {
		/* bytes 22-25: TTL, protocol, checksum */
		__builtin_memcpy(&w, hdr + ETH_HLEN + 8, 4);
		w = xc_ipv4_ttl_word(w);
		__builtin_memcpy(hdr + ETH_HLEN + 8, &w, 4);
		if (bpf_skb_store_bytes(skb, 0, hdr, ETH_HLEN + 12, 0))
			return xc_fast_slow(SLOW_NOT_FAST), TC_ACT_UNSPEC;
	} else {
		hdr[ETH_HLEN + 7]--; /* byte 21: the hop limit */
		if (bpf_skb_store_bytes(skb, 0, hdr, ETH_HLEN + 8, 0))
			return xc_fast_slow(SLOW_NOT_FAST), TC_ACT_UNSPEC;
	}
	xc_fast_count(FAST_FORWARDED, d.frame_len, d.bucket);
	return bpf_redirect(*egress, 0);
}

SEC("tc")
int xdpcluster_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u64 params;
	void *l3;

	if (!xc_parse_l2(data, data_end, &cluster_mac, &l3)) {
		xc_count(&xc_tc_stats, TC_STAT_PASSED);
		return TC_ACT_UNSPEC;
	}
	params = xc_fast_params();
	if (XC_PARAMS_ENABLED(params)) {
		int v;

		if (skb->vlan_present) {
			/* The kernel took a tag off: the XDP program would
			 * have seen it, and leaves tagged frames to the slow
			 * path. */
			xc_fast_slow(SLOW_NOT_FAST);
		} else {
			v = fast_path(skb, params);
			if (v != TC_ACT_UNSPEC)
				return v;
		}
	}
	xc_count(&xc_tc_stats, TC_STAT_TO_SOCKET);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
