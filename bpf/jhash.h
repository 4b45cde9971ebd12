/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The Linux kernel's Jenkins hash (include/linux/jhash.h), bit-exact with
 * it, with xt_cluster and with the Go package jhash: jhash_1word (and
 * its 2- and 3-word siblings) and jhash2 over 32-bit words. A word loaded from packet memory (an IPv4
 * address, the first word of an IPv6 address) is hashed as loaded, as the
 * kernel does on a little-endian CPU.
 */
#ifndef XC_JHASH_H
#define XC_JHASH_H

#include "bpf.h"

#define JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 xc_rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> (32 - s));
}

#define __jhash_mix(a, b, c)                   \
	{                                      \
		a -= c; a ^= xc_rol32(c, 4);  c += b; \
		b -= a; b ^= xc_rol32(a, 6);  a += c; \
		c -= b; c ^= xc_rol32(b, 8);  b += a; \
		a -= c; a ^= xc_rol32(c, 16); c += b; \
		b -= a; b ^= xc_rol32(a, 19); a += c; \
		c -= b; c ^= xc_rol32(b, 4);  b += a; \
	}

#define __jhash_final(a, b, c)                 \
	{                                      \
		c ^= b; c -= xc_rol32(b, 14);  \
		a ^= c; a -= xc_rol32(c, 11);  \
		b ^= a; b -= xc_rol32(a, 25);  \
		c ^= b; c -= xc_rol32(b, 16);  \
		a ^= c; a -= xc_rol32(c, 4);   \
		b ^= a; b -= xc_rol32(a, 14);  \
		c ^= b; c -= xc_rol32(b, 24);  \
	}

/* __jhash_nwords: the kernel's final mixing of up to three words. */
static __always_inline __u32 __jhash_nwords(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	a += initval;
	b += initval;
	c += initval;
	__jhash_final(a, b, c);
	return c;
}

/* jhash_3words, jhash_2words, jhash_1word: the kernel's functions of the
 * same names; jhash_1word is xt_cluster's hash. */
static __always_inline __u32 jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	return __jhash_nwords(a, b, c, initval + JHASH_INITVAL + (3 << 2));
}

static __always_inline __u32 jhash_2words(__u32 a, __u32 b, __u32 initval)
{
	return __jhash_nwords(a, b, 0, initval + JHASH_INITVAL + (2 << 2));
}

static __always_inline __u32 jhash_1word(__u32 a, __u32 initval)
{
	return __jhash_nwords(a, 0, 0, initval + JHASH_INITVAL + (1 << 2));
}

/*
 * jhash2 is the kernel's jhash2(k, length, initval) over length 32-bit
 * words; length must be a compile-time constant so the loops unroll.
 */
static __always_inline __u32 jhash2(const __u32 *k, __u32 length, __u32 initval)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (length << 2) + initval;
#pragma unroll
	while (length > 3) {
		a += k[0];
		b += k[1];
		c += k[2];
		__jhash_mix(a, b, c);
		length -= 3;
		k += 3;
	}
	switch (length) {
	case 3:
		c += k[2];
		/* fallthrough */
	case 2:
		b += k[1];
		/* fallthrough */
	case 1:
		a += k[0];
		__jhash_final(a, b, c);
		break;
	case 0:
		break;
	}
	return c;
}

#endif
