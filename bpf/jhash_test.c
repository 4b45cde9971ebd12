// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A test-only program (node/backend's TestJhashHeader runs it with
 * BPF_PROG_TEST_RUN): it proves bpf/jhash.h bit-exact with the Go package
 * jhash. The frame holds a seed and WORDS 32-bit words; the program writes
 * back, in their place, jhash_1word, jhash_2words and jhash_3words of the
 * first words, then jhash2 of the first n words for n = 1..WORDS.
 */
#include "bpf.h"
#include "jhash.h"

#define WORDS 12
#define OUTS (3 + WORDS)

SEC("xdp")
int xc_jhash_test(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 *p = data, w[WORDS], out[OUTS], seed;
	int i;

	if (data + 4 * (1 + OUTS) > data_end)
		return XDP_ABORTED;
	seed = p[0];
#pragma unroll
	for (i = 0; i < WORDS; i++)
		w[i] = p[1 + i];
	out[0] = jhash_1word(w[0], seed);
	out[1] = jhash_2words(w[0], w[1], seed);
	out[2] = jhash_3words(w[0], w[1], w[2], seed);
#define H(n) out[2 + n] = jhash2(w, n, seed)
	H(1); H(2); H(3); H(4); H(5); H(6);
	H(7); H(8); H(9); H(10); H(11); H(12);
#pragma unroll
	for (i = 0; i < OUTS; i++)
		p[1 + i] = out[i];
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
