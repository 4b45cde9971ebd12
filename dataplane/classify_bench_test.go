package dataplane

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/packet"
)

// BenchmarkClassify is the per-packet classify step without forwarding:
// parse, track (TrackBatch), decide the owner, on a realistic mix: 90% of
// packets belong to 100K established flows, 10% open new ones.
func BenchmarkClassify(b *testing.B) {
	m := cluster.LocalNode(3, 1, 0xdeadbeef)
	ct, err := conntrack.NewTable(conntrack.Config{Tag: func(fam uint8, orig [16]byte) uint8 {
		return uint8(m.Bucket4((*[4]byte)(orig[:4])))
	}})
	if err != nil {
		b.Fatal(err)
	}
	const flows = 100000
	base := udpFrame(b, netip.MustParseAddr("198.51.0.1"), 64, false)
	frameFor := func(i uint32) []byte {
		f := append([]byte(nil), base...)
		binary.BigEndian.PutUint32(f[14+12:], 0xc6330000+i)
		binary.BigEndian.PutUint16(f[14+10:], 0)
		binary.BigEndian.PutUint16(f[14+10:], packet.Checksum(f[14:34]))
		return f
	}
	var p packet.Parsed
	for i := uint32(0); i < flows; i++ {
		p.Decode(frameFor(i))
		ct.Track(&p, int64(time.Hour))
	}
	// 1024 frames: 9 of 10 from the table, 1 of 10 new (a fresh source each round).
	frames := make([][]byte, 1024)
	for i := range frames {
		frames[i] = frameFor(uint32(i*97) % flows)
	}
	var parsed [64]packet.Parsed
	ptrs := make([]*packet.Parsed, 0, 64)
	var res [64]conntrack.Result
	owned := 0
	next := uint32(flows)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := (i * 64) % len(frames)
		ptrs = ptrs[:0]
		for k := 0; k < 64; k++ {
			f := frames[off+k]
			if k%10 == 9 {
				binary.BigEndian.PutUint32(f[14+12:], 0xc6330000+next) // a new flow
				binary.BigEndian.PutUint16(f[14+10:], 0)
				binary.BigEndian.PutUint16(f[14+10:], packet.Checksum(f[14:34]))
				next++
			}
			if parsed[k].Decode(f) == packet.OK {
				ptrs = append(ptrs, &parsed[k])
			}
		}
		ct.TrackBatch(ptrs, int64(time.Hour), res[:])
		for k := range ptrs {
			if res[k].State != conntrack.Invalid && m.OwnsNode(int(res[k].Tag)) {
				owned++
			}
		}
	}
	pkts := float64(b.N) * 64
	b.ReportMetric(b.Elapsed().Seconds()*1e9/pkts, "ns/pkt")
	b.ReportMetric(pkts/b.Elapsed().Seconds(), "pps")
	_ = owned
}
