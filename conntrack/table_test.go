package conntrack

import (
	"math/rand/v2"
	"testing"
)

// TestSlotTableAgainstMap drives one shard's open-addressing table with
// random puts, removals, expiries and sweeps, and checks it against a map
// after every step, with hashes forced to collide so that probe runs wrap
// around the table and deletions shift long runs.
func TestSlotTableAgainstMap(t *testing.T) {
	for _, collide := range []uint64{0, 0xff, 0x7, 0xfff8} {
		r := rand.New(rand.NewPCG(collide, 77))
		sh := &shard{limit: 1 << 20}
		sh.tab.Store(&slotTable{slots: make([]slot, minSlots), mask: minSlots - 1})
		ref := map[key]int64{}
		sd := newSeed()
		hashOf := func(k *key) uint64 {
			h := k.hash(&sd)
			if collide != 0 {
				h = (h &^ 0xffff) | (h & collide) | 1 // few distinct slot indices
				if collide == 0xfff8 {
					h = (h &^ 0xffff) | 0xfff8 | (h & 7) | 1 // the last slots: runs wrap around
				}
			}
			return h
		}
		keys := make([]key, 400)
		for i := range keys {
			keys[i].w = [5]uint64{r.Uint64(), r.Uint64(), r.Uint64(), r.Uint64(), uint64(i)}
		}
		now := int64(1000)
		for step := 0; step < 20000; step++ {
			k := &keys[r.IntN(len(keys))]
			h := hashOf(k)
			switch op := r.IntN(10); {
			case op < 5: // get or put
				e := sh.get(k, h, now)
				exp, ok := ref[*k]
				if ok && exp <= now {
					delete(ref, *k)
					ok = false
				}
				if (e != nil) != ok {
					t.Fatalf("collide %#x step %d: get found=%v, reference %v", collide, step, e != nil, ok)
				}
				if e == nil {
					exp := now + int64(r.IntN(50))
					sh.put(k, h, entry{expires: exp})
					ref[*k] = exp
				} else if e.expires != exp {
					t.Fatalf("step %d: expires %d, reference %d", step, e.expires, exp)
				}
			case op < 8:
				sh.removeKey(k, h)
				delete(ref, *k)
			case op < 9:
				now += int64(r.IntN(5))
			default:
				sh.sweep(&Table{}, now, nil, 0)
				for k, exp := range ref {
					if exp <= now {
						delete(ref, k)
					}
				}
			}
			if step%500 == 0 || step == 19999 {
				// Every live reference key is findable; the count agrees.
				tab := sh.tab.Load()
				live := 0
				for i := range tab.slots {
					if tab.slots[i].h != 0 {
						live++
					}
				}
				if live != sh.n || sh.n != len(ref) {
					t.Fatalf("collide %#x step %d: %d slots used, n=%d, reference %d", collide, step, live, sh.n, len(ref))
				}
				for k := range ref {
					if _, ok := tab.find(&k, hashOf(&k)); !ok {
						t.Fatalf("collide %#x step %d: key lost", collide, step)
					}
				}
			}
		}
	}
}
