/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The gateway's flow cache (Go: dataplane/xsk's FlowCache), shared by the
 * fast-path programs of every data interface and by the entry counter
 * (count.c): its LRU hash with its key and value, and the layout of its
 * parameters (fast.h has the parameters' and the egress devmap's maps).
 * The Go side writes these layouts byte for byte: keep them in sync with
 * dataplane.FlowKey and dataplane/xsk's flowValue and fastParams.
 */
#ifndef XC_FLOW_H
#define XC_FLOW_H

#include "bpf.h"

/* One direction of a connection (dataplane.FlowKey): 40 bytes. */
struct xc_flow_key {
	__u8 family; /* 4 or 6 */
	__u8 proto;
	__u16 sport; /* host byte order */
	__u16 dport; /* host byte order */
	__u16 pad;
	__u32 saddr[4]; /* IPv4 in saddr[0], the rest zero */
	__u32 daddr[4];
};

/* A cached direction: 32 bytes. */
struct xc_flow {
	__u64 last_seen; /* CLOCK_MONOTONIC: bpf_ktime_get_coarse_ns of its last fast-path packet, or the install's */
	__u64 packets;	 /* carried by the fast path (forwarded or dropped) since the install */
	__u64 bytes;	 /* their IP lengths */
	__u8 bucket;	 /* the connection's bucket: 0-based node */
	__u8 dir;	 /* 0: original direction, 1: reply */
	__u8 pad[6];
};

/* The flow cache: both directions of each installed connection. The
 * loader sizes it (and shares it between the interfaces' programs and the
 * entry counter, count.c). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 2);
	__type(key, struct xc_flow_key);
	__type(value, struct xc_flow);
} xc_flows SEC(".maps");

/* The ownership parameters (SetMatch), the one entry of xc_params: one
 * 64-bit word, so that the program reads mask, invert and enabled with
 * one load and user space writes them with one atomic store through the
 * map's memory mapping (a map update is a memcpy another CPU may see half
 * done: a packet would be decided by the new mask and the old invert). */
struct xc_params {
	__u64 word;
};

#define XC_PARAMS_MASK(w) ((__u32)(w))	       /* bit n: this node owns bucket n */
#define XC_PARAMS_INVERT(w) (((w) >> 32) & 1)  /* own what the mask does not */
#define XC_PARAMS_ENABLED(w) (((w) >> 33) & 1) /* 0: every frame to the slow path */

#endif
