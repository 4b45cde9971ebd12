package conntrack

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/packet"
)

var (
	bigOnce  sync.Once
	bigTable *Table
	bigPkts  []packet.Parsed
)

// big1M is a table holding 1M UDP flows, and 64K packets of those flows
// in random order and both directions (built once per process).
func big1M(b *testing.B) (*Table, []packet.Parsed) {
	bigOnce.Do(func() {
		const n = 1 << 20
		tb, err := NewTable(Config{})
		if err != nil {
			b.Fatal(err)
		}
		all := make([]packet.Parsed, 0, n)
		for i := 0; i < n; i++ {
			p := pkt(i%4 == 3, c, packet.ProtoUDP, 0)
			binary.BigEndian.PutUint32(p.Src[:4], uint32(i)*2654435761)
			p.SrcPort = uint16(i >> 16)
			tb.Track(p, int64(time.Hour))
			all = append(all, *p)
		}
		r := rand.New(rand.NewPCG(3, 3))
		for i := 0; i < 1<<16; i++ {
			p := all[r.IntN(n)]
			if i%2 == 1 { // the reply direction
				p.Src, p.Dst, p.SrcPort, p.DstPort = p.Dst, p.Src, p.DstPort, p.SrcPort
			}
			bigPkts = append(bigPkts, p)
		}
		bigTable = tb
	})
	return bigTable, bigPkts
}

func pps(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pps")
}

// BenchmarkLookupHit1M: a packet of an existing connection, 1M entries.
func BenchmarkLookupHit1M(b *testing.B) {
	tb, ps := big1M(b)
	b.ReportAllocs()
	b.ResetTimer()
	now := int64(time.Hour)
	for i := 0; i < b.N; i++ {
		if tb.Track(&ps[i&(1<<16-1)], now).State == Invalid {
			b.Fatal("miss")
		}
	}
	pps(b)
}

// BenchmarkLookupHit1MParallel: the same from every P (GOMAXPROCS=2 here).
func BenchmarkLookupHit1MParallel(b *testing.B) {
	tb, ps := big1M(b)
	b.ReportAllocs()
	b.ResetTimer()
	var seed uint64
	var mu sync.Mutex
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		seed++
		i := int(seed) * 7919
		mu.Unlock()
		now := int64(time.Hour)
		for pb.Next() {
			tb.Track(&ps[i&(1<<16-1)], now)
			i++
		}
	})
	pps(b)
}

// BenchmarkInsert: new connections into a table with room.
func BenchmarkInsert(b *testing.B) {
	tb, err := NewTable(Config{MaxEntries: b.N + 1024})
	if err != nil {
		b.Fatal(err)
	}
	p := pkt(false, c, packet.ProtoTCP, SYN)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint32(p.Src[:4], uint32(i)*2654435761)
		p.SrcPort = uint16(i >> 20)
		tb.Track(p, int64(time.Hour))
	}
	pps(b)
}

// BenchmarkBytesPerEntry reports the memory one connection costs with 1M.
func BenchmarkBytesPerEntry(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.ReportMetric(bytesPerEntry(b, 1<<20), "bytes/entry")
	}
}

// BenchmarkSYNFlood: 1M SYNs from random sources against 10K established
// connections in a 1M-entry table; reports SYNs/s and how many of the
// established connections survived (all must).
func BenchmarkSYNFlood(b *testing.B) {
	for it := 0; it < b.N; it++ {
		b.StopTimer()
		tb, err := NewTable(Config{})
		if err != nil {
			b.Fatal(err)
		}
		now := int64(time.Hour)
		var est []packet.Tuple
		for i := 0; i < 10000; i++ {
			est = append(est, established(tb, i, now))
		}
		r := rand.New(rand.NewPCG(uint64(it), 9))
		p := pkt(false, c, packet.ProtoTCP, SYN)
		b.StartTimer()
		start := time.Now()
		const flood = 1 << 20
		for i := 0; i < flood; i++ {
			binary.BigEndian.PutUint32(p.Src[:4], r.Uint32())
			p.SrcPort = uint16(r.Uint32())
			tb.Track(p, now)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		alive := 0
		for _, tp := range est {
			if _, ok := tb.Get(tp, now); ok {
				alive++
			}
		}
		if alive != len(est) {
			b.Fatalf("%d of %d established connections survived", alive, len(est))
		}
		st := tb.Stats()
		b.ReportMetric(float64(flood)/elapsed.Seconds(), "syn/s")
		b.ReportMetric(float64(alive), "established_kept")
		b.ReportMetric(float64(st.Evicted), "evicted")
		b.StartTimer()
	}
}

// BenchmarkLookupHit1MBatch: as BenchmarkLookupHit1M through TrackBatch
// (64 packets per batch, as a dataplane worker calls it); ns/op is per packet.
func BenchmarkLookupHit1MBatch(b *testing.B) {
	tb, ps := big1M(b)
	trackBatches(b, tb, ps[:1<<16])
}

// BenchmarkLookupHitHot: 1M entries in the table, packets from 4K of them
// (traffic with locality: the working set is cache-resident), so this is the
// tracker's own CPU cost per packet rather than the machine's DRAM latency.
func BenchmarkLookupHitHot(b *testing.B) {
	tb, ps := big1M(b)
	trackBatches(b, tb, ps[:4096])
}

// trackBatches looks up the packets of ps (a power of two of them, all
// established) in TrackBatch calls of BatchSize, round and round, and
// reports ns and pps per packet.
func trackBatches(b *testing.B, tb *Table, ps []packet.Parsed) {
	ptrs := make([]*packet.Parsed, len(ps))
	for i := range ps {
		ptrs[i] = &ps[i]
	}
	var out [BatchSize]Result
	b.ReportAllocs()
	b.ResetTimer()
	now := int64(time.Hour)
	for i := 0; i < b.N; i += BatchSize {
		off := i & (len(ptrs) - 1)
		tb.TrackBatch(ptrs[off:off+BatchSize], now, out[:])
		if out[0].State == Invalid {
			b.Fatal("miss")
		}
	}
	pps(b)
}

// BenchmarkLookupHitHotOffload: BenchmarkLookupHitHot's traffic (4K flows
// of a 64K-entry table, both directions) without and with an Offloader
// set, so the cost of the fast path's decisions shows. The connections
// are installed at their second packet; the packets here are those a lost
// cache entry sends through the tracker (re-installed once a second).
func BenchmarkLookupHitHotOffload(b *testing.B) {
	for _, off := range []bool{false, true} {
		name := "none"
		if off {
			name = "offloader"
		}
		b.Run(name, func(b *testing.B) {
			tb, err := NewTable(Config{})
			if err != nil {
				b.Fatal(err)
			}
			if off {
				tb.SetOffloader(&fuzzFastPath{})
			}
			var ps []packet.Parsed
			for i := 0; i < 1<<16; i++ {
				p := pkt(false, c, packet.ProtoUDP, 0)
				binary.BigEndian.PutUint32(p.Src[:4], uint32(i)*2654435761)
				tb.Track(p, int64(time.Hour))
				if i < 4096 {
					if i%2 == 1 {
						p.Src, p.Dst, p.SrcPort, p.DstPort = p.Dst, p.Src, p.DstPort, p.SrcPort
					}
					ps = append(ps, *p)
				}
			}
			trackBatches(b, tb, ps)
		})
	}
}
