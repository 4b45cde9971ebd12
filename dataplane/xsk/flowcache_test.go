package xsk

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/packet"
)

// tuple4 is the original direction of a UDP or TCP connection from
// 10.x.y.z (i's bytes) port 1000+i to 192.0.2.1:443.
func tuple4(i int, proto uint8) packet.Tuple {
	t := packet.Tuple{Family: packet.IPv4, Proto: proto, SrcPort: uint16(1000 + i), DstPort: 443, HasPorts: true}
	t.Src[0] = 10
	binary.BigEndian.PutUint16(t.Src[2:], uint16(i))
	t.Src[1] = byte(i >> 16)
	copy(t.Dst[:4], []byte{192, 0, 2, 1})
	return t
}

func tuple6(i int) packet.Tuple {
	t := packet.Tuple{Family: packet.IPv6, Proto: packet.ProtoTCP, SrcPort: uint16(2000 + i), DstPort: 80, HasPorts: true}
	copy(t.Src[:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 1})
	binary.BigEndian.PutUint32(t.Src[12:], uint32(i))
	copy(t.Dst[:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 2})
	t.Dst[15] = 1
	return t
}

func newCache(t testing.TB, conns int) (*FlowCache, conntrack.Clock) {
	needRoot(t)
	clock := conntrack.NewClock()
	fc, err := NewFlowCache(conns, clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fc.Close() })
	return fc, clock
}

func lookupFlow(t testing.TB, fc *FlowCache, k dataplane.FlowKey) (flowValue, bool) {
	var v flowValue
	err := fc.flows.Lookup(&k, &v)
	return v, err == nil
}

func TestNewFlowCacheRefuses(t *testing.T) {
	for _, conns := range []int{0, -1, MaxFlowCacheConns + 1} {
		if _, err := NewFlowCache(conns, conntrack.NewClock()); err == nil {
			t.Errorf("NewFlowCache(%d): no error", conns)
		}
	}
	if _, err := NewFlowCache(16, conntrack.Clock{}); err == nil {
		t.Error("NewFlowCache with the zero clock: no error")
	}
}

// TestFlowCacheInstallRemoveSeen: Install writes both directions (bucket,
// direction, last seen now, counters zero), Seen reads them back in the
// tracker's clock, Remove and Forget delete both and skip what is missing,
// none of them allocates, and workers install concurrently.
func TestFlowCacheInstallRemoveSeen(t *testing.T) {
	fc, clock := newCache(t, 4096)
	var tuples []packet.Tuple
	for i := range 50 {
		tuples = append(tuples, tuple4(i, packet.ProtoUDP))
	}
	for i := range 30 {
		tuples = append(tuples, tuple6(i))
	}
	keys := make([]dataplane.FlowKey, len(tuples))
	buckets := make([]uint8, len(tuples))
	for i := range tuples {
		keys[i] = dataplane.KeyOf(&tuples[i])
		buckets[i] = uint8(i % 32)
	}
	before := clock.Now()
	if err := fc.Install(keys, buckets); err != nil {
		t.Fatal(err)
	}
	after := clock.Now()
	for i, k := range keys {
		for dir, kk := range []dataplane.FlowKey{k, k.Reverse()} {
			v, ok := lookupFlow(t, fc, kk)
			if !ok {
				t.Fatalf("connection %d dir %d: not in the map", i, dir)
			}
			if v.Bucket != buckets[i] || v.Dir != uint8(dir) || v.Packets != 0 || v.Bytes != 0 {
				t.Errorf("connection %d dir %d: %+v, want bucket %d", i, dir, v, buckets[i])
			}
		}
		o, r, ok := fc.Seen(&tuples[i])
		// The offset between the clocks is read once: allow for its error.
		const slack = int64(1e6)
		// The reply direction has not passed yet: 0, so the tracker
		// never takes a one-way datagram flow for a replied one.
		if !ok || o < before-slack || o > after+slack || r != 0 {
			t.Errorf("Seen(%d) = %d, %d, %v; want ok, the install time within [%d, %d], no reply", i, o, r, ok, before, after)
		}
	}
	st, err := fc.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != uint64(2*len(keys)) || st.Installs != uint64(len(keys)) || st.Lost != 0 {
		t.Errorf("stats after install: %+v, want %d entries, %d installs", st, 2*len(keys), len(keys))
	}

	// Remove every other connection, with missing ones among them: one
	// never installed, and one whose reply direction is gone.
	if err := fc.flows.Delete(keys[3].Reverse()); err != nil {
		t.Fatal(err)
	}
	missing := tuple4(9999, packet.ProtoTCP)
	rm := []dataplane.FlowKey{dataplane.KeyOf(&missing)}
	for i := 1; i < len(keys); i += 2 {
		rm = append(rm, keys[i])
	}
	if err := fc.Remove(rm); err != nil {
		t.Fatalf("Remove with missing keys: %v", err)
	}
	for i, k := range keys {
		_, ok1 := lookupFlow(t, fc, k)
		_, ok2 := lookupFlow(t, fc, k.Reverse())
		if want := i%2 == 0; ok1 != want || ok2 != want {
			t.Errorf("connection %d after Remove: present %v/%v, want %v", i, ok1, ok2, want)
		}
	}
	if _, _, ok := fc.Seen(&tuples[1]); ok {
		t.Error("Seen of a removed connection: ok")
	}
	// One direction evicted alone (the LRU evicts them separately): the
	// connection is still carried the other way, so it is live, and Seen
	// puts the missing direction back with its bucket.
	if err := fc.flows.Delete(keys[2].Reverse()); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := fc.Seen(&tuples[2]); !ok {
		t.Error("Seen with one direction evicted: not ok")
	}
	if v, ok := lookupFlow(t, fc, keys[2].Reverse()); !ok || v.Bucket != buckets[2] || v.Dir != 1 {
		t.Errorf("the evicted direction not put back: %+v %v", v, ok)
	}
	fc.Forget(&tuples[0])
	if _, _, ok := fc.Seen(&tuples[0]); ok {
		t.Error("Seen after Forget: ok")
	}
	st, _ = fc.Stats()
	if want := uint64(len(keys) - len(keys)/2 - 1); st.Entries != 2*want {
		t.Errorf("entries after removal: %d, want %d", st.Entries, 2*want)
	}
	if st.Removals != uint64(len(keys)/2+1) || st.Lost != 3 {
		t.Errorf("stats after removal: %+v, want %d removals, 3 lost (two gone, one direction put back)", st, len(keys)/2+1)
	}

	// Zero allocations per call.
	batch := keys[:40]
	if n := testing.AllocsPerRun(100, func() { fc.Install(batch, buckets[:40]) }); n != 0 {
		t.Errorf("Install: %v allocations per call", n)
	}
	if n := testing.AllocsPerRun(100, func() { fc.Remove(batch) }); n != 0 {
		t.Errorf("Remove: %v allocations per call", n)
	}
	if n := testing.AllocsPerRun(100, func() { fc.Seen(&tuples[60]) }); n != 0 {
		t.Errorf("Seen: %v allocations per call", n)
	}
	if n := testing.AllocsPerRun(100, func() { fc.Forget(&tuples[61]) }); n != 0 {
		t.Errorf("Forget: %v allocations per call", n)
	}

	// Concurrent workers: each installs its own connections in batches.
	fc2, _ := newCache(t, 8192)
	const workers, per = 4, 700
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ks [7]dataplane.FlowKey
			var bs [7]uint8
			for i := 0; i < per; i += len(ks) {
				for j := range ks {
					tp := tuple4(w*per+i+j, packet.ProtoTCP)
					ks[j], bs[j] = dataplane.KeyOf(&tp), uint8(w)
				}
				if err := fc2.Install(ks[:], bs[:]); err != nil {
					t.Error(err)
					return
				}
				if i%70 == 0 {
					if err := fc2.Remove(ks[:1]); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	st, err = fc2.Stats()
	if err != nil {
		t.Fatal(err)
	}
	removed := uint64(workers * per / 70)
	if st.Installs != workers*per || st.Removals != removed || st.Entries != 2*(workers*per-removed) {
		t.Errorf("concurrent installs: %+v, want %d installs, %d removals, %d entries", st, workers*per, removed, 2*(workers*per-removed))
	}
}

// TestFlowCacheBytes: FlowCacheBytes, which xdpcluster check and the
// configuration's memory check use, is what the kernel accounts for the
// flow cache's map (its memlock in fdinfo), within 2%, at powers of two
// and between them.
func TestFlowCacheBytes(t *testing.T) {
	for _, conns := range []int{1 << 12, 1 << 18, 5 << 16, 3 << 17} {
		fc, _ := newCache(t, conns)
		info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fc.flows.FD()))
		if err != nil {
			t.Fatal(err)
		}
		var memlock uint64
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, "memlock:"); ok {
				memlock, err = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			}
		}
		if err != nil || memlock == 0 {
			t.Fatalf("memlock of the flow map: %q, %v", info, err)
		}
		want := FlowCacheBytes(conns)
		if float64(memlock) < float64(want)*0.98 || float64(memlock) > float64(want)*1.02 {
			t.Errorf("%d connections: the kernel accounts %d bytes (%.1f per connection), FlowCacheBytes says %d", conns, memlock, float64(memlock)/float64(conns), want)
		}
	}
}

// TestFlowCacheEntryCount: Stats' entry count, read from the count the
// kernel keeps (bpf/count.c), equals a walk of the map after installs,
// refreshes, removals and the LRU's evictions.
func TestFlowCacheEntryCount(t *testing.T) {
	fc, _ := newCache(t, 1024) // 2,048 entries
	if err := fc.CountErr(); err != nil {
		t.Fatalf("entry counter not loaded on this kernel: %v", err)
	}
	walked := func() uint64 {
		var n uint64
		if err := fc.walk(func(dataplane.FlowKey, *flowValue) { n++ }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	keysOf := func(from, to int) ([]dataplane.FlowKey, []uint8) {
		var keys []dataplane.FlowKey
		for i := from; i < to; i++ {
			tp := tuple4(i, packet.ProtoUDP)
			keys = append(keys, dataplane.KeyOf(&tp))
		}
		return keys, make([]uint8, len(keys))
	}
	for _, step := range []struct {
		name     string
		do       func() error
		min, max uint64 // the walk's count must lie here too
	}{
		{"empty", func() error { return nil }, 0, 0},
		{"install 300", func() error { k, b := keysOf(0, 300); return fc.Install(k, b) }, 600, 600},
		{"refresh 100 of them", func() error { k, b := keysOf(200, 300); return fc.Install(k, b) }, 600, 600},
		{"remove 20, and 50 missing", func() error { k, _ := keysOf(280, 350); return fc.Remove(k) }, 560, 560},
		{"install 3,000 more: the LRU evicts", func() error { k, b := keysOf(1000, 4000); return fc.Install(k, b) }, 1, 2048},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		st, err := fc.Stats()
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		w := walked()
		if st.Entries != w || w < step.min || w > step.max {
			t.Errorf("%s: Stats counts %d entries, the walk %d; want them equal, within [%d, %d]", step.name, st.Entries, w, step.min, step.max)
		}
	}
}
