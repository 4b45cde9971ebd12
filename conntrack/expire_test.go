package conntrack

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/packet"
)

// fillShard installs n UDP connections (two packets each) that all hash to
// one shard, at mt0, and returns that shard's index.
func fillShard(tb testing.TB, t *Table, n int) int {
	tb.Helper()
	target := -1
	for i, added := 0, 0; added < n; i++ {
		p := pkt(false, c, packet.ProtoUDP, 0)
		binary.BigEndian.PutUint32(p.Src[:4], 0x0a000000+uint32(i))
		var k key
		setKey(&k, &p.Tuple, true)
		idx := int(k.hash(&t.seed) >> 56)
		if target < 0 {
			target = idx
		}
		if idx != target {
			continue
		}
		t.Track(p, mt0)
		if r := t.Track(p, mt0); r.Offload != OffloadInstall {
			tb.Fatalf("connection %d not installed: %+v", i, r)
		}
		added++
	}
	return target
}

// TestMassExpiryForgetsUnlocked: a mass expiry of installed connections in
// one shard (more than maxPendingForgets of them) makes no Forget system
// call under the shard's lock: the queued removals are made after each
// batch, unlocked. (A review found the queue overflowing into locked
// Forget calls when it was flushed only once per shard.)
func TestMassExpiryForgetsUnlocked(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 1 << 22})
	probe := &lockProbe{tb: tb}
	tb.SetOffloader(probe)
	const perShard = 3000
	target := fillShard(t, tb, perShard)
	removed := tb.expireShard(&tb.shards[target], mt0+int64(31*time.Second))
	if removed != perShard || probe.forgets != perShard || probe.fLocked != 0 || probe.locked != 0 {
		t.Fatalf("removed %d of %d; %d Forget calls, %d of them under the shard's lock (and %d Seen calls)", removed, perShard, probe.forgets, probe.fLocked, probe.locked)
	}
}

// BenchmarkMassExpiry: a shard of 64,000 installed connections past their
// timeout (a 16 M table's share), swept with a fast path that answers at
// no cost: the sweep's own time per connection. Each batch resumes where
// the last one stopped (a review measured 12-15 µs per connection when
// every batch rescanned the shard from its start, 0.3 µs before batches).
func BenchmarkMassExpiry(b *testing.B) {
	const perShard = 64000
	var per time.Duration
	for b.Loop() {
		b.StopTimer()
		tb := newTable(b, Config{MaxEntries: 1 << 26})
		tb.SetOffloader(&lockProbe{tb: tb})
		target := fillShard(b, tb, perShard)
		b.StartTimer()
		st := time.Now()
		removed := tb.expireShard(&tb.shards[target], mt0+int64(31*time.Second))
		per = time.Since(st) / perShard
		if removed != perShard {
			b.Fatalf("removed %d of %d in one sweep", removed, perShard)
		}
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/conn")
}
