// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The flow cache's entry counter (Go: dataplane/xsk's FlowCache.Stats):
 * one BPF_PROG_TEST_RUN returns how many entries xc_flows holds, from the
 * count the kernel keeps for every hash map (the bpf_map_sum_elem_count
 * kfunc, Linux 6.6 and later), instead of a walk of the whole map at
 * every scrape. The loader gives it the daemon's xc_flows; where the
 * kernel lacks the kfunc it does not load, and Stats walks the map.
 */
#include "bpf.h"
#include "flow.h"

/* Named for the kfunc's parameter only: the loader checks a kfunc's
 * parameter types against the kernel's, and a pointer's target only by
 * its kind (a struct, not a forward declaration). */
struct bpf_map {
	int unused;
};

extern long long bpf_map_sum_elem_count(const struct bpf_map *map) __attribute__((section(".ksyms")));

SEC("syscall")
int xc_flow_count(void *ctx)
{
	/* The sum of per-CPU counts, read without a lock: an insert and
	 * its delete counted on two CPUs during the read can make it -1 on
	 * a nearly empty map. At most 2^31 entries (MaxFlowCacheConns):
	 * the return value holds it, read as unsigned. */
	long long n = bpf_map_sum_elem_count((const struct bpf_map *)&xc_flows);

	return n < 0 ? 0 : n;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
