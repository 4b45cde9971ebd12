package conntrack

import "github.com/xdpcluster/xdpcluster/packet"

// Offload is what the tracker asks its caller to do with a packet's
// connection in a kernel fast path (Result.Offload): the XDP flow cache
// carries a connection's packets without the tracker seeing them, so the
// tracker says when one may enter it and when it must leave.
type Offload uint8

// Offload actions.
const (
	// Nothing to do.
	OffloadNone Offload = iota
	// Install (or re-install) the connection: a TCP connection that is
	// ESTABLISHED, a datagram connection at its second packet.
	OffloadInstall
	// Remove it: the connection is closing (FIN, RST) or gone.
	OffloadRemove
)

// Offloader is a kernel fast path holding the connections the tracker
// asked to install. The table's sweeper asks it before it expires an
// installed connection, so that a connection carried by the fast path
// never expires while active, and tells it when it removes one.
type Offloader interface {
	// Seen reports when each direction of the connection whose original
	// direction is orig last passed through the fast path, in the
	// table's clock (0: never), and whether the fast path still holds
	// it.
	Seen(orig *packet.Tuple) (origLast, replyLast int64, ok bool)
	// Forget removes the connection from the fast path.
	Forget(orig *packet.Tuple)
}

// SetOffloader gives the table a kernel fast path: from then on Track,
// TrackBatch and TrackBatchExisting say in Result.Offload when a
// connection may enter it and when it must leave, and the expiry asks it
// before removing a connection it holds (see Offloader). Call it once,
// before any packet is tracked and before a Sweeper starts; o must be nil
// (no fast path: Result.Offload is always OffloadNone) or usable, not a
// typed nil.
//
// What enters the fast path: a TCP connection ESTABLISHED with a reply
// seen, at a packet without SYN, FIN or RST (the handshake's last ACK);
// a connection of a datagram protocol with ports (UDP, UDP-Lite, SCTP,
// DCCP) at its second packet, in either direction. ICMP and the protocols without ports never
// enter it, and the packets that only refer to a connection (ICMP errors,
// later fragments) never change it. A packet of an installed connection
// that still reaches the tracker means the fast path lost it (evicted
// from its LRU, or a packet it could not forward): it is installed again,
// at most once per fpStale epochs (about a second) per connection. A TCP
// connection leaves when it leaves ESTABLISHED (FIN, RST) or is deleted or
// reopened.
//
// An installed connection whose timeout ran out stays in the table until
// the sweep (Expire) has asked the fast path when it last carried the
// connection's packets: it is kept while that is within the timeout, and
// removed from both when idle. Lookups in between treat it as live (a
// packet of it reaching the tracker is itself a sign of life), so no
// packet ever waits for the fast path.
func (t *Table) SetOffloader(o Offloader) { t.off = o }

// The fast path state of an entry (entry.fp): fpInstalled, and in the low
// bits the epoch (now >> fpEpochShift, about 134 ms, wrapping every 128
// epochs or 17 s) of the last install.
const (
	fpInstalled  = 0x80
	fpEpochMask  = 0x7f
	fpEpochShift = 27
	// fpStale is how many epochs after an install (7.5 to 8.5 of them:
	// 0.94 to 1.07 s) a packet of the connection reaching the tracker
	// installs it again. After the epoch wraps (17 s), a connection may
	// look freshly installed: its re-install then waits at most fpStale
	// epochs more.
	fpStale = 8
)

func fpEpoch(now int64) uint8 { return uint8(now>>fpEpochShift) & fpEpochMask }

// install marks e installed at now and returns OffloadInstall, unless it
// is installed already and not stale (OffloadNone).
func install(e *entry, now int64) Offload {
	ep := fpEpoch(now)
	if e.fp&fpInstalled != 0 && (ep-e.fp)&fpEpochMask < fpStale {
		return OffloadNone
	}
	e.fp = fpInstalled | ep
	return OffloadInstall
}

// tcpOffload decides a TCP connection's fast path after a packet with the
// given flags changed it: install when ESTABLISHED (with a reply seen) at
// a packet without SYN, FIN or RST; remove when installed and no longer
// ESTABLISHED.
func tcpOffload(e *entry, flags uint8, now int64) Offload {
	if TCPState(e.state) == TCPEstablished {
		if e.flags&flagSeenReply != 0 && flags&(packet.TCPSyn|packet.TCPFin|packet.TCPRst) == 0 {
			return install(e, now)
		}
		return OffloadNone
	}
	if e.fp&fpInstalled != 0 {
		e.fp = 0
		return OffloadRemove
	}
	return OffloadNone
}

// origTuple returns the original direction of an installed connection
// (one with ports) as the Offloader's methods take it.
func (k *key) origTuple(origA bool) packet.Tuple {
	m := k.w[4]
	tp := packet.Tuple{Proto: uint8(m >> 32), Family: packet.Family(m >> 40), HasPorts: true}
	if origA {
		tp.Src, tp.Dst, tp.SrcPort, tp.DstPort = k.addr(0), k.addr(1), uint16(m), uint16(m>>16)
	} else {
		tp.Src, tp.Dst, tp.SrcPort, tp.DstPort = k.addr(1), k.addr(0), uint16(m>>16), uint16(m)
	}
	return tp
}

// refreshOffloaded asks the fast path about an installed connection (sh
// locked) and applies the answer (applySeen). It returns the original
// tuple and whether the connection is live at now.
//
// Seen is a system call (about 1 µs) made here under the shard's lock:
// refreshOffloaded serves the snapshot and the export's copies; the sweep
// asks without the lock (Expire).
func (t *Table) refreshOffloaded(s *slot, now int64) (packet.Tuple, bool) {
	tp := s.k.origTuple(s.e.flags&flagOrigA != 0)
	origLast, replyLast, ok := t.off.Seen(&tp)
	return tp, t.applySeen(&s.e, &s.k, origLast, replyLast, ok, now)
}

// applySeen moves an installed connection's expiry to the fast path's
// last packet plus its timeout when that is later, given what Seen said
// (sh locked). A datagram connection whose reply passed the fast path has
// seen a reply, and gets the replied timeout (and is assured) once it
// lived 2 s after the reply, as trackDatagram does. It returns whether the
// connection is live at now (false: the fast path no longer holds it, or
// it is idle).
func (t *Table) applySeen(e *entry, k *key, origLast, replyLast int64, ok bool, now int64) bool {
	if !ok {
		return e.expires > now
	}
	last := max(origLast, replyLast)
	if last <= 0 {
		return e.expires > now
	}
	var timeout int64
	if isTCP(k) {
		timeout = t.tmo[e.state]
	} else {
		if replyLast != 0 {
			e.flags |= flagSeenReply
		}
		timeout = t.udpU
		if e.flags&flagSeenReply != 0 && pastTwoSeconds(uint32(last/1e6), e.born) {
			timeout = t.udpR
			e.flags |= flagAssured
		}
	}
	e.expires = max(e.expires, last+timeout)
	return e.expires > now
}
