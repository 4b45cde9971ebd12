package conntrack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/packet"
)

var (
	snapParams = SnapshotParams{TotalNodes: 3, Seed: 0xdeadbeef}
	snapWall   = time.Unix(1_800_000_000, 0) // the save's wall clock in these tests
)

// tagTable is a table whose tags depend on the original source, as the
// dataplane's cluster buckets do.
func tagTable(t testing.TB, max int) *Table {
	return newTable(t, Config{MaxEntries: max, Tag: func(_ packet.Family, orig [16]byte) uint8 { return orig[3] % 3 }})
}

// snapFlows fills a table with connections of every kind at now and
// returns one tuple of each.
func snapFlows(t testing.TB, tb *Table, now int64) []packet.Tuple {
	var tuples []packet.Tuple
	for i := 0; i < 300; i++ {
		tuples = append(tuples, established(tb, i, now)) // TCP ESTABLISHED, assured
	}
	for _, v6 := range []bool{false, true} {
		syn := pkt(v6, c, packet.ProtoTCP, SYN) // TCP SYN_SENT
		syn.SrcPort = 1234
		tb.Track(syn, now)
		udp := pkt(v6, c, packet.ProtoUDP, 0) // UDP, replied
		tb.Track(udp, now)
		tb.Track(pkt(v6, s, packet.ProtoUDP, 0), now)
		icmp := pkt(v6, c, packet.ProtoICMP, 0) // an ICMP query
		if v6 {
			icmp.Proto = packet.ProtoICMPv6
		}
		icmp.ICMPQuery, icmp.ICMPType = true, 8
		if v6 {
			icmp.ICMPType = 128
		}
		tb.Track(icmp, now)
		gre := pkt(v6, c, 47, 0) // generic
		gre.HasPorts, gre.SrcPort, gre.DstPort = false, 0, 0
		tb.Track(gre, now)
		tuples = append(tuples, syn.Tuple, udp.Tuple, icmp.Tuple, gre.Tuple)
	}
	return tuples
}

func snapshot(t testing.TB, tb *Table, now int64) []byte {
	var buf bytes.Buffer
	n, err := tb.WriteSnapshot(&buf, snapParams, now, snapWall)
	if err != nil {
		t.Fatal(err)
	}
	if n != tb.Len() {
		t.Fatalf("wrote %d of %d connections", n, tb.Len())
	}
	return buf.Bytes()
}

// TestSnapshotRoundTrip: every connection comes back with its state, flags
// and tag, and expires when it would have had the daemon not stopped.
func TestSnapshotRoundTrip(t *testing.T) {
	old := tagTable(t, 0)
	t0 := int64(time.Hour) // the old process's clock
	tuples := snapFlows(t, old, t0)
	saveAt := t0 + int64(time.Second)
	data := snapshot(t, old, saveAt)
	if want := snapHeaderSize + old.Len()*snapRecordSize + 4; len(data) != want {
		t.Fatalf("%d bytes, want %d", len(data), want)
	}
	const down = 3 * time.Second
	nw := tagTable(t, 0)
	t1 := int64(5 * time.Millisecond) // the new process's clock starts again
	info, err := nw.ReadSnapshot(bytes.NewReader(data), snapParams, t1, snapWall.Add(down), 0)
	if err != nil {
		t.Fatal(err)
	}
	if info.Restored != old.Len() || info.Entries != old.Len() || nw.Len() != old.Len() || !info.Saved.Equal(snapWall) {
		t.Fatalf("info %+v, table %d, want %d", info, nw.Len(), old.Len())
	}
	for _, tp := range tuples {
		a, ok1 := old.Get(tp, saveAt)
		b, ok2 := nw.Get(tp, t1)
		if !ok1 || !ok2 {
			t.Fatalf("%v: old %v new %v", tp, ok1, ok2)
		}
		wantExp := t1 + (a.Expires - saveAt) - int64(down)
		if b.Expires != wantExp {
			t.Errorf("%v expires at %v, want %v", tp, time.Duration(b.Expires), time.Duration(wantExp))
		}
		a.Expires, b.Expires = 0, 0
		if a != b {
			t.Errorf("%v: restored %+v, saved %+v", tp, b, a)
		}
	}
	// The restored connections carry on: a mid-stream ACK is ESTABLISHED
	// (it would be INVALID tcp_no_syn in an empty table), with its tag.
	ack := pkt(false, c, packet.ProtoTCP, ACK)
	ack.Tuple = tuples[7]
	if r := nw.Track(ack, t1+int64(time.Second)); r.State != Established || r.Tag != ack.Src[3]%3 {
		t.Fatalf("mid-stream ACK after restore: %v %v tag %d", r.State, r.Reason, r.Tag)
	}
	// The replied UDP flow lived 1 s before the save and 3 s while down:
	// its next packet makes it assured, as 2 s of life after a reply do.
	udp := pkt(false, c, packet.ProtoUDP, 0)
	nw.Track(udp, t1)
	if info, _ := nw.Get(udp.Tuple, t1); !info.Assured {
		t.Errorf("UDP flow not assured after 4 s of life: its age was lost")
	}
	// A down time longer than some lifetimes: those are left out (the
	// ICMP queries and the UDP flows, replied too soon to have more than
	// their 30 s unreplied timeout).
	nw2 := tagTable(t, 0)
	info, err = nw2.ReadSnapshot(bytes.NewReader(data), snapParams, t1, snapWall.Add(45*time.Second), 0)
	if err != nil {
		t.Fatal(err)
	}
	if info.Expired != 4 || info.Restored != old.Len()-4 {
		t.Fatalf("after 45 s down: %+v", info)
	}
}

// TestSnapshotRefused: each reason to start empty is reported, with the
// table left empty.
func TestSnapshotRefused(t *testing.T) {
	old := tagTable(t, 0)
	snapFlows(t, old, int64(time.Hour))
	good := snapshot(t, old, int64(time.Hour))
	n := old.Len()
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name   string
		data   []byte
		params SnapshotParams
		max    int
		after  time.Duration // since the save, by the wall clock
		want   error
		msg    string
	}{
		{name: "other node count", data: good, params: SnapshotParams{TotalNodes: 4, Seed: 0xdeadbeef}, want: ErrSnapshotParams, msg: "total_nodes 3"},
		{name: "other seed", data: good, params: SnapshotParams{TotalNodes: 3, Seed: 1}, want: ErrSnapshotParams, msg: "hash_seed 0xdeadbeef"},
		{name: "other hash mode", data: good, params: SnapshotParams{TotalNodes: 3, Seed: 0xdeadbeef, Hash: 1}, want: ErrSnapshotParams},
		{name: "too old", data: good, after: DefaultSnapshotMaxAge + time.Second, want: ErrSnapshotStale, msg: "ago"},
		{name: "from the future", data: good, after: -time.Minute, want: ErrSnapshotStale, msg: "future"},
		{name: "unknown version", data: edit(func(b []byte) []byte { b[8] = 3; return b }), want: ErrSnapshotVersion, msg: "version 3"},
		{name: "not a snapshot", data: []byte(strings.Repeat("x", 100)), want: ErrSnapshotCorrupt, msg: "magic"},
		{name: "empty", data: nil, want: ErrSnapshotCorrupt, msg: "header truncated"},
		{name: "truncated header", data: good[:20], want: ErrSnapshotCorrupt, msg: "header truncated"},
		{name: "truncated record", data: good[:snapHeaderSize+10*snapRecordSize+7], want: ErrSnapshotCorrupt, msg: "truncated in record 10"},
		{name: "truncated checksum", data: good[:len(good)-2], want: ErrSnapshotCorrupt, msg: "checksum truncated"},
		{name: "flipped bit", data: edit(func(b []byte) []byte { b[snapHeaderSize+5*snapRecordSize+45] ^= 1; return b }), want: ErrSnapshotCorrupt, msg: "checksum"},
		{name: "bad record", data: edit(func(b []byte) []byte { b[snapHeaderSize+52] = 77; return b }), want: ErrSnapshotCorrupt, msg: "record 0"},
		{name: "trailing bytes", data: append(append([]byte(nil), good...), 0), want: ErrSnapshotCorrupt, msg: "after the checksum"},
		{name: "more than max_entries", data: good, max: n - 1, want: ErrSnapshotTooLarge, msg: "max_entries"},
		{name: "huge count", data: edit(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[40:], 1<<60); return b }), want: ErrSnapshotTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.params
			if p == (SnapshotParams{}) {
				p = snapParams
			}
			tb := tagTable(t, tc.max)
			_, err := tb.ReadSnapshot(bytes.NewReader(tc.data), p, 0, snapWall.Add(tc.after), 0)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want %v with %q", err, tc.want, tc.msg)
			}
			if tb.Len() != 0 {
				t.Fatalf("%d connections left after a refused snapshot", tb.Len())
			}
		})
	}
	// Reading into a table in use is refused.
	if _, err := old.ReadSnapshot(bytes.NewReader(good), snapParams, 0, snapWall, 0); err == nil {
		t.Fatal("read into a non-empty table")
	}
}

// TestSnapshotSkipsExpired: what has expired at the save is not written.
func TestSnapshotSkipsExpired(t *testing.T) {
	tb := tagTable(t, 0)
	snapFlows(t, tb, 0)
	var buf bytes.Buffer
	// At 31 s the ICMP queries and UDP flows (30 s) have expired, nothing else.
	n, err := tb.WriteSnapshot(&buf, snapParams, int64(31*time.Second), snapWall)
	if err != nil || n != tb.Len()-4 {
		t.Fatalf("wrote %d of %d, %v", n, tb.Len(), err)
	}
}

// TestRestoredTrackAllocs: tracking packets of restored connections
// allocates nothing; the hot path is the same as for any entry.
func TestRestoredTrackAllocs(t *testing.T) {
	old := tagTable(t, 0)
	tuples := snapFlows(t, old, 0)
	nw := tagTable(t, 0)
	if _, err := nw.ReadSnapshot(bytes.NewReader(snapshot(t, old, 0)), snapParams, 0, snapWall, 0); err != nil {
		t.Fatal(err)
	}
	ps := make([]*packet.Parsed, 64)
	for i := range ps {
		p := pkt(false, c, packet.ProtoTCP, ACK)
		p.Tuple = tuples[i]
		ps[i] = p
	}
	out := make([]Result, 64)
	if a := testing.AllocsPerRun(100, func() { nw.TrackBatch(ps, int64(time.Second), out) }); a != 0 {
		t.Fatalf("TrackBatch of restored connections allocates %v times", a)
	}
	for i, r := range out {
		if r.State != Established {
			t.Fatalf("packet %d: %v %v", i, r.State, r.Reason)
		}
	}
}

// FuzzReadSnapshot: the decoder never panics, never reads past its bound,
// leaves the table empty on error, and what it accepts writes back to a
// snapshot that reads the same.
func FuzzReadSnapshot(f *testing.F) {
	small := tagTable(f, 0)
	for i := 0; i < 3; i++ {
		established(small, i, 0)
	}
	small.Track(pkt(true, c, packet.ProtoUDP, 0), 0)
	good := snapshot(f, small, 0)
	f.Add(good)
	f.Add(good[:snapHeaderSize+snapRecordSize+4])
	f.Add(snapshot(f, tagTable(f, 0), 0))
	// Two tables, emptied after each input (making a table costs more
	// than reading most inputs).
	tb, tb2 := tagTable(f, 1024), tagTable(f, 1024)
	f.Fuzz(func(t *testing.T, data []byte) {
		defer tb.clear()
		info, err := tb.ReadSnapshot(bytes.NewReader(data), snapParams, 0, snapWall, 0)
		if err != nil {
			if tb.Len() != 0 {
				t.Fatalf("%d connections left after %v", tb.Len(), err)
			}
			return
		}
		if info.Restored != tb.Len() || info.Restored+info.Expired != info.Entries || info.Entries > 1024 {
			t.Fatalf("info %+v, table %d", info, tb.Len())
		}
		again := snapshot(t, tb, 0)
		defer tb2.clear()
		if info2, err := tb2.ReadSnapshot(bytes.NewReader(again), snapParams, 0, snapWall, 0); err != nil || info2.Restored != info.Restored {
			t.Fatalf("re-read: %+v, %v (first %+v)", info2, err, info)
		}
	})
}

// TestSnapshotFullTable: a snapshot of a table at its max_entries comes
// back whole, though the new table's random seed spreads the entries over
// its shards differently from the old one (some shards get more than
// their share of max_entries).
func TestSnapshotFullTable(t *testing.T) {
	old := tagTable(t, 0)
	for i := 0; i < 2000; i++ {
		established(old, i, 0)
	}
	nw := tagTable(t, 2000)
	info, err := nw.ReadSnapshot(bytes.NewReader(snapshot(t, old, 0)), snapParams, 0, snapWall, 0)
	if err != nil || info.Restored != 2000 || nw.Len() != 2000 {
		t.Fatalf("restored %+v, %v; table %d, want 2000", info, err, nw.Len())
	}
}

// TestSnapshotKeepsTCPSequenceField: for TCP the entry's born field holds
// the end sequence number of an ignored SYN (the kernel's last_end), not a
// time. A restore must give it back unchanged, not shifted as an age, so
// the SYN/ACK answering that SYN still resynchronises the connection.
func TestSnapshotKeepsTCPSequenceField(t *testing.T) {
	old := tagTable(t, 0)
	t0 := int64(time.Hour)
	est := established(old, 1, t0)
	// The server resets the established connection, then the client's new
	// SYN on the same ports is ignored (the entry is in CLOSE) and its end
	// sequence number kept.
	rst := pkt(false, s, packet.ProtoTCP, RST)
	rst.Tuple = est
	rst.Src, rst.Dst, rst.SrcPort, rst.DstPort = est.Dst, est.Src, est.DstPort, est.SrcPort
	old.Track(rst, t0+1)
	syn := pkt(false, c, packet.ProtoTCP, SYN)
	syn.Tuple = est
	syn.Seq = 0x7000_0000
	old.Track(syn, t0+2)
	born := func(tb *Table, now int64) uint32 {
		var k key
		e, _, ok := tb.lookup(&k, &est, now)
		if !ok {
			t.Fatal("connection not found")
		}
		return e.born
	}
	want := born(old, t0+3)
	if want != 0x7000_0001 {
		t.Skipf("the tracker kept %#x for the ignored SYN, not its end sequence: nothing to carry", want)
	}
	data := snapshot(t, old, t0+int64(time.Second))
	nw := tagTable(t, 0)
	if _, err := nw.ReadSnapshot(bytes.NewReader(data), snapParams, int64(time.Millisecond), snapWall.Add(2*time.Second), 0); err != nil {
		t.Fatal(err)
	}
	if got := born(nw, 2*int64(time.Millisecond)); got != want {
		t.Fatalf("restored sequence field %#x, want %#x", got, want)
	}
}
