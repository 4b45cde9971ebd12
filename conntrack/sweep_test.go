package conntrack

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/packet"
)

// fillUDP tracks n unreplied UDP flows at now (30 s timeout) and checks
// that every shard holds some, so a sweep that skips a shard shows.
func fillUDP(t *testing.T, tb *Table, n int, now int64) {
	t.Helper()
	for i := 0; i < n; i++ {
		p := pkt(false, c, packet.ProtoUDP, 0)
		binary.BigEndian.PutUint32(p.Src[:4], 0x0a000000+uint32(i))
		if r := tb.Track(p, now); r.State != New {
			t.Fatalf("flow %d: %v %v", i, r.State, r.Reason)
		}
	}
	for i := range tb.shards {
		if tb.shards[i].n == 0 {
			t.Fatalf("shard %d empty after %d flows", i, n)
		}
	}
}

// TestSweepCoverage: the shards a Sweeper sweeps per tick cover the whole
// table within its period, a few at a time.
func TestSweepCoverage(t *testing.T) {
	for _, tc := range []struct {
		period  time.Duration
		maxTick int // most shards one tick may lock in turn
	}{
		{50 * time.Millisecond, numShards}, // shorter than a tick: all at once
		{SweepTick, numShards},
		{time.Second, 26},
		{DefaultSweepPeriod, 13},
		{3300 * time.Millisecond, 8},
		{time.Minute, 1},
	} {
		t.Run(tc.period.String(), func(t *testing.T) {
			per := shardsPerTick(tc.period, SweepTick)
			if per > tc.maxTick || per < 1 {
				t.Fatalf("%d shards per tick, want 1..%d", per, tc.maxTick)
			}
			tb := newTable(t, Config{})
			fillUDP(t, tb, 20000, 0)
			later := int64(31 * time.Second)
			ticks := max(int(tc.period/SweepTick), 1)
			removed := 0
			for i := 0; i < ticks; i++ {
				removed += tb.Expire(later, per)
			}
			if tb.Len() != 0 || removed != 20000 {
				t.Fatalf("after %d ticks of %d shards: %d removed, %d left", ticks, per, removed, tb.Len())
			}
		})
	}
}

// TestSweeper runs the goroutine for real: timed-out entries go within
// the period, live ones stay, and nothing is swept after Stop.
func TestSweeper(t *testing.T) {
	tb := newTable(t, Config{})
	fillUDP(t, tb, 5000, 0)
	live := pkt(false, s, packet.ProtoUDP, 0)
	var now atomic.Int64
	now.Store(int64(20 * time.Second))
	tb.Track(live, now.Load()) // expires at 50 s
	now.Store(int64(31 * time.Second))
	const period = 500 * time.Millisecond
	start := time.Now()
	sw := tb.StartSweeper(now.Load, period)
	for tb.Len() > 1 {
		if time.Since(start) > period+time.Second { // slack for a loaded machine
			sw.Stop()
			t.Fatalf("%d entries left %v after starting a sweeper with a %v period", tb.Len(), time.Since(start), period)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	if _, ok := tb.Get(live.Tuple, now.Load()); !ok {
		t.Fatal("the live entry was swept")
	}
	sw.Stop()
	sw.Stop() // idempotent
	now.Store(int64(time.Hour))
	time.Sleep(3 * SweepTick)
	if tb.Len() != 1 {
		t.Fatalf("swept after Stop: %d left", tb.Len())
	}
	if st := tb.Stats(); st.Expired != 5000 {
		t.Fatalf("expired %d, want 5000", st.Expired)
	}
	t.Logf("5000 entries swept in %v (period %v)", took.Round(time.Millisecond), period)
}
