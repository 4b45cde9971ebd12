// Package jhash is the Linux kernel's Jenkins hash (include/linux/jhash.h,
// Bob Jenkins' lookup3 as the kernel has used it since 2.6.37), bit-exact.
//
// Word semantics are the kernel's on x86 (little-endian): where the kernel
// hashes a 32-bit word that it loaded from packet memory, such as an IPv4
// address (a __be32) or the first word of an IPv6 address, the word's value
// is the four bytes as they are stored in the packet, read as a
// little-endian uint32. Use [Word] to load such a word from a byte slice.
// [Hash] reads its byte key the same way (get_unaligned_cpu32 on x86).
//
// All functions are pure, allocate nothing and are safe for concurrent use.
package jhash

import (
	"encoding/binary"
	"math/bits"
)

// InitVal is the kernel's JHASH_INITVAL, an arbitrary starting value.
const InitVal uint32 = 0xdeadbeef

// Word returns the 32-bit word the kernel sees when it loads b[0:4] on a
// little-endian CPU. It panics if len(b) < 4.
func Word(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// mix is __jhash_mix.
func mix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

// final is __jhash_final; only c is ever used by callers.
func final(a, b, c uint32) uint32 {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return c
}

// Hash is the kernel's jhash(key, length, initval) over an arbitrary byte
// key. Whole 32-bit words are read little-endian; the tail bytes are added
// as the kernel's switch statement adds them.
func Hash(key []byte, seed uint32) uint32 {
	length := uint32(len(key))
	a := InitVal + length + seed
	b, c := a, a
	k := key
	for len(k) > 12 {
		a += binary.LittleEndian.Uint32(k[0:4])
		b += binary.LittleEndian.Uint32(k[4:8])
		c += binary.LittleEndian.Uint32(k[8:12])
		a, b, c = mix(a, b, c)
		k = k[12:]
	}
	switch len(k) {
	case 0:
		return c
	case 12:
		c += binary.LittleEndian.Uint32(k[8:12])
		b += binary.LittleEndian.Uint32(k[4:8])
		a += binary.LittleEndian.Uint32(k[0:4])
		return final(a, b, c)
	}
	// 1..11 bytes: the same sums as the kernel's fall-through switch.
	for i := len(k) - 1; i >= 0; i-- {
		v := uint32(k[i]) << (8 * (i & 3))
		switch i >> 2 {
		case 0:
			a += v
		case 1:
			b += v
		default:
			c += v
		}
	}
	return final(a, b, c)
}

// Hash2 is the kernel's jhash2(k, length, initval) over 32-bit words, with
// length = len(words).
func Hash2(words []uint32, seed uint32) uint32 {
	a := InitVal + uint32(len(words))<<2 + seed
	b, c := a, a
	k := words
	for len(k) > 3 {
		a += k[0]
		b += k[1]
		c += k[2]
		a, b, c = mix(a, b, c)
		k = k[3:]
	}
	switch len(k) {
	case 3:
		c += k[2]
		fallthrough
	case 2:
		b += k[1]
		fallthrough
	case 1:
		a += k[0]
		return final(a, b, c)
	}
	return c
}

// Hash3Words is the kernel's jhash_3words(a, b, c, initval).
func Hash3Words(a, b, c, seed uint32) uint32 {
	iv := seed + InitVal + 3<<2
	return final(a+iv, b+iv, c+iv)
}

// Hash2Words is the kernel's jhash_2words(a, b, initval).
func Hash2Words(a, b, seed uint32) uint32 {
	iv := seed + InitVal + 2<<2
	return final(a+iv, b+iv, iv)
}

// Hash1Word is the kernel's jhash_1word(a, initval). It equals Hash2 over
// the single word a, which is why the kernel's IPv6 cluster hash (jhash2
// with a length of one word) equals the IPv4 hash of the same four bytes.
func Hash1Word(a, seed uint32) uint32 {
	iv := seed + InitVal + 1<<2
	return final(a+iv, iv, iv)
}

// ReciprocalScale is the kernel's reciprocal_scale(val, ep_ro): it maps val
// uniformly onto [0, n) as (val * n) >> 32.
func ReciprocalScale(val, n uint32) uint32 {
	return uint32((uint64(val) * uint64(n)) >> 32)
}
