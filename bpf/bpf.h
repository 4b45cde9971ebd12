/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel ABI definitions xdpcluster's XDP and tc programs use, written
 * out so the build needs clang only (no libbpf, no multiarch asm/ headers
 * for the bpf target). Values are the kernel UAPI's (linux/bpf.h,
 * linux/if_ether.h, linux/in.h), which never change.
 */
#ifndef XC_BPF_H
#define XC_BPF_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;

/* struct xdp_md, the XDP program's context (linux/bpf.h). */
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

/*
 * struct __sk_buff, the tc program's context (linux/bpf.h), up to the
 * fields xdpcluster reads; the kernel checks each access by its offset.
 */
struct __sk_buff {
	__u32 len; /* at tc ingress: from the Ethernet header on */
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present; /* a tag the kernel took off into the metadata */
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data; /* the linear part only: data_end may stop before len */
	__u32 data_end;
	__u32 napi_id;
	__u32 sk_fields[13]; /* family ... local_port: socket programs' */
	__u32 data_meta;
	__u64 flow_keys; /* a pointer */
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	__u64 sk; /* a pointer */
	__u32 gso_size; /* non-zero: a GSO packet (merged by GRO, or a local sender's) */
};

/* tc actions (linux/pkt_cls.h). */
#define TC_ACT_UNSPEC -1 /* at tcx: the next program, then the stack */
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define TC_ACT_REDIRECT 7

enum xdp_action {
	XDP_ABORTED = 0,
	XDP_DROP,
	XDP_PASS,
	XDP_TX,
	XDP_REDIRECT,
};

enum {
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_XSKMAP = 17,
	BPF_MAP_TYPE_DEVMAP_HASH = 25,
};

/* Map flags (linux/bpf.h). */
#define BPF_F_MMAPABLE (1U << 10) /* an array user space can mmap */

/* Address families (linux/socket.h), for bpf_fib_lookup. */
#define AF_INET 2
#define AF_INET6 10

/*
 * struct bpf_fib_lookup, the FIB and neighbour lookup's parameters and
 * result (linux/bpf.h): in: family, l4_protocol, sport, dport, tot_len
 * (checked against the egress MTU), ifindex (ingress), tos/flowinfo,
 * addresses; out: ifindex (egress), mtu_result, smac and dmac.
 */
struct bpf_fib_lookup {
	__u8 family;
	__u8 l4_protocol;
	__be16 sport;
	__be16 dport;
	union {
		__u16 tot_len;
		__u16 mtu_result;
	};
	__u32 ifindex;
	union {
		__u8 tos;
		__be32 flowinfo;
		__u32 rt_metric;
	};
	union {
		__be32 ipv4_src;
		__u32 ipv6_src[4];
	};
	union {
		__be32 ipv4_dst;
		__u32 ipv6_dst[4];
	};
	union {
		struct {
			__be16 h_vlan_proto;
			__be16 h_vlan_TCI;
		};
		__u32 tbid;
	};
	union {
		struct {
			__u32 mark;
		};
		struct {
			__u8 smac[6];
			__u8 dmac[6];
		};
	};
};

/* bpf_fib_lookup's return codes (BPF_FIB_LKUP_RET_*). */
enum {
	BPF_FIB_LKUP_RET_SUCCESS,
	BPF_FIB_LKUP_RET_BLACKHOLE,
	BPF_FIB_LKUP_RET_UNREACHABLE,
	BPF_FIB_LKUP_RET_PROHIBIT,
	BPF_FIB_LKUP_RET_NOT_FWDED,
	BPF_FIB_LKUP_RET_FWD_DISABLED,
	BPF_FIB_LKUP_RET_UNSUPP_LWT,
	BPF_FIB_LKUP_RET_NO_NEIGH,
	BPF_FIB_LKUP_RET_FRAG_NEEDED,
	BPF_FIB_LKUP_RET_NO_SRC_ADDR,
};

/* Sections, map definitions in BTF style (as libbpf and cilium/ebpf read them). */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __always_inline inline __attribute__((always_inline))

/* Helpers, by their number in linux/bpf.h's __BPF_FUNC_MAPPER. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_skb_store_bytes)(void *skb, __u32 offset, const void *from, __u32 len, __u64 flags) = (void *)9;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)23;
static long (*bpf_skb_change_tail)(void *skb, __u32 len, __u64 flags) = (void *)38;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;
static long (*bpf_xdp_adjust_tail)(void *ctx, int delta) = (void *)65;
static long (*bpf_fib_lookup)(void *ctx, struct bpf_fib_lookup *params, int plen, __u32 flags) = (void *)69;
static __u64 (*bpf_ktime_get_coarse_ns)(void) = (void *)160;

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Byte order: BPF programs are built for little-endian hosts (bpfel). */
#define bpf_htons(x) ((__be16)__builtin_bswap16(x))
#define bpf_ntohs(x) ((__u16)__builtin_bswap16(x))
#define bpf_htonl(x) ((__be32)__builtin_bswap32(x))

/* A per-CPU array of __u64 counters, one per verdict. */
#define XC_STATS_MAP(name, n)                                  \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);       \
		__uint(max_entries, n);                        \
		__type(key, __u32);                            \
		__type(value, __u64);                          \
	} name SEC(".maps")

static __always_inline void xc_count(void *stats, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(stats, &idx);

	if (v)
		*v += 1;
}

/* xc_count_n adds n to counter idx. */
static __always_inline void xc_count_n(void *stats, __u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(stats, &idx);

	if (v)
		*v += n;
}

#endif
