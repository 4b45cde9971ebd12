// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The gateway's XDP program (Go: dataplane/xsk). IPv4 and IPv6 frames
 * addressed to the interface's cluster MAC, untagged or behind one or two
 * VLAN tags, go to the AF_XDP socket of the queue they arrived on; a queue
 * without a socket, and every other frame, go to the kernel. Per-CPU
 * counters record each verdict.
 */
#include "bpf.h"
#include "parse.h"

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

SEC("xdp")
int xdpcluster(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l3;
	long ret;

	if (!xc_parse_l2(data, data_end, &cluster_mac, &l3)) {
		xc_count(&xc_stats, STAT_PASSED);
		return XDP_PASS;
	}
	xc_count(&xc_stats, STAT_TO_XSK);
	ret = bpf_redirect_map(&xc_xsks, ctx->rx_queue_index, XDP_PASS);
	if (ret == XDP_PASS)
		xc_count(&xc_stats, STAT_NO_SOCKET);
	return ret;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
