package conntrack

import (
	"bytes"
	"encoding/binary"
	"math"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/xdpcluster/xdpcluster/packet"
)

// fakeSeen is what fakeFastPath answers for one connection.
type fakeSeen struct {
	orig, reply int64
	gone        bool // the fast path lost it (Seen's ok false)
}

// fakeFastPath is an Offloader for the tracker's unit tests: it answers
// Seen from a map the test fills, by original tuple, and records the
// calls. A connection the test did not describe was never seen.
type fakeFastPath struct {
	mu     sync.Mutex
	seen   map[packet.Tuple]fakeSeen
	seens  int
	forgot []packet.Tuple
}

func newFake() *fakeFastPath { return &fakeFastPath{seen: map[packet.Tuple]fakeSeen{}} }

func (f *fakeFastPath) Seen(orig *packet.Tuple) (int64, int64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seens++
	s := f.seen[*orig]
	return s.orig, s.reply, !s.gone
}

func (f *fakeFastPath) Forget(orig *packet.Tuple) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgot = append(f.forgot, *orig)
}

func (f *fakeFastPath) set(orig packet.Tuple, s fakeSeen) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen[orig] = s
}

func (f *fakeFastPath) counts() (seens, forgets int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seens, len(f.forgot)
}

// TestSlotSize: a slot is one cache line; entry.fp used the entry's last
// byte of padding.
func TestSlotSize(t *testing.T) {
	if n := unsafe.Sizeof(slot{}); n != 64 {
		t.Fatalf("slot is %d bytes, want 64", n)
	}
}

// offStep is one packet of an offload test: from whom, which TCP flags,
// how long after the previous packet, and what the tracker must say.
type offStep struct {
	from      string
	flags     uint8
	dt        time.Duration
	want      State
	off       Offload
	installed bool // Info.Offloaded after the packet (if the entry exists)
}

var handshakeOff = []offStep{
	{c, SYN, 0, New, OffloadNone, false},
	{s, SYN | ACK, 0, Established, OffloadNone, false},
	{c, ACK, 0, Established, OffloadInstall, true}, // the third ACK
}

func withHandshake(steps ...offStep) []offStep {
	return append(append([]offStep{}, handshakeOff...), steps...)
}

// TestOffloadTCP: when the tracker installs a TCP connection in the fast
// path and when it removes it.
func TestOffloadTCP(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		noOff bool // no Offloader
		steps []offStep
	}{
		{name: "handshake installs once", steps: withHandshake(
			offStep{s, ACK | PSH, 100 * time.Millisecond, Established, OffloadNone, true},
			offStep{c, ACK, 500 * time.Millisecond, Established, OffloadNone, true},
		)},
		{name: "re-install after a second", steps: withHandshake(
			offStep{c, ACK, 900 * time.Millisecond, Established, OffloadNone, true}, // 0.9 s after the install: fresh
			offStep{s, ACK, 200 * time.Millisecond, Established, OffloadInstall, true},
			offStep{c, ACK, 500 * time.Millisecond, Established, OffloadNone, true},
			offStep{c, ACK, 1100 * time.Millisecond, Established, OffloadInstall, true},
			offStep{c, ACK, 20 * time.Second, Established, OffloadInstall, true},
		)},
		{name: "FIN removes", steps: withHandshake(
			offStep{c, FIN | ACK, time.Second, Established, OffloadRemove, false},
			offStep{s, ACK, 0, Established, OffloadNone, false},
			offStep{s, FIN | ACK, 0, Established, OffloadNone, false},
			offStep{c, ACK, 0, Established, OffloadNone, false},
		)},
		{name: "FIN from the server removes", steps: withHandshake(
			offStep{s, FIN | ACK, time.Second, Established, OffloadRemove, false},
			offStep{c, ACK, 0, Established, OffloadNone, false},
		)},
		{name: "RST removes", steps: withHandshake(
			offStep{c, RST, time.Second, Established, OffloadRemove, false},
			offStep{s, ACK, 0, Established, OffloadNone, false},
		)},
		{name: "RST ACK from the server removes", steps: withHandshake(
			offStep{s, RST | ACK, 0, Established, OffloadRemove, false},
		)},
		{name: "ignored SYN changes nothing", steps: withHandshake(
			offStep{c, SYN, 2 * time.Second, Established, OffloadNone, true},
			offStep{c, ACK, 0, Established, OffloadInstall, true}, // stale: installed 2 s ago
		)},
		{name: "closed before established", steps: []offStep{
			{c, SYN, 0, New, OffloadNone, false},
			{s, SYN | ACK, 0, Established, OffloadNone, false},
			{c, FIN | ACK, 0, Established, OffloadNone, false},
			{s, ACK, 0, Established, OffloadNone, false},
		}},
		{name: "closed and reopened", steps: withHandshake(
			offStep{c, FIN | ACK, 0, Established, OffloadRemove, false},
			offStep{s, FIN | ACK, 0, Established, OffloadNone, false},
			offStep{c, ACK, 0, Established, OffloadNone, false},
			offStep{c, SYN, time.Second, New, OffloadNone, false}, // reopens TIME_WAIT
			offStep{s, SYN | ACK, 0, Established, OffloadNone, false},
			offStep{c, ACK, 0, Established, OffloadInstall, true},
		)},
		{name: "refused SYN", steps: []offStep{
			{c, SYN, 0, New, OffloadNone, false},
			{s, RST | ACK, 0, Established, OffloadNone, false},
		}},
		{name: "loose pickup installs at the reply", cfg: Config{TCPLoose: true}, steps: []offStep{
			{c, ACK, 0, New, OffloadNone, false}, // ESTABLISHED, but no reply yet
			{c, ACK, 0, New, OffloadNone, false},
			{s, ACK, 0, Established, OffloadInstall, true},
			{c, ACK | PSH, 0, Established, OffloadNone, true},
		}},
		{name: "no offloader", noOff: true, steps: []offStep{
			{c, SYN, 0, New, OffloadNone, false},
			{s, SYN | ACK, 0, Established, OffloadNone, false},
			{c, ACK, 0, Established, OffloadNone, false},
			{c, ACK, 2 * time.Second, Established, OffloadNone, false},
			{c, FIN | ACK, 0, Established, OffloadNone, false},
		}},
	} {
		for _, v6 := range []bool{false, true} {
			t.Run(tc.name, func(t *testing.T) {
				tb := newTable(t, tc.cfg)
				fp := newFake()
				if !tc.noOff {
					tb.SetOffloader(fp)
				}
				now := int64(time.Hour)
				for i, st := range tc.steps {
					now += int64(st.dt)
					p := pkt(v6, st.from, packet.ProtoTCP, st.flags)
					res := tb.Track(p, now)
					if res.State != st.want || res.Offload != st.off {
						t.Fatalf("v6=%v packet %d (%s %#x): %v %v offload %v, want %v offload %v",
							v6, i, st.from, st.flags, res.State, res.Reason, res.Offload, st.want, st.off)
					}
					if info, ok := tb.Get(p.Tuple, now); ok && info.Offloaded != st.installed {
						t.Fatalf("v6=%v packet %d: offloaded %v, want %v", v6, i, info.Offloaded, st.installed)
					}
				}
				if _, forgets := fp.counts(); forgets != 0 {
					t.Fatalf("%d Forget calls: removals go through Result.Offload", forgets)
				}
			})
		}
	}
}

// TestOffloadReopenInstalled: a SYN that reopens a connection still marked
// installed (a safeguard: a connection leaves the fast path when it leaves
// ESTABLISHED) removes it, through the Result or, when the new connection
// is refused, through Forget.
func TestOffloadReopenInstalled(t *testing.T) {
	for _, existing := range []bool{false, true} {
		tb := newTable(t, Config{})
		fp := newFake()
		tb.SetOffloader(fp)
		now := int64(time.Hour)
		for _, st := range []offStep{{c, SYN, 0, 0, 0, false}, {s, SYN | ACK, 0, 0, 0, false}, {c, ACK, 0, 0, 0, false},
			{c, FIN | ACK, 0, 0, 0, false}, {s, FIN | ACK, 0, 0, 0, false}, {c, ACK, 0, 0, 0, false}} {
			tb.Track(pkt(false, st.from, packet.ProtoTCP, st.flags), now)
		}
		syn := pkt(false, c, packet.ProtoTCP, SYN)
		var f flow
		tb.setFlow(&f, &syn.Tuple, true)
		sh, e := tb.lockFlow(&f, now)
		if e == nil || TCPState(e.state) != TCPTimeWait {
			t.Fatalf("no TIME_WAIT entry: %+v", e)
		}
		e.fp = fpInstalled | fpEpoch(now)
		sh.mu.Unlock()
		now += int64(time.Second)
		var res Result
		if existing {
			out := []Result{{}}
			tb.TrackBatchExisting([]*packet.Parsed{syn}, now, out)
			res = out[0]
		} else {
			res = tb.Track(syn, now)
		}
		_, forgets := fp.counts()
		switch {
		case !existing && (res.State != New || res.Offload != OffloadRemove || forgets != 0):
			t.Fatalf("reopen: %v offload %v, %d Forget calls; want NEW with OffloadRemove", res.State, res.Offload, forgets)
		case existing && (res.Reason != NewRefused || forgets != 1 || fp.forgot[0] != pkt(false, c, packet.ProtoTCP, 0).Tuple):
			t.Fatalf("refused reopen: %v %v, forgot %v; want NewRefused and the old connection forgotten", res.State, res.Reason, fp.forgot)
		}
		if info, ok := tb.Get(syn.Tuple, now); ok && info.Offloaded {
			t.Fatalf("the reopened connection is marked installed")
		}
	}
}

// TestOffloadDatagram: datagram protocols with ports are installed at
// their second packet, in either direction (not their first: a flow of
// one packet would cost an install for nothing); ICMP, generic protocols, later fragments and ICMP
// errors never change the fast path.
func TestOffloadDatagram(t *testing.T) {
	type dstep struct {
		p    func(v6 bool) *packet.Parsed
		dt   time.Duration
		want State
		off  Offload
	}
	udp := func(from string) func(bool) *packet.Parsed {
		return func(v6 bool) *packet.Parsed { return pkt(v6, from, packet.ProtoUDP, 0) }
	}
	proto := func(from string, pr uint8) func(bool) *packet.Parsed {
		return func(v6 bool) *packet.Parsed { return pkt(v6, from, pr, 0) }
	}
	for _, tc := range []struct {
		name  string
		noOff bool
		steps []dstep
	}{
		{name: "UDP", steps: []dstep{
			{udp(c), 0, New, OffloadNone},
			{udp(c), 100 * time.Millisecond, New, OffloadInstall},
			{udp(s), 500 * time.Millisecond, Established, OffloadNone},
			{udp(s), 1100 * time.Millisecond, Established, OffloadInstall}, // the fast path lost it
			{udp(c), 0, Established, OffloadNone},
		}},
		{name: "UDP-Lite", steps: []dstep{{proto(c, packet.ProtoUDPLite), 0, New, OffloadNone}, {proto(s, packet.ProtoUDPLite), 0, Established, OffloadInstall}}},
		{name: "SCTP", steps: []dstep{{proto(c, packet.ProtoSCTP), 0, New, OffloadNone}, {proto(c, packet.ProtoSCTP), 0, New, OffloadInstall}}},
		{name: "DCCP", steps: []dstep{{proto(c, packet.ProtoDCCP), 0, New, OffloadNone}, {proto(c, packet.ProtoDCCP), 0, New, OffloadInstall}}},
		{name: "generic", steps: []dstep{
			{func(v6 bool) *packet.Parsed { p := pkt(v6, c, 47, 0); p.HasPorts = false; return p }, 0, New, OffloadNone},
			{func(v6 bool) *packet.Parsed { p := pkt(v6, s, 47, 0); p.HasPorts = false; return p }, 2 * time.Second, Established, OffloadNone},
		}},
		{name: "ICMP echo", steps: []dstep{
			{func(v6 bool) *packet.Parsed { return icmpPkt(v6, c, echoReq(v6), 7) }, 0, New, OffloadNone},
			{func(v6 bool) *packet.Parsed { return icmpPkt(v6, s, echoRep(v6), 7) }, 2 * time.Second, Established, OffloadNone},
		}},
		{name: "fragments", steps: []dstep{
			{func(v6 bool) *packet.Parsed { return frag(pkt(v6, c, packet.ProtoUDP, 0), 0, true) }, 0, New, OffloadNone},
			{func(v6 bool) *packet.Parsed { return frag(pkt(v6, c, packet.ProtoUDP, 0), 8, false) }, 2 * time.Second, New, OffloadNone},
			{udp(c), 0, New, OffloadInstall}, // the later fragment did not install
		}},
		{name: "ICMP error", steps: []dstep{
			{udp(c), 0, New, OffloadNone},
			{func(v6 bool) *packet.Parsed { return icmpError(v6, c, pkt(v6, c, packet.ProtoUDP, 0)) }, 2 * time.Second, Related, OffloadNone},
			{udp(s), 0, Established, OffloadInstall},
		}},
		{name: "no offloader", noOff: true, steps: []dstep{
			{udp(c), 0, New, OffloadNone},
			{udp(s), 2 * time.Second, Established, OffloadNone},
		}},
	} {
		for _, v6 := range []bool{false, true} {
			t.Run(tc.name, func(t *testing.T) {
				tb := newTable(t, Config{})
				if !tc.noOff {
					tb.SetOffloader(newFake())
				}
				now := int64(time.Hour)
				for i, st := range tc.steps {
					now += int64(st.dt)
					p := st.p(v6)
					if res := tb.Track(p, now); res.State != st.want || res.Offload != st.off {
						t.Fatalf("v6=%v packet %d: %v %v offload %v, want %v offload %v", v6, i, res.State, res.Reason, res.Offload, st.want, st.off)
					}
				}
			})
		}
	}
}

func echoReq(v6 bool) uint8 {
	if v6 {
		return 128
	}
	return 8
}

func echoRep(v6 bool) uint8 {
	if v6 {
		return 129
	}
	return 0
}

// TestOffloadResultReset: TrackBatch reuses its results; an Install left
// in out[i] by the previous batch must not survive.
func TestOffloadResultReset(t *testing.T) {
	tb := newTable(t, Config{})
	tb.SetOffloader(newFake())
	p := pkt(false, c, packet.ProtoUDP, 0)
	out := make([]Result, 1)
	tb.Track(p, int64(time.Hour)-1) // installed at its second packet
	tb.TrackBatch([]*packet.Parsed{p}, int64(time.Hour), out)
	if out[0].Offload != OffloadInstall {
		t.Fatalf("second packet: %v", out[0].Offload)
	}
	tb.TrackBatch([]*packet.Parsed{p}, int64(time.Hour)+1, out)
	if out[0].Offload != OffloadNone {
		t.Fatalf("third packet: %v", out[0].Offload)
	}
}

// TestOffloadSweep: the sweep keeps an installed connection the fast path
// still carries, and removes (and makes the fast path forget) one that is
// idle there or gone from it; entries not installed never cost a Seen.
func TestOffloadSweep(t *testing.T) {
	const sec = int64(time.Second)
	t0 := int64(time.Hour)
	cfg := Config{Timeouts: Timeouts{Established: 10 * time.Second}}
	tcpOrig := pkt(false, c, packet.ProtoTCP, 0).Tuple
	udpOrig := pkt(false, c, packet.ProtoUDP, 0).Tuple
	type check struct {
		at         int64 // sweep time, after t0
		seen       fakeSeen
		live       bool
		expires    int64 // after t0, when live
		seenReply  bool
		assured    bool
		wantSeens  int // Seen calls so far
		wantForget int // Forget calls so far
	}
	for _, tc := range []struct {
		name   string
		udp    bool
		checks []check
	}{
		{name: "TCP active, then idle", checks: []check{
			{at: 5 * sec, seen: fakeSeen{orig: t0 + 4*sec}, live: true, expires: 10 * sec, seenReply: true, assured: true}, // not yet expired: no Seen
			{at: 11 * sec, seen: fakeSeen{orig: t0 + 9*sec, reply: t0 + 8*sec}, live: true, expires: 19 * sec, seenReply: true, assured: true, wantSeens: 1},
			{at: 20 * sec, seen: fakeSeen{orig: t0 + 9*sec, reply: t0 + 8*sec}, wantSeens: 2, wantForget: 1},
		}},
		{name: "TCP gone from the fast path", checks: []check{
			{at: 11 * sec, seen: fakeSeen{orig: t0 + 9*sec, gone: true}, wantSeens: 1, wantForget: 1},
		}},
		{name: "TCP never seen there", checks: []check{
			{at: 11 * sec, wantSeens: 1, wantForget: 1},
		}},
		{name: "UDP reply seen, replied timeout", udp: true, checks: []check{
			{at: 31 * sec, seen: fakeSeen{orig: t0 + 20*sec, reply: t0 + 25*sec}, live: true, expires: 145 * sec, seenReply: true, assured: true, wantSeens: 1},
			{at: 146 * sec, seen: fakeSeen{orig: t0 + 20*sec, reply: t0 + 25*sec}, wantSeens: 2, wantForget: 1},
		}},
		{name: "UDP reply within 2 s", udp: true, checks: []check{
			{at: 30*sec + sec/2, seen: fakeSeen{orig: t0 + sec, reply: t0 + sec}, live: true, expires: 31 * sec, seenReply: true, wantSeens: 1},
			{at: 32 * sec, seen: fakeSeen{orig: t0 + sec, reply: t0 + sec}, wantSeens: 2, wantForget: 1},
		}},
		{name: "UDP one way", udp: true, checks: []check{
			{at: 31 * sec, seen: fakeSeen{orig: t0 + 29*sec}, live: true, expires: 59 * sec, wantSeens: 1},
			{at: 59 * sec, seen: fakeSeen{orig: t0 + 29*sec}, wantSeens: 2, wantForget: 1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable(t, cfg)
			fp := newFake()
			tb.SetOffloader(fp)
			orig := tcpOrig
			if tc.udp {
				orig = udpOrig
				tb.Track(pkt(false, c, packet.ProtoUDP, 0), t0) // installed at its second packet
				if r := tb.Track(pkt(false, c, packet.ProtoUDP, 0), t0); r.Offload != OffloadInstall {
					t.Fatalf("UDP not installed: %+v", r)
				}
			} else {
				tb.Track(pkt(false, c, packet.ProtoTCP, SYN), t0)
				tb.Track(pkt(false, s, packet.ProtoTCP, SYN|ACK), t0)
				if r := tb.Track(pkt(false, c, packet.ProtoTCP, ACK), t0); r.Offload != OffloadInstall {
					t.Fatalf("TCP not installed: %+v", r)
				}
			}
			// Entries that are not installed, expired alike, must not be
			// asked about.
			tb.Track(icmpPkt(false, c, 8, 9), t0)
			gp := pkt(false, c, 47, 0)
			gp.HasPorts = false
			tb.Track(gp, t0)
			for i, ck := range tc.checks {
				fp.set(orig, ck.seen)
				tb.Expire(t0+ck.at, numShards)
				info, ok := tb.Get(orig, t0+ck.at)
				seens, forgets := fp.counts()
				if ok != ck.live || seens != ck.wantSeens || forgets != ck.wantForget {
					t.Fatalf("check %d at %v: live %v, %d Seen, %d Forget; want %v, %d, %d",
						i, time.Duration(ck.at), ok, seens, forgets, ck.live, ck.wantSeens, ck.wantForget)
				}
				if forgets > 0 && fp.forgot[0] != orig {
					t.Fatalf("forgot %+v, want the original tuple %+v", fp.forgot[0], orig)
				}
				if ok && (info.Expires != t0+ck.expires || info.SeenReply != ck.seenReply || info.Assured != ck.assured || !info.Offloaded) {
					t.Fatalf("check %d: %+v; want expires %v, reply %v, assured %v", i, info, time.Duration(ck.expires), ck.seenReply, ck.assured)
				}
			}
			seens, _ := fp.counts()
			tb.Expire(t0+int64(time.Hour), numShards)
			if after, _ := fp.counts(); after != seens {
				t.Fatalf("%d Seen calls for connections that were not installed", after-seens)
			}
			if st := tb.Stats(); st.Entries != 0 || st.Expired != 3 {
				t.Fatalf("end: %+v, want the 3 connections expired", st)
			}
		})
	}
}

// TestOffloadExpiredStillLive: an installed connection past its timeout
// is live for its packets until the sweep asked the fast path: a reply
// reaching the tracker then (the fast path lost the connection) belongs
// to it, with its original direction, instead of opening a new one.
func TestOffloadExpiredStillLive(t *testing.T) {
	tb := newTable(t, Config{})
	fp := newFake()
	tb.SetOffloader(fp)
	t0 := int64(time.Hour)
	tb.Track(pkt(false, c, packet.ProtoUDP, 0), t0)
	tb.Track(pkt(false, c, packet.ProtoUDP, 0), t0) // installed at its second packet
	later := t0 + int64(31*time.Second)             // past the 30 s unreplied timeout
	res := tb.Track(pkt(false, s, packet.ProtoUDP, 0), later)
	if res.State != Established || res.Orig != a16(hosts4[c]) || res.Offload != OffloadInstall {
		t.Fatalf("reply: %+v; want ESTABLISHED of the client's connection, re-installed", res)
	}
	if seens, _ := fp.counts(); seens != 0 {
		t.Fatalf("%d Seen calls on the packet path", seens)
	}
	// Without an offloader the same reply opens a new connection.
	tb2 := newTable(t, Config{})
	tb2.Track(pkt(false, c, packet.ProtoUDP, 0), t0)
	if res := tb2.Track(pkt(false, s, packet.ProtoUDP, 0), later); res.State != New || res.Orig != a16(hosts4[s]) {
		t.Fatalf("no offloader: %+v", res)
	}
}

// TestOffloadEarlyDrop: a connection evicted to make room is forgotten by
// the fast path; assured ones stay, even expired while installed.
func TestOffloadEarlyDrop(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 8 * numShards})
	fp := newFake()
	tb.SetOffloader(fp)
	now := int64(time.Hour)
	var est []packet.Tuple
	for i := 0; i < numShards/4; i++ {
		est = append(est, established(tb, i, now))
	}
	for _, tp := range est {
		if info, ok := tb.Get(tp, now); !ok || !info.Offloaded || !info.Assured {
			t.Fatalf("%v: %+v", tp, info)
		}
	}
	// Let the established connections' tracker timeout run out: they
	// are installed, so only the sweep may expire them.
	now += int64(6 * 24 * time.Hour)
	origs := map[packet.Tuple]bool{}
	for i := 0; i < 20*numShards; i++ {
		p := pkt(false, c, packet.ProtoUDP, 0)
		binary.BigEndian.PutUint32(p.Src[:4], 0x0b000000+uint32(i))
		tb.Track(p, now) // installed at its second packet
		if r := tb.Track(p, now); r.Offload != OffloadInstall && r.Reason != TableFull {
			t.Fatalf("flow %d: %+v", i, r)
		}
		origs[p.Tuple] = true
	}
	st := tb.Stats()
	// Early drop queues the removals; the sweeper makes them, outside
	// the shard's lock.
	_, queued := fp.counts()
	// (No shard evicts anywhere near maxPendingForgets here: about 20
	// each.)
	if queued != 0 {
		t.Fatalf("%d of %d removals made at once, under the shard locks: want them queued for the sweeper", queued, st.Evicted)
	}
	for i := range tb.shards {
		tb.flushForgets(&tb.shards[i])
	}
	_, forgets := fp.counts()
	if st.Evicted == 0 || uint64(forgets) != st.Evicted {
		t.Fatalf("%d evicted, %d forgotten: every evicted connection was installed", st.Evicted, forgets)
	}
	for _, tp := range fp.forgot {
		if !origs[tp] {
			t.Fatalf("forgot %+v, not an evicted UDP connection's original tuple", tp)
		}
	}
	for _, tp := range est {
		if _, ok := tb.Get(tp, now); !ok {
			t.Fatalf("assured installed connection %v evicted", tp)
		}
	}
}

// TestOffloadSnapshot: the fast path's state is not saved (restored
// connections are not installed, and are installed again at their next
// packet), and what the fast path saw is: a UDP connection whose packets
// only the fast path carried keeps the lifetime and reply they gave it.
func TestOffloadSnapshot(t *testing.T) {
	t0 := int64(time.Hour)
	tb := newTable(t, Config{})
	fp := newFake()
	tb.SetOffloader(fp)
	tb.Track(pkt(false, c, packet.ProtoUDP, 0), t0)
	tb.Track(pkt(false, c, packet.ProtoUDP, 0), t0) // installed at its second packet
	established(tb, 1, t0)
	udp := pkt(false, c, packet.ProtoUDP, 0).Tuple
	fp.set(udp, fakeSeen{orig: t0 + 25*int64(time.Second), reply: t0 + 26*int64(time.Second)})
	save := t0 + 28*int64(time.Second) // 2 s before the tracker's own timeout
	wall := time.Now()
	var buf bytes.Buffer
	p := SnapshotParams{TotalNodes: 2}
	if n, err := tb.WriteSnapshot(&buf, p, save, wall); err != nil || n != 2 {
		t.Fatalf("write: %d, %v", n, err)
	}
	tb2 := newTable(t, Config{})
	fp2 := newFake()
	tb2.SetOffloader(fp2)
	now2 := int64(time.Minute)
	info, err := tb2.ReadSnapshot(&buf, p, now2, wall, 0)
	if err != nil || info.Restored != 2 {
		t.Fatalf("read: %+v, %v", info, err)
	}
	ui, ok := tb2.Get(udp, now2)
	// Replied 26 s in, born at 0: the replied timeout (120 s) from 26 s,
	// of which 28 - 26 = 2 s had passed at the save.
	if !ok || ui.Offloaded || !ui.SeenReply || !ui.Assured || ui.Expires != now2+int64(118*time.Second) {
		t.Fatalf("restored UDP: %+v", ui)
	}
	tcp := pkt(false, c, packet.ProtoTCP, 0)
	binary.BigEndian.PutUint32(tcp.Src[:4], 0x0a000001)
	if ti, ok := tb2.Get(tcp.Tuple, now2); !ok || ti.Offloaded || ti.TCPState != TCPEstablished {
		t.Fatalf("restored TCP: %+v", ti)
	}
	tcp.TCPFlags = ACK
	if r := tb2.Track(tcp, now2); r.State != Established || r.Offload != OffloadInstall {
		t.Fatalf("first packet after the restore: %+v", r)
	}
	if r := tb2.Track(pkt(false, s, packet.ProtoUDP, 0), now2); r.State != Established || r.Offload != OffloadInstall {
		t.Fatalf("first UDP packet after the restore: %+v", r)
	}
}

// TestOffloadAllocs: the fast path's decisions allocate nothing.
func TestOffloadAllocs(t *testing.T) {
	tb := newTable(t, Config{})
	tb.SetOffloader(newFake())
	now := int64(time.Hour)
	established(tb, 0, now)
	p := pkt(false, c, packet.ProtoTCP, ACK)
	binary.BigEndian.PutUint32(p.Src[:4], 0x0a000000)
	u := pkt(false, c, packet.ProtoUDP, 0)
	v := pkt(false, s, packet.ProtoUDP, 0)
	ps := []*packet.Parsed{p, u, v}
	out := make([]Result, len(ps))
	tb.Track(u, now)
	i := int64(0)
	if n := testing.AllocsPerRun(200, func() {
		i++
		now += int64(300 * time.Millisecond) // an Install every few runs
		tb.Track(p, now)
		tb.Track(u, now)
		tb.TrackBatch(ps, now, out)
	}); n != 0 {
		t.Fatalf("Track with an offloader allocates %v times", n)
	}
	if out[0].State != Established || out[1].State != Established {
		t.Fatalf("results: %+v", out)
	}
}

// testClock is a clock for concurrent tests: each call advances it by
// step from an hour and returns the new time (in ns).
func testClock(step time.Duration) func() int64 {
	var mu sync.Mutex
	clock := int64(time.Hour)
	return func() int64 {
		mu.Lock()
		defer mu.Unlock()
		clock += int64(step)
		return clock
	}
}

// TestOffloadConcurrent: workers tracking both directions and the sweep
// asking the fast path, at once (run with -race).
func TestOffloadConcurrent(t *testing.T) {
	tb := newTable(t, Config{Timeouts: Timeouts{UDPUnreplied: time.Second, UDPReplied: time.Second}})
	fp := newFake()
	tb.SetOffloader(fp)
	const flows = 1000
	tick := testClock(time.Millisecond)
	var wg sync.WaitGroup
	trackBothDirections(tb, flows, &wg, tick)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			tb.Expire(tick(), 16)
		}
	}()
	wg.Wait()
	tb.Expire(tick()+int64(time.Minute), numShards) // a minute after the last tick
	if tb.Len() != 0 {
		t.Fatalf("%d entries left after every timeout", tb.Len())
	}
}

// TestOffloadClear: emptying a table (a refused snapshot's cleanup)
// leaves nothing in the fast path.
func TestOffloadClear(t *testing.T) {
	tb := newTable(t, Config{})
	fp := newFake()
	tb.SetOffloader(fp)
	tb.Track(pkt(false, c, packet.ProtoUDP, 0), int64(time.Hour))
	tb.Track(pkt(false, c, packet.ProtoUDP, 0), int64(time.Hour)) // installed at its second packet
	tb.Track(icmpPkt(false, c, 8, 1), int64(time.Hour))
	tb.clear()
	if _, forgets := fp.counts(); forgets != 1 || fp.forgot[0] != pkt(false, c, packet.ProtoUDP, 0).Tuple || tb.Len() != 0 {
		t.Fatalf("forgot %v, %d entries left", fp.forgot, tb.Len())
	}
}

// TestApplySeenCoarseStamp: the fast path stamps last-seen with the clock
// at its last tick, which can be a few ms before the entry was born. A
// datagram connection with its reply seen is assured (the replied
// timeout) only once its last packet is over 2 s after its birth; a stamp
// before the birth must not wrap into a huge age.
func TestApplySeenCoarseStamp(t *testing.T) {
	tb := newTable(t, Config{})
	var k key
	k.w[4] = uint64(packet.ProtoUDP) << 32
	born := int64(10*time.Second + 500*time.Microsecond)
	for _, tc := range []struct {
		name    string
		last    int64
		assured bool
	}{
		{"stamp 3 ms before the birth", born - int64(3*time.Millisecond), false},
		{"stamp in the birth's millisecond", born, false},
		{"1.999 s after", born + int64(1999*time.Millisecond), false},
		{"2.002 s after", born + int64(2002*time.Millisecond), true},
		{"25 days after (past 2^31 ms)", born + int64(25*24*time.Hour), true},
		{"49 days after", born + int64(49*24*time.Hour), true},
	} {
		e := entry{born: uint32(born / 1e6), flags: flagSeenReply, expires: born}
		if !tb.applySeen(&e, &k, tc.last, tc.last, true, tc.last) {
			t.Errorf("%s: not live", tc.name)
		}
		timeout := tb.udpU
		if tc.assured {
			timeout = tb.udpR
		}
		if got := e.flags&flagAssured != 0; got != tc.assured || e.expires != tc.last+timeout {
			t.Errorf("%s: assured %v, expires last+%v; want assured %v, last+%v", tc.name, got, time.Duration(e.expires-tc.last), tc.assured, time.Duration(timeout))
		}
	}
}

// TestPastTwoSeconds: a datagram connection's age in wrapping
// milliseconds: over 2 s is a stream, up to 49.7 days and at the
// snapshots' age cap (2^31 ms); a stamp up to a second before its birth
// (the fast path's coarse clock) is not.
func TestPastTwoSeconds(t *testing.T) {
	born := uint32(4294967000) // near the wrap, on purpose (a variable: the sums wrap)
	for _, tc := range []struct {
		name string
		at   uint32
		want bool
	}{
		{"at birth", born, false},
		{"2 s", born + 2000, false},
		{"2.001 s", born + 2001, true},
		{"the snapshot age cap, 2^31 ms", born + 1<<31, true},
		{"49.7 days", born + math.MaxUint32 - 1001, true},
		{"3 ms before birth", born - 3, false},
		{"1 s before birth", born - 1000, false},
	} {
		if got := pastTwoSeconds(tc.at, born); got != tc.want {
			t.Errorf("%s: pastTwoSeconds = %v, want %v", tc.name, got, tc.want)
		}
	}
}
