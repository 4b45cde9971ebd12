package resync

import (
	"context"
	"testing"
	"time"
)

// BenchmarkPull pulls a table of 1M records over net.Pipe (the channel's
// own cost: handshake, sealing, opening, framing; no network, no table).
func BenchmarkPull(b *testing.B) {
	const n = 1_000_000
	table := make([]byte, n*RecordSize)
	for i := 0; i < n; i++ {
		record(i, table[i*RecordSize:])
	}
	ln := newPipeListener()
	serve(b, &Server{Secret: secretA, Params: testParams, Logger: (&logBuf{}).logger(),
		Export: func(emit func([]byte) error) (int, error) {
			const chunk = 4096 * RecordSize
			for off := 0; off < len(table); off += chunk {
				if err := emit(table[off:min(off+chunk, len(table))]); err != nil {
					return 0, err
				}
			}
			return n, nil
		}}, ln)
	o := PullOptions{Secret: secretA, Params: testParams, MaxRecords: n, Dial: ln.Dial, Merge: func([]byte) error { return nil }}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		st, err := Pull(context.Background(), "pipe", o)
		if err != nil || st.Records != n {
			b.Fatalf("Pull: %d records, %v", st.Records, err)
		}
	}
	sec := time.Since(start).Seconds()
	b.ReportMetric(float64(n)*float64(b.N)/sec, "records/s")
	b.ReportMetric(float64(n*RecordSize)*float64(b.N)/sec/1e6, "MB/s")
}
