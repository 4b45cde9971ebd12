// Package conntrack is a user-space connection tracker with the semantics
// the cluster match relies on: every packet of a connection, either
// direction, and every ICMP error about it, resolves to the connection's
// original source address, so every node hashes it the same way.
//
// It classifies packets as the kernel's conntrack does for iptables'
// --ctstate (NEW, ESTABLISHED, RELATED, INVALID, UNTRACKED), with the
// kernel's TCP state machine and default timeouts. TCP loose pickup is off
// unless configured: a mid-stream packet of an unknown connection is
// INVALID and creates nothing. Sequence-number window checks are not made
// (like nf_conntrack_tcp_be_liberal=1). UDP-Lite, SCTP and DCCP are
// tracked like UDP, by ports; other protocols by address pair.
//
// A Table is safe for concurrent use. It is split into shards, each with
// its own lock, map and counters; a connection's two directions hash to
// the same shard (the key is direction-free), so a request and its reply
// handled by different workers meet in one place. Time is passed in by the
// caller as nanoseconds since one Clock's origin; expiry happens on lookup
// and in Expire, which sweeps one shard at a time (a Sweeper calls it in
// the background); a connection installed in a kernel fast path
// (SetOffloader) expires only in Expire, which asks the fast path first. WriteSnapshot and ReadSnapshot carry the table across
// a restart; Export and Merge carry it, live, to a node that starts while
// its peers run.
// Track allocates nothing once the table has grown to its working size.
package conntrack

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdpcluster/xdpcluster/packet"
)

// State is a packet's connection tracking state; its String (generated:
// state_string.go) is the name iptables --ctstate gives it.
type State uint8

//go:generate go run golang.org/x/tools/cmd/stringer@v0.52.0 -type=State,Reason -linecomment -output=state_string.go

// Packet states.
const (
	// No connection: matches no cluster rule
	Invalid State = iota // INVALID
	// Original direction, no reply seen yet
	New // NEW
	// The connection has seen a reply
	Established // ESTABLISHED
	// An ICMP error about a tracked connection
	Related // RELATED
	// ICMPv6 neighbour discovery / MLD, which the kernel never tracks
	Untracked // UNTRACKED

	// NumStates is the number of states (untyped: not a State).
	NumStates = iota
)

// Reason says why a packet is Invalid; it indexes per-worker counters.
// Its String (generated: state_string.go) is the metric label.
type Reason uint8

// Reasons for Invalid.
const (
	// Not invalid (the label is never a counter's)
	NoReason Reason = iota // none
	// Mid-stream TCP packet of an unknown connection (loose pickup off),
	// or a SYN/ACK (or a later packet from its sender) of a connection
	// whose SYN was not seen (pickUpSynAck)
	TCPNoSyn // tcp_no_syn
	// A flag combination the kernel rejects (e.g. SYN+FIN, no flags)
	TCPBadFlags // tcp_bad_flags
	// A packet the TCP state machine rejects (e.g. SYN/ACK from the client)
	TCPBadTransition // tcp_bad_transition
	// An ICMP reply or non-query type with no connection
	ICMPNotNew // icmp_not_new
	// An ICMP error about no tracked connection
	ICMPErrorNoConn // icmp_error_no_conn
	// An ICMP error not addressed to the embedded packet's source
	ICMPErrorMismatch // icmp_error_mismatch
	// An ICMP error whose embedded packet is unreadable
	ICMPErrorBadInner // icmp_error_bad_inner
	// A non-first fragment whose first fragment was not seen
	FragNoHead // fragment_without_head
	// No room, and nothing that may be evicted
	TableFull // table_full
	// Not an IP packet
	NotIP // not_ip
	// Would open a connection, but arrived where new connections are
	// refused (TrackBatchExisting): only packets of known connections
	// pass (a TCP connection recorded from its SYN/ACK is known once its
	// originator has spoken where it may open it: pickUpSynAck)
	NewRefused // new_refused

	// NumReasons is the number of reasons (untyped: not a Reason).
	NumReasons = iota
)

// Dir is a packet's direction within its connection.
type Dir uint8

// Directions.
const (
	Original Dir = iota
	Reply
)

// TagFunc computes Config.Tag's value for a new connection from its
// original source address (IPv4 in orig[0:4]).
type TagFunc func(family packet.Family, orig [16]byte) uint8

// Result is what Track says about one packet.
type Result struct {
	State  State
	Reason Reason // when State is Invalid
	Dir    Dir
	Family packet.Family // of Orig
	Tag    uint8         // Config.Tag's value for the connection
	Orig   [16]byte      // the connection's original source address (IPv4 in [0:4])
	// Offload says whether to install the connection in a kernel fast
	// path or remove it from there (see Offload); only when the table has
	// an Offloader.
	Offload Offload
}

// entry flags.
const (
	flagOrigA     = 1 << iota // the original source is side a
	flagSeenReply             // a reply has been seen
	flagAssured               // kept when the table is full
	flagCloseInit             // TCP: the close began with a FIN (IP_CT_TCP_FLAG_CLOSE_INIT)
	flagLastRst               // TCP: the last packet was a RST...
	flagLastReply             // ...or anything else, sent in the reply direction
	flagLastSyn               // TCP: the last packet was a SYN
	flagChallenge             // TCP: a SYN was ignored in LAST_ACK; its peer may answer with a challenge ACK (IP_CT_EXP_CHALLENGE_ACK)
)

type entry struct {
	expires int64 // ns
	// born is when the entry was created (ms, wrapping; only differences
	// are used), for UDP-like protocols. TCP has no use for it there and
	// keeps in it the end sequence (seq + length + 1) of the last SYN it
	// ignored (the kernel's last_end), valid while flagLastSyn is set.
	born  uint32
	state uint8 // TCPState for TCP
	flags uint8
	tag   uint8
	// fp is the connection's fast path state (offload.go): fpInstalled,
	// and the epoch of the last install in the low bits. Never saved in a
	// snapshot (the fast path is empty after a restart).
	fp uint8
}

// Stats are the table's own counters.
type Stats struct {
	Entries     int    // connections now
	Inserts     uint64 // connections created
	Expired     uint64 // removed by timeout
	Evicted     uint64 // removed early to make room for a new connection
	TableFull   uint64 // new connections refused: nothing evictable
	Reopened    uint64 // TCP connections reopened by a SYN in TIME_WAIT/CLOSE, or replaced there by a new one's SYN/ACK ahead of its SYN
	Reset       uint64 // TCP connections deleted by a RST before any reply (a refused SYN)
	PickedUp    uint64 // TCP connections recorded from the server's SYN/ACK, their SYN not seen yet (counted in Inserts too)
	Fragments   int    // datagrams in the fragment table now
	FragEvicted uint64 // fragment records dropped to make room
}

const numShards = 256

type shard struct {
	mu       sync.Mutex
	tab      atomic.Pointer[slotTable] // replaced (under mu) when it grows
	n        int                       // connections
	frags    map[fragKey]fragEntry
	limit    int
	fragLim  int
	inserts  uint64
	expired  uint64
	evicted  uint64
	full     uint64
	reopened uint64
	reset    uint64
	pickedUp uint64
	fragEv   uint64
	// forgets are removals from the fast path queued under the lock
	// (forgetLater), made by Expire after unlocking; spare is the other
	// buffer of the pair.
	forgets, spare []packet.Tuple
	// asks is the batch buffer of the Expire that has asking set (see
	// expireShard), allocated at the shard's first sweep with a fast path.
	asks   *[seenBatch]seenAsk
	asking bool
	_      [64]byte // keep neighbouring shards' locks off this cache line
}

// Table is a connection tracker. Create it with NewTable.
type Table struct {
	cfg    Config
	tmo    [numTCPStates]int64
	udpU   int64
	udpR   int64
	icmp   int64
	gen    int64
	frag   int64
	seed   seed
	off    Offloader // nil: no fast path (SetOffloader)
	shards [numShards]shard
	cursor atomic.Uint32
}

// flow is a packet's connection key, the key's hash and whether the
// packet's source is the key's side a.
type flow struct {
	k      key
	h      uint64
	srcIsA bool
	noNew  bool // refuse to open a connection (TrackBatchExisting)
}

// setFlow computes a flow in place (no copy of the key).
func (t *Table) setFlow(f *flow, tp *packet.Tuple, ports bool) {
	f.srcIsA = setKey(&f.k, tp, ports)
	f.h = f.k.hash(&t.seed)
}

// NewTable returns an empty table. It returns an error naming the field
// when cfg is invalid.
func NewTable(cfg Config) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	t := &Table{cfg: cfg, seed: newSeed()}
	to := cfg.Timeouts
	for s, d := range map[TCPState]time.Duration{TCPSynSent: to.SynSent, TCPSynRecv: to.SynRecv, TCPEstablished: to.Established,
		TCPFinWait: to.FinWait, TCPCloseWait: to.CloseWait, TCPLastAck: to.LastAck, TCPTimeWait: to.TimeWait,
		TCPClose: to.Close, TCPSynSent2: to.SynSent2} {
		t.tmo[s] = int64(d)
	}
	t.udpU, t.udpR, t.icmp, t.gen, t.frag = int64(to.UDPUnreplied), int64(to.UDPReplied), int64(to.ICMP), int64(to.Generic), int64(cfg.FragTimeout)
	per := (cfg.MaxEntries + numShards - 1) / numShards
	fper := (cfg.MaxFragments + numShards - 1) / numShards
	for i := range t.shards {
		t.shards[i].tab.Store(&slotTable{slots: make([]slot, minSlots), mask: minSlots - 1})
		t.shards[i].frags = make(map[fragKey]fragEntry)
		t.shards[i].limit = per
		t.shards[i].fragLim = fper
	}
	return t, nil
}

// Config returns the table's configuration with defaults filled in.
func (t *Table) Config() Config { return t.cfg }

// setKey writes the direction-free key of a tuple into k and returns
// whether the tuple's source is side a. It writes in place, each word
// once: copying a key out of a freshly built local reads back words stored
// a moment before, which stalls the CPU's store forwarding.
func setKey(k *key, tp *packet.Tuple, ports bool) (srcIsA bool) {
	s0, s1 := binary.LittleEndian.Uint64(tp.Src[0:]), binary.LittleEndian.Uint64(tp.Src[8:])
	d0, d1 := binary.LittleEndian.Uint64(tp.Dst[0:]), binary.LittleEndian.Uint64(tp.Dst[8:])
	var sp, dp uint64
	if ports {
		sp, dp = uint64(tp.SrcPort), uint64(tp.DstPort)
	}
	meta := uint64(tp.Proto)<<32 | uint64(tp.Family)<<40
	if s0 < d0 || s0 == d0 && (s1 < d1 || s1 == d1 && sp <= dp) {
		k.w[0], k.w[1], k.w[2], k.w[3], k.w[4] = s0, s1, d0, d1, sp|dp<<16|meta
		return true
	}
	k.w[0], k.w[1], k.w[2], k.w[3], k.w[4] = d0, d1, s0, s1, dp|sp<<16|meta
	return false
}

func (t *Table) shardOf(h uint64) *shard { return &t.shards[h>>56] }

// Track classifies one decoded packet and updates its connection. p must
// come from a successful packet.Decode. now is the current time in
// nanoseconds.
func (t *Table) Track(p *packet.Parsed, now int64) (r Result) {
	t.track(p, nil, now, &r)
	return r
}

// simple reports whether p's connection key is its own tuple (not a later
// fragment, not an ICMP error), so TrackBatch can compute it ahead.
func simple(p *packet.Parsed) bool {
	return p.Family != 0 && (!p.Fragment || p.FragOffset == 0) && !p.ICMPError
}

// track is Track with, optionally, the packet's flow already computed
// (only for simple packets).
func (t *Table) track(p *packet.Parsed, f *flow, now int64, r *Result) {
	if p.Family == 0 {
		*r = Result{Reason: NotIP}
		return
	}
	if p.Fragment {
		if p.FragOffset == 0 {
			if p.HasPorts {
				t.rememberFragment(p, now)
			}
		} else {
			*r = t.trackLaterFragment(p, now)
			return
		}
	}
	var fl flow
	if f == nil && simple(p) {
		t.setFlow(&fl, &p.Tuple, p.HasPorts)
		f = &fl
	}
	switch {
	case p.Proto == packet.ProtoTCP && p.HasPorts:
		t.trackTCP(p, f, now, r)
		return
	case p.Proto == packet.ProtoICMP && p.Family == packet.IPv4, p.Proto == packet.ProtoICMPv6 && p.Family == packet.IPv6:
		switch {
		case p.ICMPError:
			*r = t.trackICMPError(p, now)
			return
		case p.ICMPQuery:
			t.trackICMPQuery(p, f, now, r)
			return
		case p.Family == packet.IPv6 && icmp6Untracked(p.ICMPType):
			*r = Result{State: Untracked, Family: packet.IPv6, Orig: p.Src}
			return
		}
		*r = Result{Reason: ICMPNotNew}
		return
	case p.HasPorts:
		t.trackDatagram(f, now, t.udpU, t.udpR, t.off != nil, r)
		return
	}
	t.trackDatagram(f, now, t.gen, t.gen, false, r)
}

func result(k *key, e *entry, dir Dir, st State) (r Result) {
	setResult(&r, k, e, dir, st, OffloadNone)
	return r
}

// setResult writes a connection's result field by field: building a
// Result and copying it would make wide loads of freshly written bytes,
// which stall the CPU's store forwarding (measured in TrackBatch).
func setResult(r *Result, k *key, e *entry, dir Dir, st State, off Offload) {
	r.State, r.Reason, r.Dir, r.Family, r.Tag, r.Offload = st, 0, dir, k.family(), e.tag, off
	i := 1
	if e.flags&flagOrigA != 0 {
		i = 0
	}
	binary.LittleEndian.PutUint64(r.Orig[0:], k.w[2*i])
	binary.LittleEndian.PutUint64(r.Orig[8:], k.w[2*i+1])
}

// lockFlow locks the flow's shard (the caller unlocks it) and returns the
// flow's connection, nil if there is none.
func (t *Table) lockFlow(f *flow, now int64) (*shard, *entry) {
	sh := t.shardOf(f.h)
	sh.mu.Lock()
	return sh, sh.get(&f.k, f.h, now)
}

// lookup finds the connection of tuple tp (its key written to k) and
// returns a copy of its entry, changing nothing: for the packets that only
// refer to a connection (ICMP errors, later fragments). A connection
// recorded from its SYN/ACK whose originator has not spoken yet is none:
// nothing may refer to it (pickUpSynAck).
func (t *Table) lookup(k *key, tp *packet.Tuple, now int64) (e entry, srcIsA, ok bool) {
	srcIsA = setKey(k, tp, tp.HasPorts)
	h := k.hash(&t.seed)
	sh := t.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if p := sh.get(k, h, now); p != nil && !unconfirmed(p) {
		return *p, srcIsA, true
	}
	return entry{}, srcIsA, false
}

// dirOf returns a packet's direction within connection e.
func dirOf(e *entry, srcIsA bool) Dir {
	if srcIsA == (e.flags&flagOrigA != 0) {
		return Original
	}
	return Reply
}

// stateOf is NEW until the connection has seen a reply, then ESTABLISHED.
func stateOf(e *entry) State {
	if e.flags&flagSeenReply != 0 {
		return Established
	}
	return New
}

// create inserts the flow's new connection, whose original source is the
// packet's source (sh locked), and sets r: NEW, or TableFull when there is
// no room. offload: install it in the fast path (OffloadInstall in r).
func (t *Table) create(sh *shard, f *flow, state uint8, timeout, now int64, offload bool, r *Result) {
	k, h := &f.k, f.h
	if f.noNew {
		*r = Result{Reason: NewRefused}
		return
	}
	if sh.n >= sh.limit && !sh.earlyDrop(t, h, now) {
		sh.full++
		*r = Result{Reason: TableFull}
		return
	}
	e := entry{expires: now + timeout, born: uint32(now / 1e6), state: state}
	orig := k.addr(1)
	if f.srcIsA {
		e.flags = flagOrigA
		orig = k.addr(0)
	}
	if t.cfg.Tag != nil {
		e.tag = t.cfg.Tag(k.family(), orig)
	}
	off := OffloadNone
	if offload {
		off = install(&e, now)
	}
	sh.inserts++
	setResult(r, k, sh.put(k, h, e), Original, New, off)
}

// Expire removes timed-out entries from the next n shards (round robin)
// and returns how many it removed. Only one shard is locked at a time, so
// packets are never stopped for a whole-table scan: call it from a
// background goroutine, e.g. Expire(now, 16) every 100 ms sweeps the table
// every 1.6 s.
func (t *Table) Expire(now int64, n int) int {
	removed := 0
	for i := 0; i < n && i < numShards; i++ {
		removed += t.expireShard(&t.shards[t.cursor.Add(1)%numShards], now)
	}
	return removed
}

// expireShard removes one shard's timed-out entries and returns how many.
// Installed connections past their timeout are asked about (Seen, a
// system call each) without the shard's lock, so no worker waits on a
// mass expiry; each answer is settled under the lock, and the shard is
// swept again while a batch came back full.
func (t *Table) expireShard(sh *shard, now int64) int {
	sh.mu.Lock()
	// The batch buffer is the shard's (Seen's argument escapes, so it
	// cannot live on the stack), used by one Expire at a time: another
	// one meanwhile removes only what needs no question.
	asks := sh.asks
	if t.off != nil && !sh.asking {
		if asks == nil {
			sh.asks = new([seenBatch]seenAsk)
			asks = sh.asks
		}
		sh.asking = true
	} else {
		asks = nil
	}
	var buf []seenAsk
	if asks != nil {
		buf = asks[:]
	}
	removed, asked, next := sh.sweep(t, now, buf, 0)
	for k, f := range sh.frags {
		if f.expires <= now {
			delete(sh.frags, k)
		}
	}
	sh.mu.Unlock()
	for asked > 0 {
		for j := range buf[:asked] {
			a := &buf[j]
			a.origLast, a.replyLast, a.ok = t.off.Seen(&a.tp)
		}
		sh.mu.Lock()
		r, lowest := sh.settle(t, now, buf[:asked])
		sh.mu.Unlock()
		removed += r
		t.flushForgets(sh) // no Forget waits for the next batch, none is made under the lock
		if asked < len(buf) {
			break
		}
		// The batch was full: go on from where it stopped, or from the
		// lowest slot the batch emptied (later entries shift back into
		// it). Settled entries are no longer expired, so the rescan of
		// that stretch only steps over them.
		sh.mu.Lock()
		r, asked, next = sh.sweep(t, now, buf, min(next, lowest))
		sh.mu.Unlock()
		removed += r
	}
	if asks != nil {
		sh.mu.Lock()
		sh.asking = false
		sh.mu.Unlock()
	}
	t.flushForgets(sh)
	return removed
}

// flushForgets makes the shard's queued removals from the fast path
// (forgetLater) without holding its lock.
func (t *Table) flushForgets(sh *shard) {
	sh.mu.Lock()
	forgets := sh.forgets
	sh.forgets = sh.spare[:0]
	sh.mu.Unlock()
	if len(forgets) == 0 {
		return
	}
	for j := range forgets {
		t.off.Forget(&forgets[j])
	}
	sh.mu.Lock()
	sh.spare = forgets[:0] // reused: the queue allocates only while it grows
	sh.mu.Unlock()
}

// Stats sums the shards' counters. It locks each shard briefly in turn.
func (t *Table) Stats() Stats {
	var s Stats
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		s.Entries += sh.n
		s.Fragments += len(sh.frags)
		s.Inserts += sh.inserts
		s.Expired += sh.expired
		s.Evicted += sh.evicted
		s.TableFull += sh.full
		s.Reopened += sh.reopened
		s.Reset += sh.reset
		s.PickedUp += sh.pickedUp
		s.FragEvicted += sh.fragEv
		sh.mu.Unlock()
	}
	return s
}

// Len returns the number of connections.
func (t *Table) Len() int { return t.Stats().Entries }

// Info describes one tracked connection.
type Info struct {
	Orig      [16]byte
	Family    packet.Family
	TCPState  TCPState // for TCP
	SeenReply bool
	Assured   bool
	Tag       uint8
	Expires   int64
	Offloaded bool // installed in the fast path (SetOffloader)
}

// Get looks up the connection a tuple belongs to (either direction),
// without changing it. For inspection and tests, not the hot path. An
// expired connection that the fast path holds is reported (Expires in the
// past) until the sweep has asked the fast path about it.
func (t *Table) Get(tp packet.Tuple, now int64) (Info, bool) {
	var k key
	setKey(&k, &tp, tp.HasPorts)
	h := k.hash(&t.seed)
	sh := t.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	tab := sh.tab.Load()
	i, ok := tab.find(&k, h)
	if !ok {
		return Info{}, false
	}
	e := &tab.slots[i].e
	if e.expires <= now && e.fp&fpInstalled == 0 {
		return Info{}, false
	}
	r := result(&k, e, Original, New)
	return Info{Orig: r.Orig, Family: k.family(), TCPState: TCPState(e.state), SeenReply: e.flags&flagSeenReply != 0,
		Assured: e.flags&flagAssured != 0, Tag: e.tag, Expires: e.expires, Offloaded: e.fp&fpInstalled != 0}, true
}
