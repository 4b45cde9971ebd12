// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The XDP_REDIRECT ceiling of the end-to-end harness (Go: bench, used by
 * bench/e2e): the least a forwarder in XDP can do. Every frame gets the
 * next hop's MAC as its destination and is redirected through a devmap
 * to the egress interface (slot 0), with no parse, lookup or TTL: what
 * xdpcluster's fast path is measured against. A per-CPU counter counts
 * the redirects.
 */
#include "bpf.h"

/* Local names, so this file never clashes with what bpf.h may gain. */
#define XC_BENCH_MAP_DEVMAP 14 /* BPF_MAP_TYPE_DEVMAP */

struct {
	__uint(type, XC_BENCH_MAP_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} xc_bench_out SEC(".maps");

XC_STATS_MAP(xc_bench_stats, 1);

/* The next hop's MAC, set by the loader: bytes 0-3 and 4-5 as the CPU
 * loads them from packet memory. */
volatile const __u32 next_hop_lo;
volatile const __u16 next_hop_hi;

SEC("xdp")
int xc_bench_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (data + 14 > data_end)
		return XDP_DROP;
	*(__u32 *)data = next_hop_lo;
	*(__u16 *)(data + 4) = next_hop_hi;
	xc_count(&xc_bench_stats, 0);
	return bpf_redirect_map(&xc_bench_out, 0, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
