package conntrack

import "unsafe"

// TableBytes is the memory a Table configured for maxEntries connections
// holds when it is full: every shard's slot table at the size it grows to
// (a power of two, at most three-quarters full). Growing a shard briefly
// holds its old table too; a shard is 1/256 of the whole, so that is not
// counted. The configuration compares this with the machine's memory.
func TableBytes(maxEntries int) uint64 {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	per := uint64(maxEntries+numShards-1) / numShards
	slots := uint64(minSlots)
	for per*4 > slots*3 {
		slots *= 2
	}
	return numShards * slots * uint64(unsafe.Sizeof(slot{}))
}
