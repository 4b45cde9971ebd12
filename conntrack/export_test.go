package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/packet"
)

// exportAll exports tb at now and returns the records, checking what
// emit was given: whole records, at most 64 KiB, never empty.
func exportAll(t testing.TB, tb *Table, now int64) []byte {
	t.Helper()
	var out []byte
	n, err := tb.Export(now, func(recs []byte) error {
		if len(recs) == 0 || len(recs)%RecordSize != 0 || len(recs) > 64<<10 {
			return fmt.Errorf("emit given %d bytes", len(recs))
		}
		out = append(out, recs...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n*RecordSize != len(out) {
		t.Fatalf("Export says %d records, emit got %d bytes", n, len(out))
	}
	return out
}

// entries returns a copy of every entry in the table (expired or not), by
// key.
func entries(tb *Table) map[key]entry {
	m := map[key]entry{}
	for i := range tb.shards {
		sh := &tb.shards[i]
		sh.mu.Lock()
		for _, s := range sh.tab.Load().slots {
			if s.h != 0 {
				m[s.k] = s.e
			}
		}
		sh.mu.Unlock()
	}
	return m
}

// findKey returns k's entry, expired or not.
func findKey(tb *Table, k *key) (entry, bool) {
	h := k.hash(&tb.seed)
	sh := tb.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	tab := sh.tab.Load()
	if i, ok := tab.find(k, h); ok {
		return tab.slots[i].e, true
	}
	return entry{}, false
}

// TestExportMergeRoundTrip: Export, then Merge into an empty table on
// another clock, gives every live connection back with its state, flags,
// tag, remaining lifetime, age (datagrams) and sequence field (TCP); the
// lifetimes include what the fast path saw.
func TestExportMergeRoundTrip(t *testing.T) {
	src := tagTable(t, 0)
	fp := newFake()
	src.SetOffloader(fp)
	t0 := int64(time.Hour)
	snapFlows(t, src, t0)
	// A UDP flow whose later packets, reply included, only the fast path
	// carried (as in TestOffloadSnapshot).
	only := pkt(false, c, packet.ProtoUDP, 0)
	only.SrcPort = 5555
	src.Track(only, t0) // a datagram flow is installed at its second packet
	if r := src.Track(only, t0); r.Offload != OffloadInstall {
		t.Fatalf("UDP flow not installed: %+v", r)
	}
	fp.set(only.Tuple, fakeSeen{orig: t0 + 25*int64(time.Second), reply: t0 + 26*int64(time.Second)})
	// One connection already expired at the export: not sent.
	gone := pkt(false, c, packet.ProtoUDP, 0)
	gone.SrcPort = 6666
	src.Track(gone, t0-int64(time.Minute))

	now1 := t0 + 28*int64(time.Second)
	recs := exportAll(t, src, now1)
	// What the export sent of the installed connections: Export refreshes
	// its copies from the fast path, not the table (the sweep does).
	src.refreshAllOffloaded(now1)
	before := entries(src)
	live := 0
	for _, e := range before {
		if e.expires > now1 {
			live++
		}
	}
	if len(recs)/RecordSize != live || live != src.Len()-1 {
		t.Fatalf("%d records, %d live connections, %d in the table", len(recs)/RecordSize, live, src.Len())
	}

	dst := tagTable(t, 0)
	now2 := int64(5 * time.Millisecond) // the other node's clock
	st, err := dst.Merge(recs, snapParams, now2)
	if err != nil || st != (MergeStats{Added: live}) {
		t.Fatalf("merge: %+v, %v; want %d added", st, err, live)
	}
	after := entries(dst)
	if len(after) != live {
		t.Fatalf("%d connections merged, want %d", len(after), live)
	}
	ms1, ms2 := uint32(now1/1e6), uint32(now2/1e6)
	for k, a := range before {
		b, ok := after[k]
		if a.expires <= now1 {
			if ok {
				t.Errorf("%x: expired connection exported", k.w)
			}
			continue
		}
		switch {
		case !ok:
			t.Errorf("%x: missing after the merge", k.w)
		case a.state != b.state || a.flags != b.flags || a.tag != b.tag:
			t.Errorf("%x: state %d flags %#x tag %d, want %d %#x %d", k.w, b.state, b.flags, b.tag, a.state, a.flags, a.tag)
		case b.expires-now2 != a.expires-now1:
			t.Errorf("%x: %v left, want %v", k.w, time.Duration(b.expires-now2), time.Duration(a.expires-now1))
		case isTCP(&k) && b.born != a.born:
			t.Errorf("%x: TCP sequence field %#x, want %#x", k.w, b.born, a.born)
		case !isTCP(&k) && ms2-b.born != ms1-a.born:
			t.Errorf("%x: age %d ms, want %d ms", k.w, ms2-b.born, ms1-a.born)
		case b.fp != 0:
			t.Errorf("%x: merged connection marked installed (%#x)", k.w, b.fp)
		}
	}
	// The fast path's reply and lifetime came along: replied at 26 s,
	// assured, 120 s from then.
	info, ok := dst.Get(only.Tuple, now2)
	if !ok || !info.SeenReply || !info.Assured || info.Expires != now2+int64(118*time.Second) {
		t.Fatalf("fast-path-only UDP flow after the merge: %+v, %v", info, ok)
	}
	// The merged connections carry on: a mid-stream ACK is ESTABLISHED.
	ack := pkt(false, c, packet.ProtoTCP, ACK)
	binary.BigEndian.PutUint32(ack.Src[:4], 0x0a000007)
	if r := dst.Track(ack, now2+1); r.State != Established || r.Tag != ack.Src[3]%3 {
		t.Fatalf("mid-stream ACK after the merge: %v %v tag %d", r.State, r.Reason, r.Tag)
	}
}

// lockProbe is an Offloader that reports whether it was asked about a
// connection while the connection's shard was locked.
// lockProbe is an Offloader that says every connection it is asked about
// is idle in the fast path, and counts its Seen and Forget calls and how
// many of them came while the connection's shard was locked.
type lockProbe struct {
	tb                              *Table
	seens, locked, forgets, fLocked int
}

// shardLocked reports whether the shard of the connection orig is locked.
func (l *lockProbe) shardLocked(orig *packet.Tuple) bool {
	var k key
	setKey(&k, orig, true)
	sh := l.tb.shardOf(k.hash(&l.tb.seed))
	if !sh.mu.TryLock() {
		return true
	}
	sh.mu.Unlock()
	return false
}

func (l *lockProbe) Seen(orig *packet.Tuple) (int64, int64, bool) {
	l.seens++
	if l.shardLocked(orig) {
		l.locked++
	}
	return 0, 0, true
}

func (l *lockProbe) Forget(orig *packet.Tuple) {
	l.forgets++
	if l.shardLocked(orig) {
		l.fLocked++
	}
}

// TestExportAsksFastPathUnlocked: Export asks the fast path about the
// installed connections (a system call each) without holding their
// shard's lock, so no worker waits for it; an installed connection past
// its timeout that the fast path carried since is exported live, and one
// it did not carry is not.
func TestExportAsksFastPathUnlocked(t *testing.T) {
	tb := newTable(t, Config{})
	probe := &lockProbe{tb: tb}
	tb.SetOffloader(probe)
	for i := range 100 {
		p := pkt(false, c, packet.ProtoUDP, 0)
		p.SrcPort = uint16(i)
		tb.Track(p, mt0)
		tb.Track(p, mt0) // installed at its second packet
	}
	if n, err := tb.Export(mtx, func([]byte) error { return nil }); err != nil || n != 100 || probe.seens != 100 || probe.locked != 0 {
		t.Fatalf("exported %d (%v); %d questions to the fast path, %d under the shard's lock", n, err, probe.seens, probe.locked)
	}
	// 40 s later the 30 s timeout has run out, but the fast path carried
	// one of them 5 s ago (the sweep has not asked yet).
	fp := newFake()
	tb.SetOffloader(fp)
	carried := pkt(false, c, packet.ProtoUDP, 0)
	carried.SrcPort = 7
	fp.set(carried.Tuple, fakeSeen{orig: mt0 + int64(35*time.Second)})
	recs := exportAll(t, tb, mt0+int64(40*time.Second))
	if len(recs) != RecordSize {
		t.Fatalf("%d records, want the one the fast path carried", len(recs)/RecordSize)
	}
	var k key
	var e entry
	if rem, _, _ := getRecord(recs, &k, &e); rem != int64(25*time.Second) {
		t.Fatalf("%v left, want 25 s (30 s after the fast path's last packet)", time.Duration(rem))
	}
}

// TestExportChunks: a table larger than one emit's 64 KiB is handed over
// in full chunks, then the rest; an error from emit stops the export and
// comes back wrapped.
func TestExportChunks(t *testing.T) {
	tb := tagTable(t, 0)
	const n = 3000
	for i := range n {
		p := pkt(false, c, packet.ProtoUDP, 0)
		binary.BigEndian.PutUint32(p.Src[:4], 0x0a000000+uint32(i))
		tb.Track(p, 0)
	}
	var sizes []int
	got, err := tb.Export(1, func(recs []byte) error { sizes = append(sizes, len(recs)); return nil })
	per := 64 << 10 / RecordSize
	if want := []int{per * RecordSize, per * RecordSize, (n - 2*per) * RecordSize}; err != nil || got != n || fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Fatalf("exported %d (%v) in %v, want %d in %v", got, err, sizes, n, want)
	}
	boom := errors.New("peer gone")
	calls := 0
	got, err = tb.Export(1, func([]byte) error {
		if calls++; calls == 2 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || got != per || calls != 2 || !strings.Contains(err.Error(), "export connections") {
		t.Fatalf("failing emit: %d, %v after %d calls", got, err, calls)
	}
	if got, err := newTable(t, Config{}).Export(1, func([]byte) error { return boom }); got != 0 || err != nil {
		t.Fatalf("empty table: %d, %v (emit must not be called)", got, err)
	}
}

// TestExportConcurrent: Export runs while workers track both directions
// of new flows and the sweeper expires: every export is well formed and
// merges, and holds every connection that existed before it started (run
// with -race: go test -race -run Export ./conntrack/).
func TestExportConcurrent(t *testing.T) {
	tb := tagTable(t, 0)
	fp := newFake()
	tb.SetOffloader(fp)
	tick := testClock(time.Microsecond)
	const static = 500
	var keys []packet.Tuple
	for i := range static {
		keys = append(keys, established(tb, i, tick()))
	}
	var workers, sweeper sync.WaitGroup
	trackBothDirections(tb, 3000, &workers, tick)
	tracked := make(chan struct{})
	go func() { workers.Wait(); close(tracked) }()
	stop := make(chan struct{})
	sweeper.Add(1)
	go func() {
		defer sweeper.Done()
		for {
			select {
			case <-stop:
				return
			default:
				tb.Expire(tick(), 16)
			}
		}
	}()
	// Export again and again while the workers run, and once after.
	for exports, last := 0, false; !last; exports++ {
		select {
		case <-tracked:
			last = exports >= 3
		default:
		}
		now := tick()
		recs := exportAll(t, tb, now)
		dst := tagTable(t, 0)
		st, err := dst.Merge(recs, snapParams, now)
		if err != nil || st.Added != len(recs)/RecordSize || st.Records() != st.Added {
			t.Fatalf("merge of a concurrent export: %+v, %v", st, err)
		}
		for _, tp := range keys {
			if info, ok := dst.Get(tp, now); !ok || info.TCPState != TCPEstablished {
				t.Fatalf("%v missing from a concurrent export (%+v)", tp, info)
			}
		}
	}
	close(stop)
	sweeper.Wait()
}

// mergeCase is one rule of Merge: the local table and the peer's are
// filled by setup (same clock: tx is the export's and the merge's time),
// the peer's export merged into the local one.
type mergeCase struct {
	name  string
	cfg   Config // local table's (Tag is set)
	setup func(local, peer *Table)
	edit  func(recs []byte) // change the records before the merge
	want  MergeStats
	check func(t *testing.T, local, peer *Table, fp *fakeFastPath)
}

const (
	mt0 = int64(time.Hour)
	mtx = mt0 + int64(10*time.Second) // export and merge
)

func at(d time.Duration) int64 { return mt0 + int64(d) }

// udpFrom tracks one UDP packet from host from (c: the client's request,
// s: the server's reply) at now.
func udpFrom(tb *Table, from string, now int64) Result {
	return tb.Track(pkt(false, from, packet.ProtoUDP, 0), now)
}

func udpTuple() packet.Tuple { return pkt(false, c, packet.ProtoUDP, 0).Tuple }

func tcpTuple() packet.Tuple { return pkt(false, c, packet.ProtoTCP, 0).Tuple }

// est0 is the connection established(tb, 0, now) makes.
func est0() packet.Tuple {
	p := pkt(false, c, packet.ProtoTCP, 0)
	binary.BigEndian.PutUint32(p.Src[:4], 0x0a000000)
	return p.Tuple
}

// gre is a generic protocol's packet (no ports: never in the fast path).
func gre(from string) *packet.Parsed {
	p := pkt(false, from, 47, 0)
	p.HasPorts, p.SrcPort, p.DstPort = false, 0, 0
	return p
}

func mustGet(t *testing.T, tb *Table, tp packet.Tuple) Info {
	t.Helper()
	info, ok := tb.Get(tp, mtx)
	if !ok {
		t.Fatalf("%v not in the table", tp)
	}
	return info
}

var mergeCases = []mergeCase{
	{
		name: "absent UDP added",
		setup: func(local, peer *Table) {
			udpFrom(peer, c, at(0))
			udpFrom(peer, s, at(time.Second))
		},
		want: MergeStats{Added: 1},
		check: func(t *testing.T, local, peer *Table, _ *fakeFastPath) {
			l, p := mustGet(t, local, udpTuple()), mustGet(t, peer, udpTuple())
			if l != p {
				t.Fatalf("merged %+v, peer has %+v", l, p)
			}
		},
	},
	{
		name:  "absent TCP added",
		setup: func(local, peer *Table) { established(peer, 1, at(0)) },
		want:  MergeStats{Added: 1},
		check: func(t *testing.T, local, peer *Table, _ *fakeFastPath) {
			if n := local.Len(); n != 1 {
				t.Fatalf("%d connections", n)
			}
		},
	},
	{
		name: "table full: counted, nothing evicted",
		cfg:  Config{MaxEntries: 3},
		setup: func(local, peer *Table) {
			// Three local connections, unassured (evictable for a
			// packet, never for a merge), merged from another table
			// (the per-shard share of 3 connections is 1: tracked, two
			// in one shard would evict each other).
			other, _ := NewTable(Config{})
			for _, port := range []uint16{40000, 1, 2} {
				p := pkt(false, c, packet.ProtoUDP, 0)
				p.SrcPort = port
				other.Track(p, at(0))
			}
			other.Export(mtx, func(recs []byte) error { _, err := local.Merge(recs, SnapshotParams{TotalNodes: 1}, mtx); return err })
			udpFrom(peer, c, at(0)) // also local
			for i := range 4 {
				established(peer, i, at(0))
			}
		},
		want: MergeStats{Kept: 1, Full: 4},
		check: func(t *testing.T, local, peer *Table, _ *fakeFastPath) {
			if n := local.Len(); n != 3 {
				t.Fatalf("%d connections, want the 3 local ones", n)
			}
		},
	},
	{
		name: "TCP present: local state kept, later expiry",
		setup: func(local, peer *Table) {
			syn := pkt(false, c, packet.ProtoTCP, SYN)
			syn.Tuple = est0()
			local.Track(syn, at(0))     // SYN_SENT, 2 min
			established(peer, 0, at(0)) // ESTABLISHED, 5 days
		},
		want: MergeStats{Kept: 1},
		check: func(t *testing.T, local, peer *Table, _ *fakeFastPath) {
			l := mustGet(t, local, est0())
			if l.TCPState != TCPSynSent || l.Expires != at(0)+int64(5*24*time.Hour) {
				t.Fatalf("merged TCP: %v expiring in %v, want SYN_SENT with the peer's 5 days", l.TCPState, time.Duration(l.Expires-at(0)))
			}
		},
	},
	{
		name: "TCP present: earlier peer expiry ignored",
		setup: func(local, peer *Table) {
			established(local, 0, at(5*time.Second))
			established(peer, 0, at(0))
		},
		want: MergeStats{Kept: 1},
		check: func(t *testing.T, local, peer *Table, _ *fakeFastPath) {
			if n := len(entries(local)); n != 1 {
				t.Fatalf("%d entries", n)
			}
			for _, e := range entries(local) {
				if e.expires != at(5*time.Second)+int64(5*24*time.Hour) {
					t.Fatalf("expiry %v, want the local one", time.Duration(e.expires-at(0)))
				}
			}
		},
	},
	{
		name: "TCP present in reverse: never replaced",
		cfg:  Config{TCPLoose: true},
		setup: func(local, peer *Table) {
			local.Track(pkt(false, s, packet.ProtoTCP, ACK), at(0)) // picked up from the server's side
			peer.Track(pkt(false, c, packet.ProtoTCP, SYN), at(-time.Minute))
			p := pkt(false, s, packet.ProtoTCP, SYN|ACK)
			peer.Track(p, at(-time.Minute))
			peer.Track(pkt(false, c, packet.ProtoTCP, ACK), at(-time.Minute))
		},
		want: MergeStats{Kept: 1},
		check: func(t *testing.T, local, peer *Table, _ *fakeFastPath) {
			if l, p := mustGet(t, local, tcpTuple()), mustGet(t, peer, tcpTuple()); l.Orig == p.Orig {
				t.Fatalf("local TCP entry replaced: %+v", l)
			}
		},
	},
	{
		name: "UDP same direction: kept, reply and assured added, later expiry",
		setup: func(local, peer *Table) {
			udpFrom(local, c, at(5*time.Second)) // unreplied: 30 s
			udpFrom(local, c, at(5*time.Second)) // installed at its second packet
			udpFrom(peer, c, at(0))
			udpFrom(peer, s, at(time.Second))
			udpFrom(peer, c, at(4*time.Second)) // 2 s after the reply: assured, 120 s
		},
		want: MergeStats{Kept: 1},
		check: func(t *testing.T, local, peer *Table, _ *fakeFastPath) {
			l := mustGet(t, local, udpTuple())
			if !l.SeenReply || !l.Assured || l.Expires != at(124*time.Second) || l.Orig != pkt(false, c, 0, 0).Src || !l.Offloaded {
				t.Fatalf("merged UDP: %+v", l)
			}
		},
	},
	{
		name: "UDP same direction: local later expiry kept",
		setup: func(local, peer *Table) {
			udpFrom(local, c, at(8*time.Second))
			udpFrom(peer, c, at(0))
		},
		want: MergeStats{Kept: 1},
		check: func(t *testing.T, local, peer *Table, _ *fakeFastPath) {
			if l := mustGet(t, local, udpTuple()); l.SeenReply || l.Expires != at(38*time.Second) {
				t.Fatalf("merged UDP: %+v", l)
			}
		},
	},
	{
		name: "UDP reversed, peer older: replaced, fast path forgets it",
		setup: func(local, peer *Table) {
			udpFrom(local, s, at(5*time.Second)) // the reply seen first; installed at its second packet
			if r := udpFrom(local, s, at(5*time.Second)); r.Offload != OffloadInstall {
				panic("not installed")
			}
			udpFrom(peer, c, at(0))
			udpFrom(peer, s, at(time.Second))
		},
		want: MergeStats{Replaced: 1},
		check: func(t *testing.T, local, peer *Table, fp *fakeFastPath) {
			l, p := mustGet(t, local, udpTuple()), mustGet(t, peer, udpTuple())
			if l != p {
				t.Fatalf("replaced by %+v, peer has %+v", l, p)
			}
			if _, n := fp.counts(); n != 1 || fp.forgot[0] != pkt(false, s, packet.ProtoUDP, 0).Tuple {
				t.Fatalf("fast path forgot %v, want the reversed connection", fp.forgot)
			}
			// The next packet installs the connection in its right
			// direction, with its right tag.
			r := udpFrom(local, c, mtx)
			if r.Dir != Original || r.Offload != OffloadInstall || r.Tag != pkt(false, c, 0, 0).Src[3]%3 {
				t.Fatalf("request after the replace: %+v", r)
			}
		},
	},
	{
		name: "UDP reversed, peer younger: replaced too (the puller was away; ages within a millisecond decide nothing)",
		setup: func(local, peer *Table) {
			udpFrom(local, s, at(0))
			udpFrom(peer, c, at(5*time.Millisecond))
		},
		want: MergeStats{Replaced: 1},
		check: func(t *testing.T, local, peer *Table, fp *fakeFastPath) {
			if l := mustGet(t, local, udpTuple()); l.Orig != pkt(false, c, 0, 0).Src {
				t.Fatalf("local entry not replaced by the peer's: %+v", l)
			}
		},
	},
	{
		name: "expired local entry: added",
		setup: func(local, peer *Table) {
			local.Track(gre(s), at(-11*time.Minute)) // reversed, gone at -1 min (10 min timeout), not swept
			peer.Track(gre(c), at(0))
		},
		want: MergeStats{Added: 1},
		check: func(t *testing.T, local, peer *Table, _ *fakeFastPath) {
			if l, p := mustGet(t, local, gre(c).Tuple), mustGet(t, peer, gre(c).Tuple); l != p {
				t.Fatalf("merged %+v, peer has %+v", l, p)
			}
		},
	},
	{
		name: "record without lifetime: expired",
		setup: func(local, peer *Table) {
			udpFrom(peer, c, at(0))
			established(peer, 0, at(0))
		},
		edit: func(recs []byte) {
			binary.LittleEndian.PutUint64(recs[40:], 0)
			binary.LittleEndian.PutUint64(recs[RecordSize+40:], 1<<63) // negative
		},
		want: MergeStats{Expired: 2},
		check: func(t *testing.T, local, peer *Table, _ *fakeFastPath) {
			if n := local.Len(); n != 0 {
				t.Fatalf("%d connections", n)
			}
		},
	},
	{
		name:  "lifetime beyond this table's timeouts: cut",
		setup: func(local, peer *Table) { udpFrom(peer, c, at(0)) },
		edit:  func(recs []byte) { binary.LittleEndian.PutUint64(recs[40:], 1<<62) },
		want:  MergeStats{Added: 1},
		check: func(t *testing.T, local, peer *Table, _ *fakeFastPath) {
			if l := mustGet(t, local, udpTuple()); l.Expires != mtx+int64(5*24*time.Hour) {
				t.Fatalf("expires in %v, want the longest timeout (5 days)", time.Duration(l.Expires-mtx))
			}
		},
	},
}

// TestMergeRules: what Merge does with each record, by what the local
// table holds.
func TestMergeRules(t *testing.T) {
	for _, tc := range mergeCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Tag = func(_ packet.Family, orig [16]byte) uint8 { return orig[3] % 3 }
			local := newTable(t, cfg)
			fp := newFake()
			local.SetOffloader(fp)
			peer := tagTable(t, 0)
			tc.setup(local, peer)
			recs := exportAll(t, peer, mtx)
			if tc.edit != nil {
				tc.edit(recs)
			}
			st, err := local.Merge(recs, snapParams, mtx)
			if err != nil || st != tc.want {
				t.Fatalf("merge: %+v, %v; want %+v", st, err, tc.want)
			}
			tc.check(t, local, peer, fp)
		})
	}
}

// TestMergeCorrupt: a bad record is refused with an error naming it, and
// nothing of the chunk is applied, not even the good records before it.
func TestMergeCorrupt(t *testing.T) {
	peer := tagTable(t, 0)
	for i := range 4 {
		established(peer, i, mt0)
	}
	good := exportAll(t, peer, mtx)
	at := func(i, off int) int { return i*RecordSize + off }
	for _, tc := range []struct {
		name string
		edit func(b []byte) []byte
		p    SnapshotParams
		want string
	}{
		{"short", func(b []byte) []byte { return b[:len(b)-1] }, snapParams, "not a whole number"},
		{"family", func(b []byte) []byte { b[at(1, 37)] = 9; return b }, snapParams, "record 1 of 4: address family 9"},
		{"tag", func(b []byte) []byte { b[at(3, 54)] = 3; return b }, snapParams, "record 3 of 4: tag 3 for 3 nodes"},
		{"pad", func(b []byte) []byte { b[at(2, 55)] = 1; return b }, snapParams, "record 2 of 4: reserved bits set"},
		{"TCP state", func(b []byte) []byte { b[at(3, 52)] = 200; return b }, snapParams, "record 3 of 4: TCP state 200"},
		{"key order", func(b []byte) []byte {
			copy(b[at(1, 0):at(1, 16)], b[at(1, 16):at(1, 32)])
			b[at(1, 0)]++
			return b
		}, snapParams, "record 1 of 4: key sides out of order"},
		{"other node count", func(b []byte) []byte { return b }, SnapshotParams{TotalNodes: 1}, "for 1 nodes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local := tagTable(t, 0)
			st, err := local.Merge(tc.edit(append([]byte(nil), good...)), tc.p, mtx)
			if !errors.Is(err, ErrSnapshotCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrSnapshotCorrupt naming %q", err, tc.want)
			}
			if st != (MergeStats{}) || local.Len() != 0 {
				t.Fatalf("applied %+v, %d connections", st, local.Len())
			}
		})
	}
}

// TestMergeAllocs: Merge allocates nothing per record once the table has
// grown (adding, keeping and replacing; a call that removes connections
// from the fast path allocates the one tuple it hands over).
func TestMergeAllocs(t *testing.T) {
	peer := tagTable(t, 0)
	for i := range 1000 {
		established(peer, i, mt0)
		p := pkt(false, c, packet.ProtoUDP, 0)
		binary.BigEndian.PutUint32(p.Src[:4], 0x0a000000+uint32(i))
		peer.Track(p, mt0)
	}
	recs := exportAll(t, peer, mtx)
	local := tagTable(t, 0)
	local.SetOffloader(newFake())
	if st, err := local.Merge(recs, snapParams, mtx); err != nil || st.Added != 2000 {
		t.Fatalf("%+v, %v", st, err)
	}
	now := mtx
	if n := testing.AllocsPerRun(20, func() { local.Merge(recs, snapParams, now) }); n != 0 {
		t.Fatalf("Merge of present connections: %v allocations per 2000 records", n)
	}
	if n := testing.AllocsPerRun(20, func() {
		now += int64(200 * 24 * time.Hour) // everything expired: added again
		local.Expire(now, numShards)
		local.Merge(recs, snapParams, now)
	}); n != 0 {
		t.Fatalf("Merge of absent connections: %v allocations per 2000 records", n)
	}
	// Replacing the datagram connections, tracked here in reverse (the
	// replies first), installed in the fast path.
	ff := &fuzzFastPath{}
	local.SetOffloader(ff)
	var replies []*packet.Parsed
	for i := range 1000 {
		p := pkt(false, s, packet.ProtoUDP, 0)
		binary.BigEndian.PutUint32(p.Dst[:4], 0x0a000000+uint32(i))
		replies = append(replies, p)
	}
	var st MergeStats
	if n := testing.AllocsPerRun(20, func() {
		now += int64(200 * 24 * time.Hour)
		local.Expire(now, numShards)
		for _, p := range replies {
			local.Track(p, now)
			local.Track(p, now) // installed at its second packet
		}
		st, _ = local.Merge(recs, snapParams, now)
	}); n > 1 {
		t.Fatalf("Merge replacing connections: %v allocations per 2000 records, want at most the one tuple handed to Forget", n)
	}
	if st != (MergeStats{Added: 1000, Replaced: 1000}) || ff.forgets < 1000 {
		t.Fatalf("last merge: %+v, %d removals from the fast path", st, ff.forgets)
	}
}

func TestMergeStatsAdd(t *testing.T) {
	a := MergeStats{1, 2, 3, 4, 5}
	a.Add(MergeStats{10, 20, 30, 40, 50})
	if a != (MergeStats{11, 22, 33, 44, 55}) || a.Records() != 165 {
		t.Fatalf("%+v", a)
	}
}

// FuzzMerge: Merge never panics; it either refuses the records (an error
// wrapping ErrSnapshotCorrupt, the table unchanged) or applies every one
// of them, counted once, leaving a table that exports and merges again
// whole. The local table starts with a few connections, one of them
// reversed and in the fast path, and room for 16.
func FuzzMerge(f *testing.F) {
	peer := tagTable(f, 0)
	for i := range 3 {
		established(peer, i, mt0)
	}
	udpFrom(peer, c, mt0)
	udpFrom(peer, s, mt0)
	icmp := icmpPkt(true, c, 128, 7)
	peer.Track(icmp, mt0)
	good := exportAll(f, peer, mtx)
	f.Add(good)
	f.Add(good[:RecordSize])
	f.Add(good[:RecordSize+1])
	f.Add([]byte{})
	local, again := tagTable(f, 16), tagTable(f, 0)
	ff := &fuzzFastPath{}
	local.SetOffloader(ff)
	f.Fuzz(func(t *testing.T, data []byte) {
		defer local.clear()
		udpFrom(local, s, at(-time.Second)) // reversed, installed, younger than the seeds' UDP flow
		established(local, 1, mt0)
		before := local.Len()
		ff.forgets = 0
		st, err := local.Merge(data, snapParams, mtx)
		if ff.forgets > st.Replaced {
			t.Fatalf("%d removals from the fast path for %d replaced connections", ff.forgets, st.Replaced)
		}
		if err != nil {
			if !errors.Is(err, ErrSnapshotCorrupt) || st != (MergeStats{}) || local.Len() != before {
				t.Fatalf("refused with %+v, %d connections of %d: %v", st, local.Len(), before, err)
			}
			return
		}
		n := len(data) / RecordSize
		if st.Records() != n || local.Len() != before+st.Added || local.Len() > max(16, before) {
			t.Fatalf("%d records: %+v, %d connections (%d before)", n, st, local.Len(), before)
		}
		absent := 0
		for i := range n {
			var k key
			var e entry
			if rem, _, _ := getRecord(data[i*RecordSize:], &k, &e); rem <= 0 {
				continue
			}
			if _, ok := findKey(local, &k); !ok {
				absent++
			}
		}
		if absent != st.Full {
			t.Fatalf("%d records absent, %d counted full", absent, st.Full)
		}
		defer again.clear()
		recs := exportAll(t, local, mtx)
		if st2, err := again.Merge(recs, snapParams, mtx); err != nil || st2.Added != local.Len() {
			t.Fatalf("re-merge: %+v, %v (table %d)", st2, err, local.Len())
		}
	})
}

// BenchmarkExport: exporting 1M connections (records/s).
func BenchmarkExport(b *testing.B) {
	tb, _ := big1M(b)
	want := tb.Len() // about 1M: a few flows were evicted from full shards
	b.ReportAllocs()
	b.ResetTimer()
	total := 0
	for range b.N {
		n, err := tb.Export(int64(time.Hour), func([]byte) error { return nil })
		if err != nil || n != want {
			b.Fatalf("exported %d of %d, %v", n, want, err)
		}
		total += n
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkMerge: merging 1M connections into an empty table (records/s),
// 64 KiB at a time as a transfer hands them over.
func BenchmarkMerge(b *testing.B) {
	tb, _ := big1M(b)
	var chunks [][]byte
	if _, err := tb.Export(int64(time.Hour), func(recs []byte) error {
		chunks = append(chunks, append([]byte(nil), recs...))
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	total := 0
	for range b.N {
		b.StopTimer()
		dst, err := NewTable(Config{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for _, ch := range chunks {
			st, err := dst.Merge(ch, SnapshotParams{TotalNodes: 1}, int64(time.Hour))
			if err != nil {
				b.Fatal(err)
			}
			total += st.Added
		}
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "records/s")
}

// TestExpireAsksFastPathUnlocked: the sweep asks the fast path about
// installed connections past their timeout (a system call each) without
// holding their shard's lock, in batches, so a mass expiry never stops a
// worker; every one the fast path did not carry since is removed.
func TestExpireAsksFastPathUnlocked(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 1 << 20})
	probe := &lockProbe{tb: tb}
	tb.SetOffloader(probe)
	const conns = 200 * numShards // several batches of seenBatch per shard
	for i := range conns {
		p := pkt(false, c, packet.ProtoUDP, 0)
		binary.BigEndian.PutUint32(p.Src[:4], 0x0a000000+uint32(i))
		tb.Track(p, mt0)
		if r := tb.Track(p, mt0); r.Offload != OffloadInstall {
			t.Fatalf("connection %d not installed: %+v", i, r)
		}
	}
	removed := tb.Expire(mt0+int64(31*time.Second), numShards)
	if removed != conns || tb.Len() != 0 || probe.seens != conns || probe.locked != 0 {
		t.Fatalf("expired %d of %d (%d left); %d questions to the fast path, %d under the shard's lock", removed, conns, tb.Len(), probe.seens, probe.locked)
	}
}
