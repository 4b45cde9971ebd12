package conntrack

import (
	"encoding/binary"
	"fmt"

	"github.com/xdpcluster/xdpcluster/packet"
)

// The table side of a live state resync between nodes: a node that starts
// (or rejoins) while its peers run pulls their connection table, so that
// it can carry the connections opened while it was away. Export streams a
// running table as records; Merge applies them to another running table.
// Both run while the workers track packets: only one shard is locked at a
// time, briefly.
//
// The records are the snapshot's (see snapshot.go), without its header
// and checksum: the transport carries the cluster parameters, the version
// and the integrity check.

// RecordSize is the size of one exported connection record (the
// snapshot's record).
const RecordSize = snapRecordSize

// exportChunk is the most Export hands emit at once: whole records within
// 64 KiB.
const exportChunk = 64 << 10 / RecordSize * RecordSize

// Export streams every live connection (not expired at now, the table's
// time) as records, while the workers run: for each shard it copies the
// shard's live entries under the shard's lock, releases the lock, and
// encodes them into a buffer that it hands to emit whenever it is full
// (and once at the end): a multiple of RecordSize bytes, at most 64 KiB,
// never empty. The slice is reused after emit returns.
//
// The lifetimes include what the fast path saw: the copy of each installed
// connection is brought up to date with the fast path's last-seen times
// (refreshOffloaded, as WriteSnapshot does: a system call each), after the
// shard's lock is released, so no worker waits for them; the table's own
// entry is left to the sweep, which asks at its expiry. A connection that
// changes while Export runs is sent as it was when its shard was copied;
// one created in a shard already copied is not sent (the receiving node
// tracks it from its own packets).
//
// It returns the number of records handed to emit, or emit's error
// wrapped (with the number of records emit accepted before).
func (t *Table) Export(now int64, emit func(recs []byte) error) (int, error) {
	buf := make([]byte, exportChunk)
	var live []slot // one shard's live connections, reused
	nowMs := uint32(now / 1e6)
	sent, fill := 0, 0
	for i := range t.shards {
		live = t.copyLive(&t.shards[i], live[:0], now)
		for j := range live {
			s := &live[j]
			if s.e.fp&fpInstalled != 0 && t.off != nil {
				t.refreshOffloaded(s, now) // the copy: the sweep refreshes the table's own entry at its expiry
			}
			if s.e.expires <= now {
				continue
			}
			putRecord(buf[fill:], &s.k, &s.e, now, nowMs)
			if fill += RecordSize; fill == len(buf) {
				if err := emit(buf); err != nil {
					return sent, fmt.Errorf("export connections (shard %d of %d): %w", i, numShards, err)
				}
				sent += fill / RecordSize
				fill = 0
			}
		}
	}
	if fill > 0 {
		if err := emit(buf[:fill]); err != nil {
			return sent, fmt.Errorf("export connections (last %d): %w", fill/RecordSize, err)
		}
		sent += fill / RecordSize
	}
	return sent, nil
}

// copyLive appends to live, under the shard's lock, the shard's
// connections that are live at now or installed in the fast path (which
// may have carried them since: Export asks it, after the lock).
func (t *Table) copyLive(sh *shard, live []slot, now int64) []slot {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	tab := sh.tab.Load()
	for j := range tab.slots {
		if s := &tab.slots[j]; s.h != 0 && (s.e.expires > now || s.e.fp&fpInstalled != 0) {
			live = append(live, *s)
		}
	}
	return live
}

// mergeBatch is how many records Merge touches ahead.
const mergeBatch = 32

// merger is what Merge's records share.
type merger struct {
	t       *Table
	size    int   // connections in the table (counted at the start, plus the ones added)
	now     int64 // the table's time
	nowMs   uint32
	longest int64         // the table's longest timeout
	tp      *packet.Tuple // for Forget (allocated at the first)
}

// forgetInstalled removes cur (key k) from the fast path if it is
// installed there: Merge replaces it, and the cached copy would carry the
// old state or tag. Called with the shard's lock held, before the
// replacement: a worker may install the new entry as soon as the lock is
// released, and a removal made after that would take it along (the flow
// cache removes both directions).
func (m *merger) forgetInstalled(cur *entry, k *key) {
	if cur.fp&fpInstalled == 0 || m.t.off == nil {
		return
	}
	if m.tp == nil {
		m.tp = new(packet.Tuple) // escapes to Forget: once per call, not per record
	}
	*m.tp = k.origTuple(cur.flags&flagOrigA != 0)
	m.t.off.Forget(m.tp)
}

// merge applies one record, whose key k (hash h) has been read, and
// counts it in st.
func (m *merger) merge(rec []byte, k *key, h uint64, st *MergeStats) {
	var e entry
	remaining, age, _ := getRecord(rec, k, &e)
	if remaining <= 0 {
		st.Expired++
		return
	}
	t, now := m.t, m.now
	e.expires = now + min(remaining, m.longest)
	tcp := isTCP(k)
	if tcp {
		e.born = age // TCP keeps sequence state there, not a time
	} else {
		e.born = m.nowMs - age
	}
	sh := t.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cur := sh.get(k, h, now)
	switch {
	case cur == nil && m.size >= t.cfg.MaxEntries:
		st.Full++
	case cur == nil:
		sh.put(k, h, e)
		m.size++
		st.Added++
	case tcp && cur.state != e.state && e.expires-t.tmo[e.state] > cur.expires-t.tmo[cur.state]:
		// The peer's entry moved on more recently than ours: a node
		// restored from a snapshot holds what it saw before it stopped,
		// and a connection may have closed meanwhile (the peer has it
		// in TIME_WAIT while ours is ESTABLISHED for days). Each
		// entry's last activity is its expiry less its state's timeout.
		m.forgetInstalled(cur, k)
		*cur = e
		st.Replaced++
	case tcp:
		cur.expires = max(cur.expires, e.expires)
		st.Kept++
	case (cur.flags^e.flags)&flagOrigA == 0:
		cur.flags |= e.flags & (flagSeenReply | flagAssured)
		cur.expires = max(cur.expires, e.expires)
		st.Kept++
	default:
		// The puller is the node that was away (restarting, or its
		// dataplane down); the peer, ready all along, saw the flow's
		// first packet.
		m.forgetInstalled(cur, k)
		*cur = e
		st.Replaced++
	}
}

// MergeStats counts what Merge did with each record.
type MergeStats struct {
	Added    int // absent here: added
	Replaced int // a datagram connection tracked here in reverse: replaced by the peer's
	Kept     int // present here: kept (its expiry and, for datagrams, its reply and assured flags updated)
	Expired  int // no lifetime left: skipped
	Full     int // absent here, but the table holds MaxEntries connections: skipped
}

// Add adds o's counts to s.
func (s *MergeStats) Add(o MergeStats) {
	s.Added += o.Added
	s.Replaced += o.Replaced
	s.Kept += o.Kept
	s.Expired += o.Expired
	s.Full += o.Full
}

// Records returns the number of records counted.
func (s MergeStats) Records() int { return s.Added + s.Replaced + s.Kept + s.Expired + s.Full }

// Merge applies records from a peer's Export (any multiple of RecordSize
// bytes) to this live table, while the workers run; now is this table's
// time. The peer's table must have been kept under the same cluster
// parameters p (the tags depend on them): the transport checks that.
//
// Every record is checked first, as ReadSnapshot checks them
// (validRecord): a bad one makes Merge return an error wrapping
// ErrSnapshotCorrupt that names the record's index, with nothing applied.
// Then, for each record:
//
//   - no lifetime left (a sender may age records by the transfer time;
//     Export never sends one): counted Expired, skipped;
//   - absent here: added, expiring after the remaining lifetime (cut to the
//     longest timeout this table gives, so a peer cannot make an entry
//     outlive what this node would give it), with the peer's age (the born
//     field rebuilt as ReadSnapshot does, without a gap). If the table
//     holds MaxEntries connections it is counted Full and skipped: no live
//     local entry is evicted for it;
//   - TCP, present here: kept as it is (a local TCP entry was created from
//     a SYN or SYN/ACK this node saw itself, so its direction is right),
//     its expiry the later of the two; unless the states differ and the
//     peer's entry moved on more recently (each entry's last activity is
//     its expiry less its state's timeout): then the peer's replaces it
//     (a node restored from a snapshot holds what it saw before it
//     stopped; a connection that closed meanwhile would stay ESTABLISHED
//     here for days);
//   - another protocol, present here with the same original direction:
//     kept, the peer's seen-reply and assured flags added, the expiry the
//     later of the two;
//   - another protocol, present here in the other direction (a node
//     restarted mid-flow saw the reply first and tracks the flow reversed,
//     with the wrong tag): replaced by the peer's record. The node that
//     pulls is the one that was away (restarting, or its dataplane down),
//     while the peer it pulls from was ready all along and saw the flow's
//     first packet (comparing the entries' ages fails: both nodes see a
//     flow's first packets within a millisecond). A replaced connection that the fast path holds is removed
//     from it (its cached tag is wrong), at once and under the shard's
//     lock: a worker may install the connection's right direction as soon
//     as the lock is released, and a removal made after that would take
//     the new install with it (the flow cache removes both directions).
//
// The table-full check counts the connections once per call (then adds
// Merge's own): connections the workers create meanwhile are not counted,
// and the workers' own per-shard limits apply to them as usual. Merge
// allocates nothing per record once the shards have grown (one tuple per
// call that removes connections from the fast path).
func (t *Table) Merge(recs []byte, p SnapshotParams, now int64) (MergeStats, error) {
	var st MergeStats
	if len(recs)%RecordSize != 0 {
		return st, fmt.Errorf("merge connections: %w: %d bytes, not a whole number of %d-byte records", ErrSnapshotCorrupt, len(recs), RecordSize)
	}
	n := len(recs) / RecordSize
	var k key
	var e entry
	for i := 0; i < n; i++ {
		remaining, age, pad := getRecord(recs[i*RecordSize:], &k, &e)
		// A record with no lifetime left is not damaged: it is skipped
		// below (validRecord refuses it in a snapshot, which never has one).
		if err := validRecord(&k, &e, max(remaining, 1), age, pad, p); err != nil {
			return st, fmt.Errorf("merge connections: %w: record %d of %d: %v", ErrSnapshotCorrupt, i, n, err)
		}
	}
	longest := max(t.udpU, t.udpR, t.icmp, t.gen)
	for _, d := range t.tmo {
		longest = max(longest, d)
	}
	m := merger{t: t, size: t.Len(), now: now, nowMs: uint32(now / 1e6), longest: longest}
	// A batch of records at a time: hash every key and touch its slot
	// first, so that the batch's cache misses overlap (as TrackBatch does).
	var ks [mergeBatch]key
	var hs [mergeBatch]uint64
	for base := 0; base < n; base += mergeBatch {
		b := min(mergeBatch, n-base)
		for j := range b {
			rec := recs[(base+j)*RecordSize:]
			for w := range ks[j].w {
				ks[j].w[w] = binary.LittleEndian.Uint64(rec[8*w:])
			}
			hs[j] = ks[j].hash(&t.seed)
		}
		var sink uint64
		for _, h := range hs[:b] {
			sink += t.shardOf(h).touch(h)
		}
		touchSink.Store(sink)
		for j := range b {
			m.merge(recs[(base+j)*RecordSize:], &ks[j], hs[j], &st)
		}
	}
	return st, nil
}
