package conntrack

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"sync/atomic"

	"github.com/xdpcluster/xdpcluster/packet"
)

// key identifies a connection in either direction: the (address, port)
// endpoint that sorts lower is side a. It is packed into five words so
// that comparing and hashing it is a handful of instructions:
// w[0:2] address a, w[2:4] address b, w[4] = pa | pb<<16 | proto<<32 | family<<40.
type key struct {
	w [5]uint64
}

func (k *key) family() packet.Family { return packet.Family(k.w[4] >> 40) }

// addr returns side a's (i == 0) or side b's address.
func (k *key) addr(i int) (b [16]byte) {
	binary.LittleEndian.PutUint64(b[0:], k.w[2*i])
	binary.LittleEndian.PutUint64(b[8:], k.w[2*i+1])
	return b
}

// seed is a table's random hash secret, so that nobody can choose
// addresses that collide (linear probing would degrade under that).
type seed [6]uint64

func newSeed() (s seed) {
	for i := range s {
		s[i] = rand.Uint64() | 1
	}
	return s
}

// mum is wyhash's multiply-mix: the xor of both halves of a 128-bit product.
func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hash is a seeded wyhash-style hash of the key (three independent
// multiplies, then one to mix). It is never zero (zero marks an empty
// slot); its top 8 bits pick the shard, its low bits the slot.
func (k *key) hash(s *seed) uint64 {
	h := mum(k.w[0]^s[0], k.w[1]^s[1]) ^ mum(k.w[2]^s[2], k.w[3]^s[3]) ^ mum(k.w[4]^s[4], s[5])
	return mum(h^s[5], 0x9e3779b97f4a7c15) | 1
}

// slot is one cache line: hash, key, entry.
type slot struct {
	h uint64 // 0: empty
	k key
	e entry
}

type slotTable struct {
	slots []slot
	mask  uint64
}

// find returns the index of k's slot, or of the empty slot where it would
// go, and whether it was found. Linear probing; the table is never full.
func (t *slotTable) find(k *key, h uint64) (int, bool) {
	i := h & t.mask
	for {
		s := &t.slots[i]
		if s.h == 0 {
			return int(i), false
		}
		if s.h == h && s.k.w[0] == k.w[0] && s.k.w[1] == k.w[1] && s.k.w[2] == k.w[2] && s.k.w[3] == k.w[3] && s.k.w[4] == k.w[4] {
			return int(i), true
		}
		i = (i + 1) & t.mask
	}
}

// remove empties slot i, shifting later entries of the probe run back so
// that no tombstones are needed.
func (t *slotTable) remove(i uint64) {
	for {
		t.slots[i] = slot{}
		j := i
		for {
			j = (j + 1) & t.mask
			s := &t.slots[j]
			if s.h == 0 {
				return
			}
			ideal := s.h & t.mask
			// The entry at j may move to i unless its ideal slot lies
			// cyclically in (i, j].
			if (j-ideal)&t.mask >= (j-i)&t.mask {
				break
			}
		}
		t.slots[i] = t.slots[j]
		i = j
	}
}

const minSlots = 64

// grow doubles the shard's table (sh locked).
func (sh *shard) grow() {
	old := sh.tab.Load()
	nt := &slotTable{slots: make([]slot, 2*len(old.slots)), mask: uint64(2*len(old.slots) - 1)}
	for i := range old.slots {
		s := &old.slots[i]
		if s.h != 0 {
			j, _ := nt.find(&s.k, s.h)
			nt.slots[j] = *s
		}
	}
	sh.tab.Store(nt)
}

// get returns k's live entry, or nil (sh locked). An expired entry is
// removed, unless a fast path holds it: the sweep decides those (see
// SetOffloader), and until then they are live.
func (sh *shard) get(k *key, h uint64, now int64) *entry {
	tab := sh.tab.Load()
	i, ok := tab.find(k, h)
	if !ok {
		return nil
	}
	if e := &tab.slots[i].e; e.expires <= now && e.fp&fpInstalled == 0 {
		tab.remove(uint64(i))
		sh.n--
		sh.expired++
		return nil
	}
	return &tab.slots[i].e
}

// removeKey deletes k if present (sh locked).
func (sh *shard) removeKey(k *key, h uint64) {
	tab := sh.tab.Load()
	if i, ok := tab.find(k, h); ok {
		tab.remove(uint64(i))
		sh.n--
	}
}

// put stores a new entry for k, which must be absent, growing the table
// when it is three-quarters full (sh locked).
func (sh *shard) put(k *key, h uint64, e entry) *entry {
	tab := sh.tab.Load()
	if uint64(sh.n+1)*4 > uint64(len(tab.slots))*3 {
		sh.grow()
		tab = sh.tab.Load()
	}
	i, _ := tab.find(k, h)
	tab.slots[i] = slot{h: h, k: *k, e: e}
	sh.n++
	return &tab.slots[i].e
}

// earlyDrop makes room in a full shard (sh locked): from a random place it
// samples up to 64 entries and removes an expired one, else the first that
// is not assured. Assured connections are never evicted. An expired
// connection that a fast path holds may still be active there (only the
// sweep asks): it is sampled as if live, and the fast path forgets it if
// it is evicted.
func (sh *shard) earlyDrop(t *Table, start uint64, now int64) bool {
	tab := sh.tab.Load()
	victim, found, seen := uint64(0), false, 0
	for n, i := 0, start&tab.mask; n < len(tab.slots) && seen < 64; n, i = n+1, (i+1)&tab.mask {
		s := &tab.slots[i]
		if s.h == 0 {
			continue
		}
		seen++
		if s.e.expires <= now && s.e.fp&fpInstalled == 0 {
			tab.remove(i)
			sh.n--
			sh.expired++
			return true
		}
		if !found && s.e.flags&flagAssured == 0 {
			victim, found = i, true
		}
	}
	if found {
		sh.removeSlot(t, victim)
		sh.evicted++
	}
	return found
}

// removeSlot empties slot i (sh locked) and, if a fast path holds its
// connection, makes the fast path forget it.
func (sh *shard) removeSlot(t *Table, i uint64) {
	tab := sh.tab.Load()
	s := &tab.slots[i]
	if s.e.fp&fpInstalled == 0 || t.off == nil {
		tab.remove(i)
		sh.n--
		return
	}
	tp := s.k.origTuple(s.e.flags&flagOrigA != 0)
	tab.remove(i)
	sh.n--
	sh.forgetLater(t, &tp)
}

// maxPendingForgets bounds a shard's queue of removals for the fast path.
const maxPendingForgets = 1024

// forgetLater queues a removal from the fast path (sh locked): the
// sweeper makes it after unlocking the shard (Expire), so that a worker
// evicting connections under a flood of new ones (early drop) makes no
// system call while it holds the shard's lock. Meanwhile the fast path
// may carry a few more of the connection's packets, as before its
// eviction. A full queue (a flood between two sweeps) is made at once.
func (sh *shard) forgetLater(t *Table, tp *packet.Tuple) {
	if len(sh.forgets) >= maxPendingForgets {
		t.off.Forget(tp)
		return
	}
	sh.forgets = append(sh.forgets, *tp)
}

// seenAsk is an installed connection past its timeout, collected by the
// sweep under the shard's lock, asked about (Seen) without it, and
// settled under it again (settle).
type seenAsk struct {
	k                   key
	h                   uint64
	tp                  packet.Tuple
	origLast, replyLast int64
	ok                  bool
}

// seenBatch is how many installed connections Expire asks the fast path
// about per unlock of a shard.
const seenBatch = 64

// sweep removes the expired entries no fast path holds (sh locked), from
// slot from on, and collects expired ones a fast path holds into asks, to
// be asked about without the lock and settled (settle). It stops when
// asks is full, and returns how many it removed, how many it collected,
// and the slot to go on from (the table's end when it finished).
func (sh *shard) sweep(t *Table, now int64, asks []seenAsk, from int) (removed, asked, next int) {
	tab := sh.tab.Load()
	i := from
	for i < len(tab.slots) {
		s := &tab.slots[i]
		if s.h != 0 && s.e.expires <= now {
			if s.e.fp&fpInstalled != 0 && t.off != nil {
				if asked < len(asks) {
					asks[asked] = seenAsk{k: s.k, h: s.h, tp: s.k.origTuple(s.e.flags&flagOrigA != 0)}
					asked++
					if asked == len(asks) {
						return removed, asked, i + 1
					}
				}
				i++
				continue
			}
			tab.remove(uint64(i))
			sh.n--
			sh.expired++
			removed++
			continue // a later entry may have shifted into i
		}
		i++
	}
	return removed, asked, i
}

// settle applies what the fast path said about connections the sweep
// collected (sh locked): each still installed and still past its timeout
// (no packet refreshed it meanwhile) is kept if the fast path carried it
// recently, else removed from the table and, after the unlock, from the
// fast path. It returns how many it removed and the lowest slot it
// emptied (the table's length: none), from which a resumed sweep must go
// on: a removal shifts later entries back, to that slot at the lowest.
func (sh *shard) settle(t *Table, now int64, asks []seenAsk) (removed, lowest int) {
	tab := sh.tab.Load()
	lowest = len(tab.slots)
	for j := range asks {
		a := &asks[j]
		i, found := tab.find(&a.k, a.h)
		if !found {
			continue
		}
		s := &tab.slots[i]
		if s.e.fp&fpInstalled == 0 || s.e.expires > now {
			continue
		}
		if t.applySeen(&s.e, &s.k, a.origLast, a.replyLast, a.ok, now) {
			continue
		}
		tab.remove(uint64(i))
		sh.n--
		sh.expired++
		removed++
		lowest = min(lowest, i)
		sh.forgetLater(t, &a.tp)
	}
	return removed, lowest
}

// touch loads the slot where a key with hash h starts its probe, without
// the lock, so that the cache misses of a batch overlap; see TrackBatch.
func (sh *shard) touch(h uint64) uint64 {
	if raceEnabled {
		return 0
	}
	tab := sh.tab.Load()
	return atomic.LoadUint64(&tab.slots[h&tab.mask].h)
}
