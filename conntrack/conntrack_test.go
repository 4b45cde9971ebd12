package conntrack

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/packet"
)

const (
	c = "c" // client, the original source
	s = "s" // server
	r = "r" // a router sending ICMP errors
)

var hosts4 = map[string]netip.Addr{c: netip.MustParseAddr("198.51.100.7"), s: netip.MustParseAddr("203.0.113.9"), r: netip.MustParseAddr("192.0.2.254")}
var hosts6 = map[string]netip.Addr{c: netip.MustParseAddr("2001:db8:1::7"), s: netip.MustParseAddr("2001:db8:2::9"), r: netip.MustParseAddr("2001:db8:ff::1")}

func a16(a netip.Addr) (b [16]byte) {
	if a.Is4() {
		v := a.As4()
		copy(b[:], v[:])
		return b
	}
	return a.As16()
}

func fam(a netip.Addr) packet.Family {
	if a.Is4() {
		return packet.IPv4
	}
	return packet.IPv6
}

// pkt builds a Parsed from src to dst (host names) with ports swapped for
// the server's packets.
func pkt(v6 bool, from string, proto uint8, flags uint8) *packet.Parsed {
	h := hosts4
	if v6 {
		h = hosts6
	}
	to := s
	if from == s {
		to = c
	}
	p := &packet.Parsed{}
	p.Src, p.Dst, p.Family, p.Proto, p.TTL = a16(h[from]), a16(h[to]), fam(h[from]), proto, 64
	p.SrcPort, p.DstPort, p.HasPorts = 40000, 80, true
	if from == s {
		p.SrcPort, p.DstPort = 80, 40000
	}
	p.TCPFlags = flags
	return p
}

const (
	SYN = packet.TCPSyn
	ACK = packet.TCPAck
	FIN = packet.TCPFin
	RST = packet.TCPRst
	PSH = packet.TCPPsh
)

func newTable(t testing.TB, cfg Config) *Table {
	t.Helper()
	tb, err := NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

type step struct {
	from   string
	flags  uint8
	want   State
	reason Reason
	after  TCPState // state of the entry after the packet; 0 = don't check
}

func TestTCPTransitions(t *testing.T) {
	handshake := []step{
		{c, SYN, New, 0, TCPSynSent},
		{s, SYN | ACK, Established, 0, TCPSynRecv},
		{c, ACK, Established, 0, TCPEstablished},
	}
	tests := []struct {
		name  string
		loose bool
		steps []step
	}{
		{"handshake and data", false, append(handshake[:3:3],
			step{c, ACK | PSH, Established, 0, TCPEstablished},
			step{s, ACK | PSH, Established, 0, TCPEstablished})},
		{"retransmitted SYN", false, []step{
			{c, SYN, New, 0, TCPSynSent},
			{c, SYN, New, 0, TCPSynSent},
			{s, SYN | ACK, Established, 0, TCPSynRecv},
			{s, SYN | ACK, Established, 0, TCPSynRecv}, // late retransmitted SYN/ACK: ignored
			{c, ACK, Established, 0, TCPEstablished}}},
		{"simultaneous open", false, []step{
			{c, SYN, New, 0, TCPSynSent},
			{s, SYN, Established, 0, TCPSynSent2},
			{c, SYN | ACK, Established, 0, TCPSynRecv},
			{s, ACK, Established, 0, TCPSynRecv},
			{c, ACK, Established, 0, TCPEstablished}}},
		{"RST from server", false, append(handshake[:3:3],
			step{s, RST, Established, 0, TCPClose},
			step{c, ACK, Established, 0, TCPClose})},
		// A RST before any reply deletes the connection (the kernel's
		// nf_ct_kill on an unreplied RST): a second RST belongs to
		// nothing, and the client's retry on the same port is new.
		{"RST answering SYN", false, []step{
			{c, SYN, New, 0, TCPSynSent},
			{s, RST | ACK, Established, 0, 0},
			{s, RST | ACK, Invalid, TCPNoSyn, 0},
			{c, SYN, New, 0, TCPSynSent},
			{s, SYN | ACK, Established, 0, TCPSynRecv},
			{c, ACK, Established, 0, TCPEstablished}}},
		{"client RST before any reply", false, []step{
			{c, SYN, New, 0, TCPSynSent},
			{c, RST, New, 0, 0},
			{c, RST, Invalid, TCPNoSyn, 0}}},
		{"RST after a reply keeps the connection", false, []step{
			{c, SYN, New, 0, TCPSynSent},
			{s, SYN | ACK, Established, 0, TCPSynRecv},
			{s, RST, Established, 0, TCPClose},
			{s, RST, Established, 0, TCPClose}}},
		{"RST of a picked-up unreplied connection", true, []step{
			{c, ACK, New, 0, TCPEstablished},
			{c, RST, New, 0, 0}}},
		{"FIN both ways, then reuse", false, append(handshake[:3:3],
			step{c, FIN | ACK, Established, 0, TCPFinWait},
			step{s, ACK, Established, 0, TCPCloseWait},
			step{s, FIN | ACK, Established, 0, TCPLastAck},
			step{c, ACK, Established, 0, TCPTimeWait},
			step{c, SYN, New, 0, TCPSynSent}, // reopened from TIME_WAIT
			step{s, SYN | ACK, Established, 0, TCPSynRecv})},
		{"server closes first", false, append(handshake[:3:3],
			step{s, FIN | ACK, Established, 0, TCPFinWait},
			step{c, FIN | ACK, Established, 0, TCPLastAck},
			step{s, ACK, Established, 0, TCPTimeWait})},
		{"mid-stream ACK, loose off", false, []step{{c, ACK, Invalid, TCPNoSyn, 0}, {s, ACK, Invalid, TCPNoSyn, 0}}},
		{"mid-stream ACK, loose on", true, []step{{c, ACK | PSH, New, 0, TCPEstablished}, {s, ACK, Established, 0, TCPEstablished}}},
		// Recorded from the SYN/ACK (pickUpSynAck, reorder_test.go).
		{"SYN/ACK with no SYN", false, []step{{s, SYN | ACK, Invalid, TCPNoSyn, TCPSynRecv}, {c, ACK, Established, 0, TCPEstablished}}},
		{"SYN/ACK with no SYN, loose on", true, []step{{s, SYN | ACK, Invalid, TCPNoSyn, TCPSynRecv}, {s, ACK | PSH, Invalid, TCPNoSyn, TCPSynRecv},
			{c, ACK, Established, 0, TCPEstablished}}},
		{"FIN with no connection", true, []step{{c, FIN | ACK, Invalid, TCPNoSyn, 0}}},
		{"client sends SYN/ACK", false, []step{{c, SYN, New, 0, TCPSynSent}, {c, SYN | ACK, Invalid, TCPBadTransition, TCPSynSent}}},
		{"ACK before SYN/ACK", false, []step{{c, SYN, New, 0, TCPSynSent}, {c, ACK, Invalid, TCPBadTransition, TCPSynSent}}},
		{"SYN+FIN", false, []step{{c, SYN | FIN, Invalid, TCPBadFlags, 0}}},
		{"no flags", false, []step{{c, 0, Invalid, TCPBadFlags, 0}}},
		{"FIN without ACK", false, append(handshake[:3:3], step{c, FIN, Invalid, TCPBadFlags, TCPEstablished})},
		{"SYN in ESTABLISHED is ignored", false, append(handshake[:3:3], step{c, SYN, Established, 0, TCPEstablished})},
		{"SYN after the server's RST is ignored", false, append(handshake[:3:3],
			step{s, RST, Established, 0, TCPClose},
			step{c, SYN, Established, 0, TCPClose})},
		{"SYN after the client's own RST reopens", false, append(handshake[:3:3],
			step{c, RST, Established, 0, TCPClose},
			step{c, SYN, New, 0, TCPSynSent})},
	}
	for _, v6 := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/v6=%v", tc.name, v6), func(t *testing.T) {
				tb := newTable(t, Config{TCPLoose: tc.loose})
				now := int64(time.Hour)
				for i, st := range tc.steps {
					p := pkt(v6, st.from, packet.ProtoTCP, st.flags)
					res := tb.Track(p, now)
					if res.State != st.want || res.Reason != st.reason {
						t.Fatalf("step %d (%s %#x): %v/%v, want %v/%v", i, st.from, st.flags, res.State, res.Reason, st.want, st.reason)
					}
					if res.State != Invalid && res.Orig != a16(pick(v6)[c]) {
						t.Fatalf("step %d: orig %v, want the client", i, res.Orig)
					}
					info, ok := tb.Get(p.Tuple, now)
					if st.after != 0 && (!ok || info.TCPState != st.after) {
						t.Fatalf("step %d: entry %v (found %v), want %v", i, info.TCPState, ok, st.after)
					}
					if st.after == 0 && ok {
						t.Fatalf("step %d: an entry was created", i)
					}
					now += int64(time.Millisecond)
				}
			})
		}
	}
}

func pick(v6 bool) map[string]netip.Addr {
	if v6 {
		return hosts6
	}
	return hosts4
}

func TestTCPAssuredAndTimeouts(t *testing.T) {
	tb := newTable(t, Config{})
	now := int64(time.Hour)
	tb.Track(pkt(false, c, packet.ProtoTCP, SYN), now)
	info, _ := tb.Get(pkt(false, c, packet.ProtoTCP, 0).Tuple, now)
	if info.Assured || info.Expires != now+int64(2*time.Minute) {
		t.Fatalf("after SYN: %+v", info)
	}
	tb.Track(pkt(false, s, packet.ProtoTCP, SYN|ACK), now)
	tb.Track(pkt(false, c, packet.ProtoTCP, ACK), now)
	info, _ = tb.Get(pkt(false, c, packet.ProtoTCP, 0).Tuple, now)
	if !info.Assured || info.Expires != now+int64(5*24*time.Hour) {
		t.Fatalf("after handshake: %+v", info)
	}
	// The kernel's SYN_SENT timeout elapses for a lone SYN.
	tb2 := newTable(t, Config{Timeouts: Timeouts{SynSent: 5 * time.Second}})
	tb2.Track(pkt(false, c, packet.ProtoTCP, SYN), now)
	// The SYN/ACK finds nothing: it records the connection anew
	// (pickUpSynAck), after the SYN's entry expired.
	if res := tb2.Track(pkt(false, s, packet.ProtoTCP, SYN|ACK), now+int64(6*time.Second)); !pickedUpAfterExpiry(tb2) {
		t.Fatalf("SYN/ACK after the SYN expired: %v, stats %+v, want the SYN's entry expired and the SYN/ACK picked up", res.State, tb2.Stats())
	}
	// A retransmitted SYN does not renew an unreplied entry's timeout
	// (the kernel's "do not renew timeout on SYN retransmit").
	tb3 := newTable(t, Config{Timeouts: Timeouts{SynSent: 5 * time.Second}})
	tb3.Track(pkt(false, c, packet.ProtoTCP, SYN), now)
	if res := tb3.Track(pkt(false, c, packet.ProtoTCP, SYN), now+int64(3*time.Second)); res.State != New {
		t.Fatalf("retransmitted SYN: %v", res.State)
	}
	if info, _ := tb3.Get(pkt(false, c, packet.ProtoTCP, 0).Tuple, now); info.Expires != now+int64(5*time.Second) {
		t.Fatalf("retransmitted SYN renewed the timeout: expires %v after the first SYN, want 5s", time.Duration(info.Expires-now))
	}
	if res := tb3.Track(pkt(false, s, packet.ProtoTCP, SYN|ACK), now+int64(6*time.Second)); !pickedUpAfterExpiry(tb3) {
		t.Fatalf("SYN/ACK 6 s after the first SYN (3 s after its retransmission): %v, stats %+v, want the SYN's entry expired and the SYN/ACK picked up", res.State, tb3.Stats())
	}
}

// pickedUpAfterExpiry reports whether a table's one connection expired
// and a SYN/ACK then recorded it anew (pickUpSynAck).
func pickedUpAfterExpiry(tb *Table) bool {
	st := tb.Stats()
	return st.Expired == 1 && st.Inserts == 2 && st.PickedUp == 1 && st.Entries == 1
}

// TestTCPResyncAndChallenge: the two places where the kernel looks at
// sequence numbers even when liberal, both about a SYN it ignored.
func TestTCPResyncAndChallenge(t *testing.T) {
	type seg struct {
		from     string
		flags    uint8
		seq, ack uint32
		want     State
		after    TCPState
	}
	handshake := []seg{{c, SYN, 1000, 0, New, TCPSynSent}, {s, SYN | ACK, 5000, 1001, Established, TCPSynRecv}, {c, ACK, 1001, 5001, Established, TCPEstablished}}
	tests := []struct {
		name string
		segs []seg
	}{
		{"SYN/ACK answering the SYN ignored after the server's RST", []seg{
			{s, RST, 5001, 0, Established, TCPClose},
			{c, SYN, 9000, 0, Established, TCPClose},
			{s, SYN | ACK, 7000, 9001, Established, TCPSynRecv},
			{c, ACK, 9001, 7001, Established, TCPEstablished}}},
		{"SYN/ACK answering something else", []seg{
			{s, RST, 5001, 0, Established, TCPClose},
			{c, SYN, 9000, 0, Established, TCPClose},
			{s, SYN | ACK, 7000, 4242, Established, TCPClose}}},
		{"resync from FIN_WAIT", []seg{
			{c, FIN | ACK, 1001, 5001, Established, TCPFinWait},
			{c, SYN, 9000, 0, Established, TCPFinWait},
			{s, SYN | ACK, 7000, 9001, Established, TCPSynRecv},
			{c, ACK, 9001, 7001, Established, TCPEstablished},
			{c, SYN, 19000, 0, Established, TCPEstablished}}},
		{"challenge ACK in LAST_ACK", []seg{
			{c, FIN | ACK, 1001, 5001, Established, TCPFinWait},
			{s, FIN | ACK, 5001, 1002, Established, TCPLastAck},
			{c, SYN, 9000, 0, Established, TCPLastAck},
			{s, ACK, 5002, 1002, Established, TCPLastAck}, // the challenge
			{s, ACK, 5002, 1002, Established, TCPTimeWait},
			{c, SYN, 9000, 0, New, TCPSynSent}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable(t, Config{})
			now := int64(time.Hour)
			for i, sg := range append(handshake[:3:3], tc.segs...) {
				p := pkt(false, sg.from, packet.ProtoTCP, sg.flags)
				p.Seq, p.Ack = sg.seq, sg.ack
				if res := tb.Track(p, now); res.State != sg.want {
					t.Fatalf("segment %d (%s %#x): %v, want %v", i, sg.from, sg.flags, res.State, sg.want)
				}
				if info, _ := tb.Get(p.Tuple, now); info.TCPState != sg.after {
					t.Fatalf("segment %d (%s %#x): state %v, want %v", i, sg.from, sg.flags, info.TCPState, sg.after)
				}
			}
		})
	}
}

func TestRSTBeforeReplyCounted(t *testing.T) {
	tb := newTable(t, Config{})
	now := int64(time.Hour)
	tb.Track(pkt(false, c, packet.ProtoTCP, SYN), now)
	tb.Track(pkt(false, s, packet.ProtoTCP, RST|ACK), now)
	if st := tb.Stats(); st.Reset != 1 || st.Entries != 0 {
		t.Fatalf("after SYN, RST: reset %d, entries %d; want 1 and 0", st.Reset, st.Entries)
	}
}

func TestUDP(t *testing.T) {
	tb := newTable(t, Config{})
	now := int64(time.Hour)
	want := []struct {
		from string
		dt   time.Duration
		st   State
	}{
		{c, 0, New}, {c, time.Second, New}, {s, time.Second, Established}, {c, time.Second, Established},
		{s, 10 * time.Second, Established},
	}
	for i, w := range want {
		now += int64(w.dt)
		if res := tb.Track(pkt(false, w.from, packet.ProtoUDP, 0), now); res.State != w.st || res.Orig != a16(hosts4[c]) {
			t.Fatalf("packet %d: %v orig %v", i, res.State, res.Orig)
		}
	}
	info, _ := tb.Get(pkt(false, c, packet.ProtoUDP, 0).Tuple, now)
	if !info.Assured || info.Expires != now+int64(120*time.Second) {
		t.Fatalf("stream: %+v", info)
	}
	// Unreplied: 30 s, then a new connection.
	tb2 := newTable(t, Config{})
	tb2.Track(pkt(false, c, packet.ProtoUDP, 0), now)
	if res := tb2.Track(pkt(false, s, packet.ProtoUDP, 0), now+int64(31*time.Second)); res.State != New || res.Orig != a16(hosts4[s]) {
		t.Fatalf("reply after expiry: %v orig %v (want a new connection from the server)", res.State, res.Orig)
	}
}

func icmpPkt(v6 bool, from string, typ uint8, id uint16) *packet.Parsed {
	proto := uint8(packet.ProtoICMP)
	if v6 {
		proto = packet.ProtoICMPv6
	}
	p := pkt(v6, from, proto, 0)
	p.ICMPType = typ
	p.SrcPort, p.DstPort, p.HasPorts, p.ICMPQuery = id, id, true, true
	return p
}

func TestICMPEcho(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		req, rep := uint8(8), uint8(0)
		if v6 {
			req, rep = 128, 129
		}
		tb := newTable(t, Config{})
		now := int64(time.Hour)
		if res := tb.Track(icmpPkt(v6, c, req, 7), now); res.State != New {
			t.Fatalf("v6=%v request: %v", v6, res.State)
		}
		if res := tb.Track(icmpPkt(v6, s, rep, 7), now); res.State != Established || res.Orig != a16(pick(v6)[c]) {
			t.Fatalf("v6=%v reply: %v", v6, res.State)
		}
		if res := tb.Track(icmpPkt(v6, s, rep, 8), now); res.State != Invalid || res.Reason != ICMPNotNew {
			t.Fatalf("v6=%v reply without request: %v %v", v6, res.State, res.Reason)
		}
		if res := tb.Track(icmpPkt(v6, s, rep, 7), now+int64(31*time.Second)); res.State != Invalid {
			t.Fatalf("v6=%v reply after timeout: %v", v6, res.State)
		}
	}
	tb := newTable(t, Config{})
	ns := icmpPkt(true, c, 135, 0)
	ns.ICMPQuery, ns.HasPorts = false, false
	if res := tb.Track(ns, 0); res.State != Untracked {
		t.Fatalf("neighbour solicitation: %v", res.State)
	}
	rtadv := icmpPkt(false, c, 9, 0)
	rtadv.ICMPQuery, rtadv.HasPorts = false, false
	if res := tb.Track(rtadv, 0); res.State != Invalid {
		t.Fatalf("router advertisement: %v", res.State)
	}
}

// icmpError builds an error from router r to `to` about a packet the
// conversation sent from `about`.
func icmpError(v6 bool, to string, about *packet.Parsed) *packet.Parsed {
	h := pick(v6)
	proto := uint8(packet.ProtoICMP)
	typ := uint8(3)
	if v6 {
		proto, typ = packet.ProtoICMPv6, 2 // packet too big
	}
	p := &packet.Parsed{}
	p.Src, p.Dst, p.Family, p.Proto = a16(h[r]), a16(h[to]), about.Family, proto
	p.ICMPType, p.ICMPError, p.InnerValid = typ, true, true
	p.Inner = about.Tuple
	return p
}

func TestICMPErrorRelated(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, proto := range []uint8{packet.ProtoTCP, packet.ProtoUDP} {
			tb := newTable(t, Config{})
			now := int64(time.Hour)
			first := pkt(v6, c, proto, SYN)
			tb.Track(first, now)
			tb.Track(pkt(v6, s, proto, SYN|ACK), now)
			// An error about the client's packet goes to the client...
			res := tb.Track(icmpError(v6, c, first), now)
			if res.State != Related || res.Orig != a16(pick(v6)[c]) || res.Dir != Reply {
				t.Fatalf("v6=%v proto %d: error to client: %+v", v6, proto, res)
			}
			// ...one about the server's packet goes to the server, and
			// still resolves to the client, the original source.
			res = tb.Track(icmpError(v6, s, pkt(v6, s, proto, ACK)), now)
			if res.State != Related || res.Orig != a16(pick(v6)[c]) || res.Dir != Original {
				t.Fatalf("v6=%v proto %d: error to server: %+v", v6, proto, res)
			}
			if res := tb.Track(icmpError(v6, s, first), now); res.Reason != ICMPErrorMismatch {
				t.Fatalf("error to the wrong host: %+v", res)
			}
			other := pkt(v6, c, proto, SYN)
			other.SrcPort = 1
			if res := tb.Track(icmpError(v6, c, other), now); res.Reason != ICMPErrorNoConn {
				t.Fatalf("error about an unknown flow: %+v", res)
			}
			bad := icmpError(v6, c, first)
			bad.InnerValid = false
			if res := tb.Track(bad, now); res.Reason != ICMPErrorBadInner {
				t.Fatalf("error with a bad inner packet: %+v", res)
			}
		}
	}
}

func frag(p *packet.Parsed, off uint16, more bool) *packet.Parsed {
	q := *p
	q.Fragment, q.FragOffset, q.MoreFrags, q.FragID = true, off, more, 0x1234
	if off != 0 {
		q.SrcPort, q.DstPort, q.HasPorts = 0, 0, false
	}
	return &q
}

func TestFragments(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		tb := newTable(t, Config{})
		now := int64(time.Hour)
		udp := pkt(v6, c, packet.ProtoUDP, 0)
		if res := tb.Track(frag(udp, 0, true), now); res.State != New {
			t.Fatalf("first fragment: %v", res.State)
		}
		for _, off := range []uint16{1480, 2960} {
			res := tb.Track(frag(udp, off, off == 1480), now)
			if res.State != New || res.Orig != a16(pick(v6)[c]) {
				t.Fatalf("fragment at %d: %+v", off, res)
			}
		}
		// The reply, fragmented, out of order: its tail before its head.
		rep := pkt(v6, s, packet.ProtoUDP, 0)
		tail := frag(rep, 1480, false)
		tail.FragID = 0x9999
		if res := tb.Track(tail, now); res.State != Invalid || res.Reason != FragNoHead {
			t.Fatalf("tail before head: %+v", res)
		}
		head := frag(rep, 0, true)
		head.FragID = 0x9999
		if res := tb.Track(head, now); res.State != Established {
			t.Fatalf("reply head: %+v", res)
		}
		if res := tb.Track(tail, now); res.State != Established || res.Orig != a16(pick(v6)[c]) {
			t.Fatalf("reply tail after head: %+v", res)
		}
		// The fragment record expires.
		if res := tb.Track(tail, now+int64(11*time.Second)); res.Reason != FragNoHead {
			t.Fatalf("tail after the fragment timeout: %+v", res)
		}
		// A protocol without ports needs no head.
		gre := pkt(v6, c, 47, 0)
		gre.HasPorts, gre.SrcPort, gre.DstPort = false, 0, 0
		tb.Track(gre, now)
		if res := tb.Track(frag(gre, 1480, false), now); res.State != New {
			t.Fatalf("GRE fragment: %+v", res)
		}
	}
}

func TestGeneric(t *testing.T) {
	tb := newTable(t, Config{})
	gre := func(from string) *packet.Parsed {
		p := pkt(false, from, 47, 0)
		p.HasPorts, p.SrcPort, p.DstPort = false, 0, 0
		return p
	}
	if res := tb.Track(gre(c), 0); res.State != New {
		t.Fatal(res.State)
	}
	if res := tb.Track(gre(s), 1); res.State != Established || res.Orig != a16(hosts4[c]) {
		t.Fatal(res.State)
	}
	if res := tb.Track(gre(s), 1+int64(601*time.Second)); res.State != New || res.Orig != a16(hosts4[s]) {
		t.Fatalf("after the generic timeout: %+v", res)
	}
}

func TestExpire(t *testing.T) {
	tb := newTable(t, Config{})
	now := int64(time.Hour)
	for i := 0; i < 1000; i++ {
		p := pkt(false, c, packet.ProtoUDP, 0)
		p.SrcPort = uint16(i)
		tb.Track(p, now)
	}
	if n := tb.Expire(now+int64(29*time.Second), numShards); n != 0 {
		t.Fatalf("expired %d before the timeout", n)
	}
	if n := tb.Expire(now+int64(31*time.Second), numShards); n != 1000 || tb.Len() != 0 {
		t.Fatalf("expired %d, %d left", n, tb.Len())
	}
	if st := tb.Stats(); st.Expired != 1000 || st.Inserts != 1000 {
		t.Fatalf("stats %+v", st)
	}
}

func established(tb *Table, i int, now int64) packet.Tuple {
	p := pkt(false, c, packet.ProtoTCP, SYN)
	binary.BigEndian.PutUint32(p.Src[:4], 0x0a000000+uint32(i))
	tb.Track(p, now)
	q := *p
	q.Src, q.Dst, q.SrcPort, q.DstPort, q.TCPFlags = p.Dst, p.Src, p.DstPort, p.SrcPort, SYN|ACK
	tb.Track(&q, now)
	p.TCPFlags = ACK
	tb.Track(p, now)
	return p.Tuple
}

// TestEvictionPolicy: under a SYN flood, assured connections keep their
// entries; unassured ones make room for new ones; when nothing may be
// evicted the new connection is refused and counted.
func TestEvictionPolicy(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 64 * numShards})
	now := int64(time.Hour)
	var est []packet.Tuple
	for i := 0; i < 5000; i++ {
		est = append(est, established(tb, i, now))
	}
	for _, tp := range est {
		if info, ok := tb.Get(tp, now); !ok || !info.Assured {
			t.Fatalf("established flow %v missing before the flood", tp)
		}
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		p := pkt(false, c, packet.ProtoTCP, SYN)
		binary.BigEndian.PutUint32(p.Src[:4], rnd.Uint32())
		tb.Track(p, now)
	}
	for _, tp := range est {
		if _, ok := tb.Get(tp, now); !ok {
			t.Fatalf("established flow %v evicted by the SYN flood", tp)
		}
	}
	st := tb.Stats()
	if st.Entries > 64*numShards || st.Evicted == 0 {
		t.Fatalf("stats %+v", st)
	}
	// A table full of assured connections refuses new ones.
	full := newTable(t, Config{MaxEntries: numShards})
	for i := 0; i < 20*numShards; i++ {
		established(full, i, now)
	}
	if st := full.Stats(); st.Entries > numShards || st.TableFull == 0 || st.Evicted != 0 {
		t.Fatalf("full table stats %+v", st)
	}
}

func TestTag(t *testing.T) {
	calls := 0
	tb := newTable(t, Config{Tag: func(f packet.Family, orig [16]byte) uint8 { calls++; return orig[3] ^ uint8(f) }})
	tb.Track(pkt(false, c, packet.ProtoUDP, 0), 0)
	res := tb.Track(pkt(false, s, packet.ProtoUDP, 0), 0)
	if want := a16(hosts4[c])[3] ^ 4; res.Tag != want || calls != 1 {
		t.Fatalf("tag %d (want %d), %d calls", res.Tag, want, calls)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []Config{{MaxEntries: -1}, {MaxFragments: -5}, {Timeouts: Timeouts{TimeWait: -time.Second}}} {
		if _, err := NewTable(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	tb := newTable(t, Config{})
	if c := tb.Config(); c.MaxEntries != DefaultMaxEntries || c.Timeouts.Established != 5*24*time.Hour {
		t.Errorf("defaults not filled: %+v", c)
	}
}

// trackBothDirections starts four goroutines (added to wg) that track
// the requests (two of them) and the replies (the other two) of flows UDP
// connections at once, each packet at the time now gives.
func trackBothDirections(tb *Table, flows int, wg *sync.WaitGroup, now func() int64) {
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < flows; i++ {
				from := c
				if w%2 == 1 {
					from = s
				}
				p := pkt(false, from, packet.ProtoUDP, 0)
				if from == c {
					p.SrcPort = uint16(i)
				} else {
					p.DstPort = uint16(i)
				}
				tb.Track(p, now())
			}
		}(w)
	}
}

// TestConcurrentDirections: requests and replies of the same connections
// tracked at the same time by different goroutines end in one entry each.
func TestConcurrentDirections(t *testing.T) {
	tb := newTable(t, Config{})
	const flows = 2000
	var wg sync.WaitGroup
	trackBothDirections(tb, flows, &wg, func() int64 { return int64(time.Hour) })
	wg.Wait()
	if n := tb.Len(); n != flows {
		t.Fatalf("%d entries for %d flows", n, flows)
	}
}

func TestTrackAllocs(t *testing.T) {
	tb := newTable(t, Config{})
	p := pkt(false, c, packet.ProtoTCP, SYN)
	q := pkt(false, s, packet.ProtoTCP, SYN|ACK)
	e := icmpError(false, c, p)
	tb.Track(p, 0)
	if n := testing.AllocsPerRun(100, func() { tb.Track(p, 1); tb.Track(q, 1); tb.Track(e, 1) }); n != 0 {
		t.Fatalf("Track allocates %v times", n)
	}
}

// TestMemoryPerEntry: 1M connections fit in 150 MB.
func TestMemoryPerEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	per := bytesPerEntry(t, 1<<20)
	t.Logf("%.1f bytes per entry", per)
	if per*(1<<20) > 150e6 {
		t.Fatalf("%.1f bytes per entry: 1M entries need %.0f MB, over 150 MB", per, per*(1<<20)/1e6)
	}
}

func bytesPerEntry(t testing.TB, n int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tb := newTable(t, Config{MaxEntries: n + n/8})
	fill(tb, n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if tb.Len() != n {
		t.Fatalf("%d entries, want %d", tb.Len(), n)
	}
	runtime.KeepAlive(tb)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// fill inserts n UDP flows, a mix of IPv4 and IPv6 sources.
func fill(tb *Table, n int) []*packet.Parsed {
	ps := make([]*packet.Parsed, 0, 1024)
	for i := 0; i < n; i++ {
		p := pkt(i%4 == 3, c, packet.ProtoUDP, 0)
		binary.BigEndian.PutUint32(p.Src[:4], uint32(i)*2654435761)
		p.SrcPort = uint16(i >> 16)
		tb.Track(p, int64(time.Hour))
		if len(ps) < cap(ps) && i%(n/1024+1) == 0 {
			ps = append(ps, p)
		}
	}
	return ps
}

// FuzzTrack feeds random packet sequences among a few hosts: no panic,
// results are consistent, and the table never exceeds its bound.
//
// With a fast path (half the inputs), Result.Offload is checked too: only
// for tracked connections, installs only for the protocols with ports
// other than ICMP (TCP without SYN, FIN, RST), removals only for TCP, and
// the entry's installed mark follows; a final sweep makes the fast path
// forget exactly the installed connections.
//
// It reuses four small tables (loose pickup off and on, fast path off and
// on) across inputs,
// emptied between inputs by resetForFuzz: a fresh table costs 256 shards'
// slot arrays and maps (about 1 MB), and Len locks every shard, which made
// each input cost milliseconds. The fuzz function runs one input at a time
// per process, so the reuse is safe.
func FuzzTrack(f *testing.F) {
	f.Add([]byte{0, SYN, 1, SYN | ACK, 0, ACK, 0, FIN | ACK, 1, ACK})
	f.Add([]byte{2, 0, 3, 0, 0x44, 0x10, 0x85, 0x02, 0xff, 0xff})
	f.Add([]byte{0, SYN, 1, RST | ACK, 1, RST | ACK, 0, SYN, 1, SYN | ACK, 0, ACK})
	tables := newFuzzTables(f)
	f.Fuzz(func(t *testing.T, ops []byte) { fuzzTrackOne(t, &tables, ops) })
}

// fuzzLimit is the fuzzed tables' MaxEntries: two connections per shard,
// so that inputs reach eviction and table-full.
const fuzzLimit = 2 * numShards

func newFuzzTables(t testing.TB) [4]*Table {
	tables := [4]*Table{newTable(t, Config{MaxEntries: fuzzLimit}), newTable(t, Config{MaxEntries: fuzzLimit, TCPLoose: true}),
		newTable(t, Config{MaxEntries: fuzzLimit}), newTable(t, Config{MaxEntries: fuzzLimit, TCPLoose: true})}
	tables[2].SetOffloader(&fuzzFastPath{})
	tables[3].SetOffloader(&fuzzFastPath{})
	return tables
}

// fuzzFastPath is FuzzTrack's fast path: it never carried a packet, and
// counts what it is told to forget.
type fuzzFastPath struct{ forgets int }

func (f *fuzzFastPath) Seen(*packet.Tuple) (int64, int64, bool) { return 0, 0, true }
func (f *fuzzFastPath) Forget(*packet.Tuple)                    { f.forgets++ }

// checkFuzzOffload checks a packet's Result.Offload (see FuzzTrack).
func checkFuzzOffload(t testing.TB, tb *Table, p *packet.Parsed, res Result, now int64, i int) {
	if res.Offload == OffloadNone {
		return
	}
	if tb.off == nil {
		t.Fatalf("packet %d: offload %v without a fast path", i, res.Offload)
	}
	if res.State != New && res.State != Established {
		t.Fatalf("packet %d: offload %v for a %v packet", i, res.Offload, res.State)
	}
	icmp := p.Proto == packet.ProtoICMP || p.Proto == packet.ProtoICMPv6
	ctl := p.Proto == packet.ProtoTCP && p.TCPFlags&(SYN|FIN|RST) != 0
	if res.Offload == OffloadInstall && (!simple(p) || !p.HasPorts || icmp || ctl) {
		t.Fatalf("packet %d: install for %+v", i, p.Tuple)
	}
	if res.Offload == OffloadRemove && p.Proto != packet.ProtoTCP {
		t.Fatalf("packet %d: remove for protocol %d", i, p.Proto)
	}
	info, ok := tb.Get(p.Tuple, now)
	if res.Offload == OffloadInstall && (!ok || !info.Offloaded || p.Proto == packet.ProtoTCP && info.TCPState != TCPEstablished) {
		t.Fatalf("packet %d: installed, but the entry is %v %+v", i, ok, info)
	}
	if res.Offload == OffloadRemove && ok && info.Offloaded && info.Orig == res.Orig {
		t.Fatalf("packet %d: removed, but the entry is still installed", i)
	}
}

// fuzzMaxOps bounds the packets of one input. Longer inputs explore no
// more of the state machine, but the fuzzer's minimizer tries a number of
// candidates quadratic in an input's length: with inputs of hundreds of
// packets it stalled all fuzzing for seconds at a time.
const fuzzMaxOps = 64

// fuzzTrackOne is FuzzTrack's body for one input: pairs of bytes (op,
// arg), at most fuzzMaxOps of them.
func fuzzTrackOne(t testing.TB, tables *[4]*Table, ops []byte) {
	if len(ops) > 2*fuzzMaxOps {
		ops = ops[:2*fuzzMaxOps]
	}
	{
		tb := tables[len(ops)%4]
		tb.resetForFuzz()
		now := int64(time.Hour)
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], ops[i+1]
			from := c
			if op&1 == 1 {
				from = s
			}
			v6 := op&0x40 != 0
			var p *packet.Parsed
			switch op >> 1 & 7 {
			case 0, 1:
				p = pkt(v6, from, packet.ProtoTCP, arg)
			case 2:
				p = pkt(v6, from, packet.ProtoUDP, 0)
			case 3:
				p = icmpPkt(v6, from, arg, uint16(op))
			case 4:
				p = icmpError(v6, from, pkt(v6, from, packet.ProtoUDP, 0))
			case 5:
				p = frag(pkt(v6, from, packet.ProtoUDP, 0), uint16(arg&3)*8, arg&4 != 0)
			default:
				p = pkt(v6, from, 47, 0)
				p.HasPorts = false
			}
			if op&0x80 != 0 {
				p.SrcPort ^= uint16(arg)
			}
			res := tb.Track(p, now)
			if (res.State == Invalid) != (res.Reason != NoReason) {
				t.Fatalf("state %v with reason %v", res.State, res.Reason)
			}
			if res.State == New || res.State == Established {
				if res.Orig != p.Src && res.Orig != p.Dst {
					t.Fatalf("orig %v is neither address of the packet", res.Orig)
				}
			}
			checkFuzzOffload(t, tb, p, res, now, i/2)
			now += int64(arg) * int64(time.Second)
			// Only a packet's own flow gains an entry, in its shard:
			// check that shard's bound after every packet, the whole
			// table's once at the end.
			if simple(p) {
				var fl flow
				tb.setFlow(&fl, &p.Tuple, p.HasPorts)
				if sh := tb.shardOf(fl.h); sh.n > sh.limit {
					t.Fatalf("packet %d: %d entries in a shard limited to %d", i/2, sh.n, sh.limit)
				}
			}
		}
		if n := tb.entriesForFuzz(); n > fuzzLimit {
			t.Fatalf("%d entries over the bound", n)
		}
		if fp, ok := tb.off.(*fuzzFastPath); ok {
			// Everything expires; the fast path saw nothing: exactly the
			// installed connections are forgotten.
			installed := 0
			fp.forgets = 0
			for i := range tb.shards {
				if sh := &tb.shards[i]; sh.n != 0 {
					for _, sl := range sh.tab.Load().slots {
						if sl.h != 0 && sl.e.fp&fpInstalled != 0 {
							installed++
						}
					}
					tb.expireShard(sh, now+int64(MaxTimeout)+1)
				}
			}
			if fp.forgets != installed || tb.entriesForFuzz() != 0 {
				t.Fatalf("final sweep: %d forgotten of %d installed, %d entries left", fp.forgets, installed, tb.entriesForFuzz())
			}
		}
	}
}

// BenchmarkFuzzTrackInput measures FuzzTrack's cost per input, on random
// inputs of up to 32 packets.
func BenchmarkFuzzTrackInput(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	inputs := make([][]byte, 256)
	for i := range inputs {
		inputs[i] = make([]byte, 2+r.IntN(63))
		for j := range inputs[i] {
			inputs[i][j] = byte(r.Uint32())
		}
	}
	tables := newFuzzTables(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		fuzzTrackOne(b, &tables, inputs[i%len(inputs)])
	}
}

// resetForFuzz empties the table without reallocating it: only the shards
// that hold something are cleared (one input touches a few of the 256).
// Not for concurrent use.
func (t *Table) resetForFuzz() {
	for i := range t.shards {
		sh := &t.shards[i]
		if sh.n == 0 && len(sh.frags) == 0 {
			continue
		}
		clear(sh.tab.Load().slots)
		sh.n = 0
		clear(sh.frags)
	}
}

// entriesForFuzz counts the connections without taking the shards' locks
// (Len takes all 256). Not for concurrent use.
func (t *Table) entriesForFuzz() int {
	n := 0
	for i := range t.shards {
		n += t.shards[i].n
	}
	return n
}
