package dataplane

import (
	"net/netip"
	"testing"

	"github.com/xdpcluster/xdpcluster/cluster"
)

// TestBatchCounters: each receive batch adds one to Batches, its size to
// BatchFrames (the exact sum the batch_size histogram reports) and one to
// the bucket of the smallest power of two at least its size.
func TestBatchCounters(t *testing.T) {
	m := cluster.LocalNode(1, 1, 1)
	d, front, _ := testDataplane(t, m, staticResolver{Route{Verdict: NoRoute}})
	w := d.workers[0]
	var wantFrames, wantBatches uint64
	var wantBuckets [8]uint64
	for _, tc := range []struct{ size, bucket int }{
		{1, 0}, {2, 1}, {3, 2}, {4, 2}, {5, 3}, {9, 4}, {17, 5}, {33, 6}, {63, 6}, {64, 6},
	} {
		var fs [][]byte
		for i := 0; i < tc.size; i++ {
			fs = append(fs, udpFrame(t, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 64, false))
		}
		front.frames = fs
		n := front.Receive(w.rx)
		if n != tc.size {
			t.Fatalf("received %d frames, want %d", n, tc.size)
		}
		w.batch(0, front, w.rx[:n], d.match.Load())
		wantFrames += uint64(tc.size)
		wantBatches++
		wantBuckets[tc.bucket]++
		c := d.Counters(0, 0)
		if got := c.BatchFrames.Load(); got != wantFrames {
			t.Errorf("after a batch of %d: BatchFrames %d, want %d", tc.size, got, wantFrames)
		}
		if got := c.Batches.Load(); got != wantBatches {
			t.Errorf("after a batch of %d: Batches %d, want %d", tc.size, got, wantBatches)
		}
		for b := range wantBuckets {
			if got := c.BatchSizes[b].Load(); got != wantBuckets[b] {
				t.Errorf("after a batch of %d: bucket %d (up to %d frames) %d, want %d", tc.size, b, 1<<b, got, wantBuckets[b])
			}
		}
	}
}
