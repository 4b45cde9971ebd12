package conntrack

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/packet"
)

// A node that does not own a connection drains its interfaces
// independently, so it may see the handshake's packets in any order; the
// tests here check that it still ends up with an entry it can carry after
// a takeover (pickUpSynAck).

// reorderTag is the tables' Config.Tag: a bucket from the original source.
func reorderTag(_ packet.Family, orig [16]byte) uint8 { return orig[3]%7 + 1 }

// seg is one packet of a handshake with its sequence numbers (the client's
// ISN 1000, the server's 5000).
type seg struct {
	name     string
	from     string
	flags    uint8
	seq, ack uint32
}

var (
	segSyn    = seg{"SYN", c, SYN, 1000, 0}
	segSynAck = seg{"SYN/ACK", s, SYN | ACK, 5000, 1001}
	segAck    = seg{"ACK", c, ACK, 1001, 5001}
	segCData  = seg{"client data", c, ACK | PSH, 1001, 5001}
	segSData  = seg{"server data", s, ACK | PSH, 5001, 1011}
)

func (g seg) pkt(v6 bool) *packet.Parsed {
	p := pkt(v6, g.from, packet.ProtoTCP, g.flags)
	p.Seq, p.Ack = g.seq, g.ack
	return p
}

// permutations returns every order of segs.
func permutations(segs []seg) [][]seg {
	if len(segs) <= 1 {
		return [][]seg{append([]seg(nil), segs...)}
	}
	var out [][]seg
	for i := range segs {
		rest := append(append([]seg(nil), segs[:i]...), segs[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]seg{segs[i]}, p...))
		}
	}
	return out
}

// TestReorderedHandshake plays a connection's handshake and first data
// segments in every order (5! = 120) to a table, as a non-owner may see
// them, and checks that whatever the order: every packet classed is
// classed as the client's connection (original source, tag, direction),
// the client's SYN always; exactly one entry was created; and data then
// flows both ways, the server's first, with the entry ESTABLISHED and
// assured, carrying the client's tag. With loose
// pickup on, the orders starting with the server's data are left out:
// loose pickup records that packet's connection the wrong way round
// (Config.TCPLoose), whatever the SYN/ACK does.
func TestReorderedHandshake(t *testing.T) {
	orders := permutations([]seg{segSyn, segSynAck, segAck, segCData, segSData})
	if len(orders) != 120 {
		t.Fatalf("%d orders, want 120", len(orders))
	}
	// The ports may have carried a connection before, now closed: the
	// new one's SYN/ACK replaces it as it would find nothing.
	handshake := []seg{{"old SYN", c, SYN, 100, 0}, {"old SYN/ACK", s, SYN | ACK, 500, 101}, {"old ACK", c, ACK, 101, 501}}
	priors := []struct {
		name string
		segs []seg
	}{
		{"none", nil},
		{"TIME_WAIT", append(handshake[:3:3], seg{"old FIN", c, FIN | ACK, 101, 501}, seg{"old ACK", s, ACK, 501, 102},
			seg{"old FIN", s, FIN | ACK, 501, 102}, seg{"old ACK", c, ACK, 102, 502})},
		{"CLOSE by the client's RST", append(handshake[:3:3], seg{"old RST", c, RST, 101, 0})},
		{"CLOSE by the server's RST", append(handshake[:3:3], seg{"old RST", s, RST, 501, 0})},
	}
	for _, prior := range priors {
		for _, loose := range []bool{false, true} {
			if loose && prior.segs != nil {
				continue
			}
			for _, v6 := range []bool{false, true} {
				reorderedHandshake(t, orders, prior.name, prior.segs, loose, v6)
			}
		}
	}
}

func reorderedHandshake(t *testing.T, orders [][]seg, priorName string, prior []seg, loose, v6 bool) {
	{
		{
			client := a16(pick(v6)[c])
			wantTag := reorderTag(0, client)
			played := 0
			for _, order := range orders {
				if loose && order[0] == segSData {
					continue
				}
				played++
				name := fmt.Sprintf("prior=%s/loose=%v/v6=%v/", priorName, loose, v6)
				for _, g := range order {
					name += g.name + ","
				}
				tb := newTable(t, Config{TCPLoose: loose, Tag: reorderTag})
				now := int64(time.Hour)
				for _, g := range prior {
					now += int64(time.Millisecond)
					if res := tb.Track(g.pkt(v6), now); res.State == Invalid {
						t.Fatalf("%s: %s: INVALID/%v", name, g.name, res.Reason)
					}
				}
				inserts := tb.Stats().Inserts
				check := func(step string, g seg, res Result, mustPass bool) {
					t.Helper()
					if res.State == Invalid {
						if mustPass {
							t.Fatalf("%s: %s %s: INVALID/%v, want it part of the connection", name, step, g.name, res.Reason)
						}
						return
					}
					wantDir := Original
					if g.from == s {
						wantDir = Reply
					}
					if res.Orig != client || res.Tag != wantTag || res.Dir != wantDir {
						t.Fatalf("%s: %s %s: orig %v tag %d dir %v, want the client's connection (tag %d, dir %v)",
							name, step, g.name, res.Orig, res.Tag, res.Dir, wantTag, wantDir)
					}
				}
				for _, g := range order {
					now += int64(time.Millisecond)
					// The client's SYN always belongs to the connection:
					// it opens it, or it is the retransmission of the SYN
					// the SYN/ACK answered. Other packets may be INVALID
					// (the client's ACK or data with nothing recorded, or
					// in SYN_SENT; the server's before the client spoke).
					check("reordered", g, tb.Track(g.pkt(v6), now), g == segSyn)
				}
				if st := tb.Stats(); st.Inserts > inserts+1 || st.Entries != 1 {
					t.Fatalf("%s: %d inserts, %d entries, want one connection", name, st.Inserts-inserts, st.Entries)
				}
				// The node takes the connection over: the data that
				// follows flows both ways.
				for _, g := range []seg{
					{"server data", s, ACK | PSH, 5101, 1011},
					{"client data", c, ACK | PSH, 1011, 5201},
					{"server data", s, ACK | PSH, 5201, 1021},
					{"client ACK", c, ACK, 1021, 5301},
				} {
					now += int64(time.Millisecond)
					check("after", g, tb.Track(g.pkt(v6), now), true)
				}
				info, ok := tb.Get(segAck.pkt(v6).Tuple, now)
				if !ok || info.TCPState != TCPEstablished || !info.Assured || info.Tag != wantTag || info.Orig != client {
					t.Fatalf("%s: entry %+v (found %v), want ESTABLISHED, assured, the client's with tag %d", name, info, ok, wantTag)
				}
			}
			want := 120
			if loose {
				want = 96
			}
			if played != want {
				t.Fatalf("loose=%v: played %d orders, want %d", loose, played, want)
			}
		}
	}
}

// TestSynAckPickup: what a SYN/ACK whose SYN was not seen records; that
// nothing from its sender passes or changes it until the client speaks;
// and what the late SYN, a retransmitted SYN/ACK and the client's ACK do.
func TestSynAckPickup(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			client := a16(pick(v6)[c])
			tag := reorderTag(0, client)
			tb := newTable(t, Config{Tag: reorderTag})
			now := int64(time.Hour)
			if res := tb.Track(segSynAck.pkt(v6), now); res != (Result{Reason: TCPNoSyn}) {
				t.Fatalf("SYN/ACK: %+v, want INVALID/tcp_no_syn as before", res)
			}
			tp := segSyn.pkt(v6).Tuple
			info, ok := tb.Get(tp, now)
			if !ok || info.TCPState != TCPSynRecv || !info.SeenReply || info.Assured || info.Orig != client || info.Tag != tag ||
				info.Expires != now+int64(60*time.Second) {
				t.Fatalf("after the SYN/ACK: %+v (found %v), want the client's, SYN_RECV, replied, not assured, expiring in 60 s", info, ok)
			}
			if st := tb.Stats(); st.Inserts != 1 || st.PickedUp != 1 {
				t.Fatalf("stats %+v, want 1 insert, 1 picked up", st)
			}
			// Before the client speaks: the server's packets are INVALID
			// and change nothing; ICMP errors and later fragments find
			// no connection.
			later := now + int64(time.Second)
			for _, g := range []seg{segSynAck, segSData, {"server RST", s, RST | ACK, 5001, 1001}} {
				if res := tb.Track(g.pkt(v6), later); res != (Result{Reason: TCPNoSyn}) {
					t.Fatalf("%s before the client spoke: %+v, want INVALID/tcp_no_syn", g.name, res)
				}
			}
			if res := tb.Track(icmpError(v6, s, segSData.pkt(v6)), later); res.Reason != ICMPErrorNoConn {
				t.Fatalf("ICMP error about it before the client spoke: %v/%v, want INVALID/icmp_error_no_conn", res.State, res.Reason)
			}
			if res := tb.Track(frag(segSData.pkt(v6), 8, false), later); res.Reason != FragNoHead {
				t.Fatalf("later fragment before the client spoke: %v/%v, want INVALID/fragment_without_head", res.State, res.Reason)
			}
			if info2, _ := tb.Get(tp, later); info2 != info {
				t.Fatalf("the server's packets changed the entry: %+v, was %+v", info2, info)
			}
			// The late SYN is the connection's retransmitted SYN: part
			// of it (ESTABLISHED: a reply was seen), state and timeout
			// unchanged.
			res := tb.Track(segSyn.pkt(v6), later)
			if res.State != Established || res.Dir != Original || res.Orig != client || res.Tag != tag {
				t.Fatalf("late SYN: %+v, want ESTABLISHED, original direction, the client's", res)
			}
			if info2, _ := tb.Get(tp, later); info2.TCPState != TCPSynRecv || info2.Expires != info.Expires {
				t.Fatalf("late SYN changed the entry: %+v, was %+v", info2, info)
			}
			// The server retransmits its SYN/ACK, answering it.
			if res = tb.Track(segSynAck.pkt(v6), later); res.State != Established || res.Dir != Reply || res.Tag != tag {
				t.Fatalf("retransmitted SYN/ACK: %+v", res)
			}
			if res = tb.Track(segAck.pkt(v6), later); res.State != Established || res.Dir != Original || res.Tag != tag {
				t.Fatalf("client's ACK: %+v", res)
			}
			if info, _ = tb.Get(tp, later); info.TCPState != TCPEstablished || !info.Assured || info.Expires != later+int64(5*24*time.Hour) {
				t.Fatalf("after the ACK: %+v, want ESTABLISHED, assured", info)
			}
			if res = tb.Track(segSData.pkt(v6), later); res.State != Established || res.Dir != Reply || res.Tag != tag {
				t.Fatalf("server data: %+v", res)
			}
			if st := tb.Stats(); st.Inserts != 1 || st.PickedUp != 1 || st.Entries != 1 {
				t.Fatalf("stats %+v, want one connection", st)
			}
		})
	}
}

// TestSynAckNeverOpened: a SYN/ACK of a connection nobody goes on with
// (no ACK follows) costs an entry for SYN_RECV's timeout, then expires;
// the stats count one insert, one pick-up, one expiry.
func TestSynAckNeverOpened(t *testing.T) {
	for _, tmo := range []time.Duration{0, 5 * time.Second} {
		t.Run(fmt.Sprint(tmo), func(t *testing.T) {
			tb := newTable(t, Config{Timeouts: Timeouts{SynRecv: tmo}})
			life := int64(tb.Config().Timeouts.SynRecv)
			now := int64(time.Hour)
			tb.Track(segSynAck.pkt(false), now)
			// The server's retransmissions do not keep it alive.
			tb.Track(segSynAck.pkt(false), now+life/2)
			if n := tb.Expire(now+life-1, numShards); n != 0 || tb.Len() != 1 {
				t.Fatalf("before its timeout: %d expired, %d left", n, tb.Len())
			}
			if n := tb.Expire(now+life, numShards); n != 1 {
				t.Fatalf("at its timeout: %d expired, want 1", n)
			}
			want := Stats{Inserts: 1, PickedUp: 1, Expired: 1}
			if st := tb.Stats(); st != want {
				t.Fatalf("stats %+v, want %+v", st, want)
			}
		})
	}
}

// TestSynAckPolicy: a connection recorded from its SYN/ACK follows the
// new-connection policy of its originator's side. The SYN/ACK is recorded
// wherever it arrives (typically the servers' side, which refuses new
// connections), but only a packet from the originator arriving where new
// connections may be opened confirms it.
func TestSynAckPolicy(t *testing.T) {
	type arrival struct {
		g     seg
		noNew bool // arrives where new connections are refused
		want  State
		why   Reason
	}
	tests := []struct {
		name  string
		steps []arrival
	}{
		{"client on the open side, SYN/ACK on the refusing side", []arrival{
			{segSynAck, true, Invalid, TCPNoSyn},
			{segSData, true, Invalid, TCPNoSyn},
			{segSyn, false, Established, 0},
			{segAck, false, Established, 0},
			{segSData, true, Established, 0},
		}},
		{"client on the open side, its ACK first", []arrival{
			{segSynAck, true, Invalid, TCPNoSyn},
			{segAck, false, Established, 0},
			{segSData, true, Established, 0},
			{segSyn, false, Established, 0},
		}},
		{"client on the refusing side", []arrival{
			{segSynAck, false, Invalid, TCPNoSyn},
			{segSyn, true, Invalid, NewRefused},
			{segAck, true, Invalid, NewRefused},
			{segCData, true, Invalid, NewRefused},
			{segSData, false, Invalid, TCPNoSyn},
		}},
	}
	for _, v6 := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/v6=%v", tc.name, v6), func(t *testing.T) {
				tb := newTable(t, Config{MaxEntries: 64})
				out := make([]Result, 1)
				for i, a := range tc.steps {
					ps := []*packet.Parsed{a.g.pkt(v6)}
					if a.noNew {
						tb.TrackBatchExisting(ps, int64(i+1), out)
					} else {
						tb.TrackBatch(ps, int64(i+1), out)
					}
					if out[0].State != a.want || out[0].Reason != a.why {
						t.Fatalf("step %d, %s: %v/%v, want %v/%v", i, a.g.name, out[0].State, out[0].Reason, a.want, a.why)
					}
					if out[0].State != Invalid && out[0].Orig != a16(pick(v6)[c]) {
						t.Fatalf("step %d, %s: orig %v, want the client", i, a.g.name, out[0].Orig)
					}
				}
				if st := tb.Stats(); st.Inserts != 1 || st.PickedUp != 1 {
					t.Fatalf("stats %+v, want the one connection recorded from the SYN/ACK", st)
				}
			})
		}
	}
}

// TestSynAckPickupTableFull: a full table whose entries are all assured
// refuses the SYN/ACK's connection as it refuses a SYN's.
func TestSynAckPickupTableFull(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: numShards}) // one entry per shard
	p := segSynAck.pkt(false)
	var f flow
	tb.setFlow(&f, &p.Tuple, true)
	sh := tb.shardOf(f.h)
	// Fill the SYN/ACK's shard with an assured connection on another port.
	for port := uint16(1); ; port++ {
		q := segSyn.pkt(false)
		q.SrcPort = port
		var g flow
		tb.setFlow(&g, &q.Tuple, true)
		if tb.shardOf(g.h) != sh {
			continue
		}
		for _, h := range []seg{segSyn, segSynAck, segAck, segCData} {
			x := h.pkt(false)
			if h.from == c {
				x.SrcPort = port
			} else {
				x.DstPort = port
			}
			tb.Track(x, 1)
		}
		break
	}
	if res := tb.Track(p, 2); res.State != Invalid || res.Reason != TableFull {
		t.Fatalf("SYN/ACK into a full shard: %v/%v, want INVALID/table_full", res.State, res.Reason)
	}
	if st := tb.Stats(); st.PickedUp != 0 || st.TableFull != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSynAckPickupAllocs: recording a connection from a SYN/ACK allocates
// nothing (the previous one has expired by the next run: the same slot).
func TestSynAckPickupAllocs(t *testing.T) {
	tb := newTable(t, Config{Tag: reorderTag})
	p := segSynAck.pkt(true)
	now := int64(time.Hour)
	tb.Track(p, now)
	n := testing.AllocsPerRun(100, func() {
		now += int64(61 * time.Second)
		if res := tb.Track(p, now); res.Reason != TCPNoSyn {
			t.Fatalf("SYN/ACK: %v/%v", res.State, res.Reason)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per SYN/ACK picked up, want 0", n)
	}
	if st := tb.Stats(); st.PickedUp < 100 {
		t.Fatalf("picked up %d, want one per run", st.PickedUp)
	}
}

// BenchmarkTrackSynAckPickup measures recording a connection from a
// SYN/ACK (each one expired by the next).
func BenchmarkTrackSynAckPickup(b *testing.B) {
	tb := newTable(b, Config{Tag: reorderTag})
	p := segSynAck.pkt(false)
	now := int64(time.Hour)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		now += int64(61 * time.Second)
		tb.Track(p, now)
	}
}

// TestSynAckPickupSnapshot: a connection recorded from its SYN/ACK is
// carried across a restart as it was: still unconfirmed (the server's
// packets INVALID), and confirmed by the client's ACK after it.
func TestSynAckPickupSnapshot(t *testing.T) {
	tb := newTable(t, Config{Tag: reorderTag})
	now := int64(time.Hour)
	tb.Track(segSynAck.pkt(false), now)
	var buf bytes.Buffer
	if _, err := tb.WriteSnapshot(&buf, snapParams, now, snapWall); err != nil {
		t.Fatal(err)
	}
	nw := newTable(t, Config{Tag: reorderTag})
	if _, err := nw.ReadSnapshot(&buf, snapParams, now, snapWall, 0); err != nil {
		t.Fatal(err)
	}
	if res := nw.Track(segSData.pkt(false), now); res != (Result{Reason: TCPNoSyn}) {
		t.Fatalf("server data after the restart: %+v, want INVALID/tcp_no_syn (unconfirmed)", res)
	}
	res := nw.Track(segAck.pkt(false), now)
	if res.State != Established || res.Orig != a16(hosts4[c]) || res.Tag != reorderTag(0, a16(hosts4[c])) {
		t.Fatalf("client's ACK after the restart: %+v", res)
	}
	if info, _ := nw.Get(segAck.pkt(false).Tuple, now); info.TCPState != TCPEstablished {
		t.Fatalf("after the ACK: %v, want ESTABLISHED", info.TCPState)
	}
}

// TestSynAckPickupReusedPorts: the SYN/ACK of a new connection on the
// ports of one closed (TIME_WAIT, CLOSE) arrives before its SYN. It
// replaces the closed connection with the new one, confirmed at once (the
// same originator), and is ESTABLISHED as the kernel classes it; the SYN
// that follows is its retransmission, the ACK makes it ESTABLISHED.
func TestSynAckPickupReusedPorts(t *testing.T) {
	handshake := []seg{{"old SYN", c, SYN, 100, 0}, {"old SYN/ACK", s, SYN | ACK, 500, 101}, {"old ACK", c, ACK, 101, 501}}
	tests := []struct {
		name string
		old  []seg
		then TCPState
	}{
		{"TIME_WAIT", append(handshake[:3:3], seg{"FIN", s, FIN | ACK, 501, 101}, seg{"FIN", c, FIN | ACK, 101, 502},
			seg{"ACK", s, ACK, 502, 102}), TCPTimeWait},
		{"CLOSE by the client", append(handshake[:3:3], seg{"RST", c, RST, 101, 0}), TCPClose},
		{"CLOSE by the server", append(handshake[:3:3], seg{"RST", s, RST, 501, 0}), TCPClose},
	}
	for _, v6 := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/v6=%v", tc.name, v6), func(t *testing.T) {
				tb := newTable(t, Config{Tag: reorderTag})
				now := int64(time.Hour)
				for _, g := range tc.old {
					tb.Track(g.pkt(v6), now)
				}
				tp := segSyn.pkt(v6).Tuple
				if info, _ := tb.Get(tp, now); info.TCPState != tc.then {
					t.Fatalf("old connection: %v, want %v", info.TCPState, tc.then)
				}
				client := a16(pick(v6)[c])
				for _, st := range []struct {
					g     seg
					dir   Dir
					after TCPState
				}{
					{segSynAck, Reply, TCPSynRecv},
					{segSData, Reply, TCPSynRecv},
					{segSyn, Original, TCPSynRecv},
					{segAck, Original, TCPEstablished},
					{segSData, Reply, TCPEstablished},
				} {
					res := tb.Track(st.g.pkt(v6), now)
					if res.State != Established || res.Dir != st.dir || res.Orig != client || res.Tag != reorderTag(0, client) {
						t.Fatalf("%s: %+v, want ESTABLISHED, %v, the client's", st.g.name, res, st.dir)
					}
					if info, _ := tb.Get(tp, now); info.TCPState != st.after {
						t.Fatalf("after %s: %v, want %v", st.g.name, info.TCPState, st.after)
					}
				}
				if st := tb.Stats(); st.Reopened != 1 || st.PickedUp != 1 || st.Entries != 1 {
					t.Fatalf("stats %+v, want 1 reopened, 1 picked up", st)
				}
			})
		}
	}
}

// TestSynAckPickupOffload: with a fast path, a connection recorded from
// its SYN/ACK enters it as any connection does, at the client's ACK that
// makes it ESTABLISHED, never before.
func TestSynAckPickupOffload(t *testing.T) {
	tb := newTable(t, Config{})
	tb.SetOffloader(&fuzzFastPath{})
	now := int64(time.Hour)
	for _, st := range []struct {
		g   seg
		off Offload
	}{
		{segSynAck, OffloadNone},
		{segSData, OffloadNone},
		{segSyn, OffloadNone},
		{segAck, OffloadInstall},
		{segSData, OffloadNone},
	} {
		if res := tb.Track(st.g.pkt(false), now); res.Offload != st.off {
			t.Fatalf("%s: %v/%v offload %v, want %v", st.g.name, res.State, res.Reason, res.Offload, st.off)
		}
	}
}
