package resync

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/packet"
)

// BenchmarkResyncTable is a restarted node's whole resync of N
// connections: a live peer's table exported, sent over TCP (inside a
// namespace the benchmark creates), authenticated and decrypted, and
// merged into an empty table, as the daemon does it. It reports the
// connections per second, the time per resync and the bytes on the wire.
func BenchmarkResyncTable(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("%dK", n/1000), func(b *testing.B) {
			src, err := conntrack.NewTable(conntrack.Config{MaxEntries: 2 * n})
			if err != nil {
				b.Fatal(err)
			}
			now := int64(time.Hour)
			p := &packet.Parsed{TTL: 64}
			p.Family, p.Proto, p.HasPorts, p.DstPort = packet.IPv4, packet.ProtoUDP, true, 53
			p.Dst = [16]byte{203, 0, 113, 80}
			for i := 0; i < n; i++ {
				binary.BigEndian.PutUint32(p.Src[:4], 0x0a000000+uint32(i)*7)
				p.SrcPort = uint16(1024 + i%50000)
				src.Track(p, now)
			}
			have := src.Len()
			ln, dial, addr := tcpTransport.listen(b)
			serve(b, &Server{Secret: secretA, Params: testParams, Count: src.Len, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
				Export: func(emit func([]byte) error) (int, error) { return src.Export(now, emit) }}, ln)
			b.ResetTimer()
			var bytes int64
			for range b.N {
				b.StopTimer()
				dst, err := conntrack.NewTable(conntrack.Config{MaxEntries: 2 * n})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				st, err := Pull(context.Background(), addr, PullOptions{Secret: secretA, Params: testParams, MaxRecords: 2 * n, Dial: dial,
					Merge: func(recs []byte) error {
						_, err := dst.Merge(recs, testParams, now)
						return err
					}})
				if err != nil || st.Records != have || dst.Len() != have {
					b.Fatalf("pulled %d of %d connections (table has %d): %v", st.Records, have, dst.Len(), err)
				}
				bytes += st.Bytes
			}
			b.ReportMetric(float64(have)*float64(b.N)/b.Elapsed().Seconds(), "conns/s")
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/resync")
			b.ReportMetric(float64(bytes)/float64(b.N)/1e6, "MB/resync")
		})
	}
}
