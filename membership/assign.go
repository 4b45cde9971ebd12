package membership

import (
	"encoding/binary"
	"hash/fnv"
	"slices"
	"strings"
)

// MaxBuckets is the largest total_nodes of the cluster match.
const MaxBuckets = 32

// Assign computes which members serve each bucket b < total and the mask
// of the buckets self serves (see the package documentation for the
// rules). It is pure and deterministic: the same members, in any order,
// give the same result on every node. servers[b] is sorted by name;
// buckets at or above total have no servers.
func Assign(self string, total uint32, members []Member) (servers [MaxBuckets][]string, mask uint32) {
	if total > MaxBuckets {
		total = MaxBuckets
	}
	var ready, alive []*Member
	for i := range members {
		m := &members[i]
		if !m.Compatible || m.State != StateAlive {
			continue
		}
		alive = append(alive, m)
		if m.Meta.Ready {
			ready = append(ready, m)
		}
	}
	pool := ready
	if len(pool) == 0 {
		pool = alive // nobody ready: a resyncing node serves rather than nobody
	}
	if len(pool) == 0 {
		return servers, 0
	}
	// Names are unique in a memberlist; sorting makes everything below
	// independent of the input order.
	slices.SortFunc(pool, func(a, b *Member) int { return strings.Compare(a.Name, b.Name) })
	pool = slices.CompactFunc(pool, func(a, b *Member) bool { return a.Name == b.Name })

	load := make([]int, len(pool))
	var orphans []uint32
	for b := uint32(0); b < total; b++ {
		for i, m := range pool {
			if m.Meta.Home&(1<<b) != 0 {
				servers[b] = append(servers[b], m.Name)
				load[i]++
			}
		}
		if servers[b] == nil {
			orphans = append(orphans, b)
		}
	}
	// Buckets nobody in the pool calls home go, in bucket order, to the
	// least loaded member; ties are broken by rendezvous hashing of
	// (bucket, name), so which survivor gets a bucket does not depend on
	// the names' order and a failed node's buckets spread over all of them.
	for _, b := range orphans {
		best := -1
		var bestScore uint64
		for i, m := range pool {
			s := score(b, m.Name)
			if best < 0 || load[i] < load[best] || (load[i] == load[best] && (s > bestScore || (s == bestScore && m.Name < pool[best].Name))) {
				best, bestScore = i, s
			}
		}
		servers[b] = []string{pool[best].Name}
		load[best]++
	}
	for b := uint32(0); b < total; b++ {
		if slices.Contains(servers[b], self) {
			mask |= 1 << b
		}
	}
	return servers, mask
}

// score is the rendezvous weight of name for bucket b: FNV-1a 64 of the
// name, a zero byte and the bucket (big endian), then a 64-bit finalizer
// (FNV's output on short inputs is poorly mixed in its high bits).
func score(b uint32, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	var buf [5]byte
	binary.BigEndian.PutUint32(buf[1:], b)
	h.Write(buf[:])
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
