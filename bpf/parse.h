/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The parse every xdpcluster XDP program shares: the destination MAC, up
 * to two VLAN tags (802.1Q, or 802.1ad then 802.1Q), the EtherType, and the
 * fixed IPv4 and IPv6 headers. Every function checks its bounds against
 * data_end before it reads, as the verifier requires.
 */
#ifndef XC_PARSE_H
#define XC_PARSE_H

#include "bpf.h"

#define ETH_HLEN 14
#define VLAN_HLEN 4
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_DCCP 33
#define IPPROTO_ICMPV6 58
#define IPPROTO_SCTP 132
#define IPPROTO_UDPLITE 136

/* TCP flag bits, byte 13 of the TCP header. */
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define TCP_URG 0x20

/*
 * A MAC address as two words loaded from packet memory (bytes 0-3 and
 * 4-5 in the CPU's byte order), compared and written with two accesses.
 * The loader sets the program's MACs (read-only globals) before loading.
 */
struct xc_mac {
	__u32 lo;
	__u16 hi;
	__u16 pad;
};

static __always_inline int xc_mac_equal(const void *p, const volatile struct xc_mac *m)
{
	return *(const __u32 *)p == m->lo && *(const __u16 *)(p + 4) == m->hi;
}

static __always_inline void xc_mac_write(void *p, const volatile struct xc_mac *m)
{
	*(__u32 *)p = m->lo;
	*(__u16 *)(p + 4) = m->hi;
}

/* The IPv4 header without options (linux/ip.h, little-endian bitfields). */
struct xc_iphdr {
	__u8 ihl : 4, version : 4;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

/* The IPv6 header (linux/ipv6.h). */
struct xc_ipv6hdr {
	__u8 priority : 4, version : 4;
	__u8 flow_lbl[3];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__be32 saddr[4];
	__be32 daddr[4];
};

/*
 * xc_parse_l2 reads the frame's destination MAC and EtherType. It returns
 * 0 if the frame is shorter than its Ethernet header, is not addressed to
 * mac, or is not IPv4 or IPv6 after at most two tags (the first 802.1Q or
 * 802.1ad, the second 802.1Q); else the EtherType (network order: compare
 * with bpf_htons(ETH_P_IP/ETH_P_IPV6)) with *l3 at the L3 header, which
 * may lie beyond data_end: the L3 parsers check.
 */
static __always_inline __be16 xc_parse_l2(void *data, void *data_end,
					  const volatile struct xc_mac *mac, void **l3)
{
	__be16 proto;

	if (data + ETH_HLEN > data_end || !xc_mac_equal(data, mac))
		return 0;
	proto = *(__be16 *)(data + 12);
	*l3 = data + ETH_HLEN;
	if (proto == bpf_htons(ETH_P_IP) || proto == bpf_htons(ETH_P_IPV6))
		return proto;
	if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
		return 0;
	if (data + ETH_HLEN + VLAN_HLEN > data_end)
		return 0;
	proto = *(__be16 *)(data + 16);
	*l3 = data + ETH_HLEN + VLAN_HLEN;
	if (proto == bpf_htons(ETH_P_IP) || proto == bpf_htons(ETH_P_IPV6))
		return proto;
	if (proto != bpf_htons(ETH_P_8021Q))
		return 0;
	if (data + ETH_HLEN + 2 * VLAN_HLEN > data_end)
		return 0;
	proto = *(__be16 *)(data + 20);
	*l3 = data + ETH_HLEN + 2 * VLAN_HLEN;
	if (proto == bpf_htons(ETH_P_IP) || proto == bpf_htons(ETH_P_IPV6))
		return proto;
	return 0;
}

/*
 * xc_parse_ipv4 returns the IPv4 header at l3 if its fixed 20 bytes fit
 * and its version and header length are sane (the options are not
 * checked against data_end: callers check what they read), else NULL.
 */
static __always_inline struct xc_iphdr *xc_parse_ipv4(void *l3, void *data_end)
{
	struct xc_iphdr *ip = l3;

	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return 0;
	return ip;
}

/* xc_parse_ipv6 returns the IPv6 header at l3 if it fits and says version 6. */
static __always_inline struct xc_ipv6hdr *xc_parse_ipv6(void *l3, void *data_end)
{
	struct xc_ipv6hdr *ip6 = l3;

	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return 0;
	return ip6;
}

#endif
