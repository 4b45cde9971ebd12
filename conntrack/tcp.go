package conntrack

import "github.com/xdpcluster/xdpcluster/packet"

// TCPState is the kernel's TCP conntrack state (enum tcp_conntrack).
type TCPState uint8

// TCP states, numbered as the kernel numbers them.
const (
	TCPNone TCPState = iota
	TCPSynSent
	TCPSynRecv
	TCPEstablished
	TCPFinWait
	TCPCloseWait
	TCPLastAck
	TCPTimeWait
	TCPClose
	TCPSynSent2
	numTCPStates
	tcpInvalid // sIV
	tcpIgnore  // sIG
)

var tcpStateNames = [...]string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

func (s TCPState) String() string {
	if s < numTCPStates {
		return tcpStateNames[s]
	}
	return "INVALID"
}

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
