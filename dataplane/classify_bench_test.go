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
// parse, track (TrackBatch), decide the owner, on a realistic steady-state
// mix: 100K established (replied) UDP flows in the table, 9 of 10 packets
// from 16K of them, 1 of 10 the first packet of a new flow. New flows get a
// 10 ms unreplied timeout and the table is swept (outside the timing, as
// the daemon's expiry runs on its own goroutine) while the clock advances
// 10 us per batch, so the table holds a steady number of connections
// instead of filling up and evicting.
func BenchmarkClassify(b *testing.B) {
	m := cluster.LocalNode(3, 1, 0xdeadbeef)
	to := conntrack.DefaultTimeouts()
	to.UDPUnreplied = 10 * time.Millisecond
	ct, err := conntrack.NewTable(conntrack.Config{Timeouts: to, Tag: func(fam packet.Family, orig [16]byte) uint8 {
		return uint8(m.Bucket4((*[4]byte)(orig[:4])))
	}})
	if err != nil {
		b.Fatal(err)
	}
	const flows = 100000
	base := udpFrame(b, netip.MustParseAddr("198.51.0.1"), 64, false)
	frameFor := func(src uint32, reply bool) []byte {
		f := append([]byte(nil), base...)
		binary.BigEndian.PutUint32(f[14+12:], src)
		if reply { // swap addresses and ports
			copy(f[14+12:], f[14+16:14+20])
			binary.BigEndian.PutUint32(f[14+16:], src)
			copy(f[34:], []byte{f[36], f[37], f[34], f[35]})
		}
		binary.BigEndian.PutUint16(f[14+10:], 0)
		binary.BigEndian.PutUint16(f[14+10:], packet.Checksum(f[14:34]))
		return f
	}
	now := int64(time.Hour)
	var p packet.Parsed
	for i := uint32(0); i < flows; i++ {
		for _, reply := range []bool{false, true} {
			if p.Decode(frameFor(0xc6330000+i, reply)) != packet.OK {
				b.Fatal("setup frame does not parse")
			}
			if r := ct.Track(&p, now); r.State == conntrack.Invalid {
				b.Fatalf("setup: %v", r.Reason)
			}
		}
	}
	established := make([][]byte, 16384)
	for i := range established {
		established[i] = frameFor(0xc6330000+uint32(i*97)%flows, false)
	}
	// New flows' sources come round again only after about 100 ms of
	// benchmark time, long after their 10 ms timeout.
	fresh := make([][]byte, 65536)
	for i := range fresh {
		fresh[i] = frameFor(0x0a000000+uint32(i), false)
	}
	var parsed [64]packet.Parsed
	ptrs := make([]*packet.Parsed, 0, 64)
	var res [64]conntrack.Result
	owned, e, n := 0, 0, 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now += int64(10 * time.Microsecond)
		ptrs = ptrs[:0]
		for k := 0; k < 64; k++ {
			var f []byte
			if k%10 == 9 {
				f = fresh[n&(len(fresh)-1)]
				n++
			} else {
				f = established[e&(len(established)-1)]
				e++
			}
			if parsed[k].Decode(f) == packet.OK {
				ptrs = append(ptrs, &parsed[k])
			}
		}
		ct.TrackBatch(ptrs, now, res[:])
		for k := range ptrs {
			if res[k].State != conntrack.Invalid && m.OwnsNode(int(res[k].Tag)) {
				owned++
			}
		}
		if i%256 == 255 {
			b.StopTimer()
			ct.Expire(now, 256)
			b.StartTimer()
		}
	}
	pkts := float64(b.N) * 64
	b.ReportMetric(b.Elapsed().Seconds()*1e9/pkts, "ns/pkt")
	b.ReportMetric(pkts/b.Elapsed().Seconds(), "pps")
	if st := ct.Stats(); b.N > 1 && (st.Evicted != 0 || st.TableFull != 0) {
		b.Fatalf("the table filled up (evicted %d, full %d): not a steady state", st.Evicted, st.TableFull)
	}
	_ = owned
}
