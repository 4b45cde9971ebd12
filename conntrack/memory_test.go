package conntrack

import (
	"runtime"
	"testing"
)

// TestTableBytes: the computed size of a full table matches what filling
// one allocates, and the README's 128 bytes per entry at the default size.
func TestTableBytes(t *testing.T) {
	if got := TableBytes(DefaultMaxEntries); got != 128<<20 {
		t.Errorf("TableBytes(%d) = %d, want %d (128 bytes each)", DefaultMaxEntries, got, 128<<20)
	}
	if got, want := TableBytes(1<<28), uint64(32)<<30; got != want {
		t.Errorf("TableBytes(1<<28) = %d, want %d", got, want)
	}
	const n = 1 << 16
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tb := newTable(t, Config{MaxEntries: n})
	fill(tb, n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if tb.Len() < n*9/10 {
		t.Fatalf("filled %d of %d", tb.Len(), n)
	}
	runtime.KeepAlive(tb)
	got, want := float64(after.HeapAlloc-before.HeapAlloc), float64(TableBytes(n))
	t.Logf("full table of %d: %.0f bytes measured, %.0f computed", n, got, want)
	if got < want*0.9 || got > want*1.2 {
		t.Errorf("full table of %d: %.0f bytes measured, %.0f computed", n, got, want)
	}
}
