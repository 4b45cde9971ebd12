package conntrack

import "github.com/xdpcluster/xdpcluster/packet"

// TCPState is the kernel's TCP conntrack state (enum tcp_conntrack). Its
// String (generated: tcpstate_string.go) is the kernel's name.
type TCPState uint8

//go:generate go run golang.org/x/tools/cmd/stringer@v0.52.0 -type=TCPState -linecomment -output=tcpstate_string.go

// TCP states, numbered as the kernel numbers them.
const (
	TCPNone        TCPState = iota // NONE
	TCPSynSent                     // SYN_SENT
	TCPSynRecv                     // SYN_RECV
	TCPEstablished                 // ESTABLISHED
	TCPFinWait                     // FIN_WAIT
	TCPCloseWait                   // CLOSE_WAIT
	TCPLastAck                     // LAST_ACK
	TCPTimeWait                    // TIME_WAIT
	TCPClose                       // CLOSE
	TCPSynSent2                    // SYN_SENT2

	// numTCPStates is the number of states (untyped: not a TCPState).
	numTCPStates = iota

	// Transition table results, never stored: sIV and sIG.
	tcpInvalid TCPState = iota // INVALID
	tcpIgnore                  // INVALID
)

// Packet classes, indexing the transition table (get_conntrack_index).
const (
	tcpSyn = iota
	tcpSynAck
	tcpFin
	tcpAck
	tcpRst
	tcpNone
)

func tcpIndex(flags uint8) int {
	switch {
	case flags&packet.TCPRst != 0:
		return tcpRst
	case flags&packet.TCPSyn != 0:
		if flags&packet.TCPAck != 0 {
			return tcpSynAck
		}
		return tcpSyn
	case flags&packet.TCPFin != 0:
		return tcpFin
	case flags&packet.TCPAck != 0:
		return tcpAck
	}
	return tcpNone
}

// tcpValidFlags is the kernel's tcp_valid_flags: the combinations of FIN,
// SYN, RST, ACK and URG it accepts (PSH, ECE and CWR are ignored).
func tcpValidFlags(flags uint8) bool {
	const (
		f = packet.TCPFin
		s = packet.TCPSyn
		r = packet.TCPRst
		a = packet.TCPAck
		u = packet.TCPUrg
	)
	switch flags & (f | s | r | a | u) {
	case s, s | u, s | a, r, r | a, f | a, f | a | u, a, a | u:
		return true
	}
	return false
}

const (
	sNO = TCPNone
	sSS = TCPSynSent
	sSR = TCPSynRecv
	sES = TCPEstablished
	sFW = TCPFinWait
	sCW = TCPCloseWait
	sLA = TCPLastAck
	sTW = TCPTimeWait
	sCL = TCPClose
	sS2 = TCPSynSent2
	sIV = tcpInvalid
	sIG = tcpIgnore
)

// tcpTransitions is the kernel's tcp_conntracks[direction][class][state]
// (net/netfilter/nf_conntrack_proto_tcp.c).
var tcpTransitions = [2][6][numTCPStates]TCPState{
	{ // original direction
		/*           sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2 */
		/* syn    */ {sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2},
		/* synack */ {sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR},
		/* fin    */ {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
		/* ack    */ {sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV},
		/* rst    */ {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		/* none   */ {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
	{ // reply direction
		/*           sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2 */
		/* syn    */ {sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2},
		/* synack */ {sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR},
		/* fin    */ {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
		/* ack    */ {sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG},
		/* rst    */ {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		/* none   */ {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
}

func (t *Table) trackTCP(p *packet.Parsed, f *flow, now int64, r *Result) {
	if !tcpValidFlags(p.TCPFlags) {
		*r = Result{Reason: TCPBadFlags}
		return
	}
	idx := tcpIndex(p.TCPFlags)
	k, srcIsA, h := &f.k, f.srcIsA, f.h
	sh, e := t.lockFlow(f, now)
	defer sh.mu.Unlock()
	if e != nil {
		dir := dirOf(e, srcIsA)
		old := TCPState(e.state)
		nw := tcpTransitions[dir][idx][old]
		replied := e.flags&flagSeenReply != 0
		// A SYN in TIME_WAIT or CLOSE reopens the connection only if its
		// close began with a FIN, or if the last packet was a RST sent in
		// the SYN's direction; otherwise the kernel ignores it.
		reopen := nw == TCPSynSent && old >= TCPTimeWait &&
			(e.flags&flagCloseInit != 0 || e.flags&flagLastRst != 0 && (e.flags&flagLastReply != 0) == (dir == Reply))
		if nw == TCPSynSent && old >= TCPTimeWait && !reopen {
			nw = tcpIgnore
		}
		lastSynOther := e.flags&flagLastSyn != 0 && (e.flags&flagLastReply != 0) != (dir == Reply)
		switch {
		case nw == tcpIgnore && idx == tcpSynAck && lastSynOther && p.Ack == e.born:
			// A SYN/ACK answering the SYN just ignored: client and server
			// are in sync and we are not (e.g. a client reconnecting from
			// its port after the server's RST). Resynchronise as the
			// kernel does: SYN_RECV, and the close forgotten.
			old, nw = TCPSynSent, TCPSynRecv
			e.flags &^= flagCloseInit | flagChallenge
		case old == TCPLastAck && idx == tcpAck && lastSynOther && e.flags&flagChallenge != 0:
			// The peer's challenge ACK (RFC 5961) to a SYN ignored in
			// LAST_ACK does not acknowledge the last FIN: accepted,
			// nothing else changes (the kernel does not even record it
			// as the last packet).
			e.flags &^= flagChallenge
			if dir == Reply {
				e.flags |= flagSeenReply
			}
			off := OffloadNone
			if t.off != nil {
				off = tcpOffload(e, p.TCPFlags, now)
			}
			setResult(r, k, e, dir, stateOf(e), off)
			return
		}
		if !reopen {
			switch nw {
			case tcpInvalid:
				*r = Result{Reason: TCPBadTransition}
				return
			case tcpIgnore:
				// Accepted as part of the connection, state unchanged.
			default:
				if (old == TCPSynRecv || old == TCPEstablished) && nw == TCPEstablished {
					e.flags |= flagAssured
				}
				if nw == TCPFinWait && old != TCPFinWait {
					e.flags |= flagCloseInit
				}
				e.state = uint8(nw)
				// A SYN repeated before any reply (a retransmission, or
				// the reply SYN of a simultaneous open) does not renew
				// the timeout, as in the kernel: a client reusing its
				// port cannot keep an unanswered entry alive forever.
				if replied || idx != tcpSyn || old != TCPSynSent {
					e.expires = now + t.tmo[nw]
				}
			}
			e.flags &^= flagLastRst | flagLastSyn | flagLastReply
			switch idx {
			case tcpRst:
				e.flags |= flagLastRst
			case tcpSyn:
				e.flags |= flagLastSyn
				if nw == tcpIgnore && dir == Original {
					e.born = tcpEnd(p)
					e.flags &^= flagChallenge
					if old == TCPLastAck {
						e.flags |= flagChallenge
					}
				}
			}
			if dir == Reply {
				e.flags |= flagSeenReply | flagLastReply
			}
			off := OffloadNone
			if t.off != nil {
				off = tcpOffload(e, p.TCPFlags, now)
			}
			setResult(r, k, e, dir, stateOf(e), off)
			// A RST on a connection that has seen no reply (typically the
			// server refusing a SYN) deletes it at once, as the kernel's
			// nf_conntrack_tcp_packet does: the packet itself still counts
			// as part of the connection, but a retried SYN on the same
			// port starts a new one, and a second RST belongs to nothing.
			// (A RST is never ignored: it reaches here only as a
			// transition to CLOSE.)
			if idx == tcpRst && !replied {
				sh.removeKey(k, h)
				sh.reset++
			}
			return
		}
		// A SYN reopens a closed connection: forget it and start again
		// with this packet as the original direction. (A connection in
		// the fast path left it when it left ESTABLISHED, so wasIn is
		// only a safeguard.)
		wasIn := e.fp&fpInstalled != 0 && t.off != nil
		var orig packet.Tuple
		if wasIn {
			orig = k.origTuple(e.flags&flagOrigA != 0)
		}
		sh.removeKey(k, h)
		sh.reopened++
		if wasIn {
			t.create(sh, f, uint8(TCPSynSent), t.tmo[TCPSynSent], now, false, r)
			if r.State != Invalid {
				r.Offload = OffloadRemove
			} else {
				t.off.Forget(&orig) // no Result to carry the removal
			}
			return
		}
	}
	var state TCPState
	switch {
	case idx == tcpSyn:
		state = TCPSynSent
	case idx == tcpSynAck:
		t.pickUpSynAck(sh, f, now, r)
		return
	case idx == tcpAck && t.cfg.TCPLoose:
		state = TCPEstablished
	default:
		*r = Result{Reason: TCPNoSyn}
		return
	}
	t.create(sh, f, uint8(state), t.tmo[state], now, false, r)
}

// Admission says which connections the packets of a batch may create
// (TrackBatchAdmit). The dataplane derives it from its interfaces'
// new_connections policies.
type Admission uint8

// Admissions.
const (
	// AdmitOpen: a packet that opens a connection (a TCP SYN, a first
	// datagram, an ICMP query, a mid-stream TCP packet with loose pickup)
	// creates it, with the packet's source as the original source.
	AdmitOpen Admission = 1 << iota
	// AdmitAnswer: a TCP SYN/ACK of a connection whose SYN was not seen
	// records it, with the packet's destination as the original source
	// (pickUpSynAck). Its originator is on the far side of the packet: an
	// interface admits answers when the side its SYN/ACKs go to admits
	// new connections.
	AdmitAnswer
	// AdmitAll is TrackBatch's: everything.
	AdmitAll = AdmitOpen | AdmitAnswer
)

// pickUpSynAck records the connection a SYN/ACK answers when its SYN has
// not been seen (sh locked, no entry for the flow), and sets r.
//
// Every node tracks every connection, owned or not, and drains its
// interfaces independently, so a node can see the server's SYN/ACK before
// the client's SYN. The kernel classes such a SYN/ACK INVALID and records
// nothing (tcp_new accepts only a SYN, or with loose pickup a mid-stream
// packet); a node doing the same would never see the connection
// ESTABLISHED, and if it later took over the connection's bucket it would
// drop it. A SYN/ACK is unambiguous about direction: its destination
// opened the connection. So the connection is recorded from it, oriented
// and tagged exactly as if the SYN had been seen (the original source is
// the SYN/ACK's destination, Config.Tag's bucket is the client's), in
// the state the kernel reaches after SYN and SYN/ACK: SYN_RECV with a
// reply seen, and SYN_RECV's short timeout (60 s by default), so a SYN/ACK
// of a connection never opened (spoofed, or its SYN lost before it
// reached the server) costs an entry for that long, like an unanswered
// SYN, and is then expired (Stats: one Insert, one PickedUp, one Expired).
//
// Verdicts: the SYN/ACK itself is ESTABLISHED in the reply direction with
// the client's address and tag, the Result it would have had after the
// SYN. The cluster verdict (owned or foreign) follows from the tag as for
// every packet: the owner of the client's bucket forwards it, every other
// node counts it foreign; only tracking changes, not which node carries a
// connection. The packets that follow are classed by the kernel's table
// as usual: the client's ACK (or first data) makes the connection
// ESTABLISHED (and assured); the server's data before that is accepted
// and leaves it SYN_RECV, as in the kernel; the client's SYN arriving
// late is an original-direction SYN in SYN_RECV, which the kernel's table
// ignores like a retransmitted SYN: classed ESTABLISHED (a reply has been
// seen), state and timeout unchanged, never INVALID, so an owner forwards
// it as it forwards any retransmitted SYN. A retransmitted SYN/ACK is
// ignored the same way.
//
// This applies with loose pickup on too (the kernel, loose or not, never
// picks up a SYN/ACK): without it, the server's first data segment after
// the SYN/ACK would be picked up with the server as original source.
//
// A SYN/ACK refused by its flow's Admission (AdmitAnswer not given: the
// originator's side refuses new connections) creates nothing and is
// INVALID with reason NewRefused; its connection is then tracked only if
// the client's SYN arrives where it may open it. The fast path is not
// involved: the entry is not ESTABLISHED yet.
func (t *Table) pickUpSynAck(sh *shard, f *flow, now int64, r *Result) {
	k, h := &f.k, f.h
	if f.refuse&AdmitAnswer != 0 {
		*r = Result{Reason: NewRefused}
		return
	}
	if sh.n >= sh.limit && !sh.earlyDrop(t, h, now) {
		sh.full++
		*r = Result{Reason: TableFull}
		return
	}
	// The packet's destination is the original source; the packet itself
	// is the reply (the last packet seen, in the reply direction).
	e := entry{expires: now + t.tmo[TCPSynRecv], state: uint8(TCPSynRecv), flags: flagSeenReply | flagLastReply}
	orig := k.addr(0)
	if f.srcIsA {
		orig = k.addr(1)
	} else {
		e.flags |= flagOrigA
	}
	if t.cfg.Tag != nil {
		e.tag = t.cfg.Tag(k.family(), orig)
	}
	sh.inserts++
	sh.pickedUp++
	setResult(r, k, sh.put(k, h, e), Reply, Established, OffloadNone)
}

// tcpEnd is the sequence number just past a segment: its sequence
// number, plus its payload, plus one for a SYN and one for a FIN (the
// kernel's segment_seq_plus_len).
func tcpEnd(p *packet.Parsed) uint32 {
	end := p.Seq
	if p.PayloadOff != 0 && p.End > p.PayloadOff {
		end += uint32(p.End - p.PayloadOff)
	}
	if p.TCPFlags&packet.TCPSyn != 0 {
		end++
	}
	if p.TCPFlags&packet.TCPFin != 0 {
		end++
	}
	return end
}
