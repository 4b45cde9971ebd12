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
		if unconfirmed(e) {
			// Recorded from its SYN/ACK: only the originator, where it
			// may open connections, confirms it (pickUpSynAck).
			switch {
			case dir == Reply:
				*r = Result{Reason: TCPNoSyn}
				return
			case f.noNew:
				*r = Result{Reason: NewRefused}
				return
			}
			e.flags &^= flagUnconfirmed
		}
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
		if nw == tcpIgnore && idx == tcpSynAck && dir == Reply && (old == TCPTimeWait || old == TCPClose) &&
			!lastSynOther && e.fp&fpInstalled == 0 {
			// The SYN/ACK of a new connection reusing the ports of one
			// that closed, ahead of the SYN that would have reopened
			// it (a non-owner draining the servers' side first): the
			// closed connection is forgotten and the new one recorded
			// from the SYN/ACK, as when nothing was there (the kernel
			// ignores it, and its SYN_SENT would then refuse the
			// client's ACK). The record is confirmed at once: the
			// closed connection had the same originator, admitted
			// already, and its peer could send it packets in TIME_WAIT
			// or CLOSE anyway; the SYN/ACK is ESTABLISHED, as the
			// kernel classes it. A SYN/ACK answering a SYN ignored in
			// CLOSE is the kernel's resynchronisation, below.
			sh.removeKey(k, h)
			sh.reopened++
			t.pickUpSynAck(sh, f, true, now, r)
			return
		}
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
		t.pickUpSynAck(sh, f, false, now, r)
		return
	case idx == tcpAck && t.cfg.TCPLoose:
		state = TCPEstablished
	default:
		*r = Result{Reason: TCPNoSyn}
		return
	}
	t.create(sh, f, uint8(state), t.tmo[state], now, false, r)
}

// flagUnconfirmed marks a TCP connection recorded from its SYN/ACK
// whose originator has not spoken yet (pickUpSynAck). It shares its bit
// with flagCloseInit, which no connection in SYN_RECV has (a close
// begins in FIN_WAIT, and every way back to SYN_RECV clears it or starts
// a new entry): it is only ever set, and only means this, in SYN_RECV.
const flagUnconfirmed = flagCloseInit

// unconfirmed reports whether e is a connection recorded from its SYN/ACK
// whose originator has not spoken yet.
func unconfirmed(e *entry) bool {
	return e.flags&flagUnconfirmed != 0 && TCPState(e.state) == TCPSynRecv
}

// pickUpSynAck records the connection a SYN/ACK answers when its SYN has
// not been seen (sh locked, no entry for the flow), and sets r.
//
// Every node tracks every connection, owned or not, and drains its
// interfaces independently, so a node can see the server's SYN/ACK before
// the client's SYN. The kernel classes such a SYN/ACK INVALID and records
// nothing (tcp_new accepts only a SYN, or with loose pickup a mid-stream
// packet); a node doing only that would class the client's SYN (when it
// comes) NEW and its ACK INVALID (the kernel's SYN_SENT refuses it), never
// see the connection ESTABLISHED, and drop it if it later took over the
// connection's bucket. A SYN/ACK is unambiguous about direction: its
// destination opened the connection. So the connection is recorded from
// it, oriented and tagged exactly as if the SYN had been seen (the
// original source is the SYN/ACK's destination, Config.Tag's bucket the
// client's), in the state the kernel reaches after SYN and SYN/ACK:
// SYN_RECV, a reply seen, with SYN_RECV's short timeout (60 s by
// default). A SYN/ACK of a connection never opened (spoofed, or its SYN
// never reached this node's side) costs an entry for that long, like an
// unanswered SYN, evictable, and then expires: Stats count one insert,
// one PickedUp and one Expired.
//
// Verdicts are unchanged; only tracking changes. The record is
// unconfirmed (flagUnconfirmed) until the connection's originator speaks:
// until then the SYN/ACK itself and every packet from its sender are
// INVALID (tcp_no_syn, as the kernel classes them and as they were
// before), change nothing (they neither renew the timeout nor move the
// state), and ICMP errors and later fragments find no connection
// (lookup). So the record passes nothing by itself: a forged SYN/ACK
// cannot open a path to the address it names. The originator's first
// packet (its late SYN, its ACK, its data) confirms it and is classed as
// after a handshake seen whole: the late SYN is an original-direction
// SYN in SYN_RECV, which the kernel's table ignores like a retransmitted
// SYN (ESTABLISHED, a reply having been seen; state and timeout
// unchanged, never INVALID, so an owner forwards it as any retransmitted
// SYN); the ACK or data makes the connection ESTABLISHED and assured.
// From then on every packet, either way, is classed as usual, with the
// client's tag: the cluster verdict (owned or foreign) follows from it
// as for every packet.
//
// Interface policies follow the originator's side exactly: the packet
// that confirms the record arrives on the originator's side, and where
// new connections are refused (TrackBatchExisting) it confirms nothing
// and is INVALID with reason new_refused, as the originator's SYN would
// have been. The SYN/ACK itself is recorded wherever it arrives (it
// comes from the answering side, which may well refuse new connections:
// a gateway's servers' side); its record passes nothing until confirmed.
//
// This applies with loose pickup on too (the kernel, loose or not, never
// picks up a SYN/ACK): the record also keeps the server's next segment
// from being picked up the wrong way round, with the server as original
// source. The fast path is not involved: the entry is not ESTABLISHED.
//
// confirmed: the record replaces a closed connection of the same
// originator (see trackTCP); it is confirmed from the start, and the
// SYN/ACK is ESTABLISHED in the reply direction.
func (t *Table) pickUpSynAck(sh *shard, f *flow, confirmed bool, now int64, r *Result) {
	k, h := &f.k, f.h
	if sh.n >= sh.limit && !sh.earlyDrop(t, h, now) {
		sh.full++
		*r = Result{Reason: TableFull}
		return
	}
	// The packet's destination is the original source; the packet itself
	// is the reply (the last packet seen, in the reply direction).
	e := entry{expires: now + t.tmo[TCPSynRecv], state: uint8(TCPSynRecv), flags: flagSeenReply | flagLastReply | flagUnconfirmed}
	orig := k.addr(0)
	if f.srcIsA {
		orig = k.addr(1)
	} else {
		e.flags |= flagOrigA
	}
	if t.cfg.Tag != nil {
		e.tag = t.cfg.Tag(k.family(), orig)
	}
	if confirmed {
		e.flags &^= flagUnconfirmed
	}
	p := sh.put(k, h, e)
	sh.inserts++
	sh.pickedUp++
	if confirmed {
		setResult(r, k, p, Reply, Established, OffloadNone)
		return
	}
	*r = Result{Reason: TCPNoSyn}
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
