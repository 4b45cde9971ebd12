package conntrack

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/xdpcluster/xdpcluster/packet"
)

// A snapshot is the connection table written at a graceful stop and read
// back at the next start, so that established connections survive a
// restart of the daemon (with loose pickup off, a node that forgot a
// connection finds its packets INVALID).
//
// Format, little-endian, version 2:
//
//	header  48 bytes: magic "XCCTSNAP", version u32, record size u32,
//	        total nodes u32, seed u32, hash mode u8, 3 zero bytes,
//	        4 zero bytes, save time (Unix ns, wall clock) i64, count u64
//	records count × 56 bytes: key (5 × u64), remaining lifetime (ns) i64,
//	        age (ms) u32 (TCP: the entry's sequence field as it is), state u8,
//	        flags u8, tag u8, a zero byte
//	trailer CRC-32C u32 of the header and the records
//
// The fast path's state of a connection is not saved (the fast path is
// empty after a restart): restored connections are not installed; the
// lifetimes saved include what the fast path saw (refreshAllOffloaded).
//
// Lifetimes are stored as what remains at the save, not as times of the
// saving process's clock; the reader subtracts the time the daemon was
// down (from the wall clock), so every entry expires when it would have.
// Each entry's tag (the dataplane's cluster bucket) depends on the total
// node count, the seed and the hash mode: a snapshot taken with other
// values is refused.

// SnapshotParams are the values every entry's tag depends on: the
// cluster's total nodes, hash seed and hash mode. The table does not
// interpret them; a snapshot is only read back under the same ones.
type SnapshotParams struct {
	TotalNodes uint32
	Seed       uint32
	Hash       uint8
}

func (p SnapshotParams) String() string {
	return fmt.Sprintf("total_nodes %d, hash_seed %#x, hash mode %d", p.TotalNodes, p.Seed, p.Hash)
}

// DefaultSnapshotMaxAge is how old a snapshot may be and still be
// restored. Within it, peers that widened their masks meanwhile have
// tracked the same connections all along (every node tracks every
// connection), and a connection idle for that long has lost little; after
// it, a connection's state may have moved on (a close seen only by the
// others) and starting empty is the honest choice.
const DefaultSnapshotMaxAge = 60 * time.Second

// Why a snapshot is refused (the returned errors wrap one of these).
var (
	ErrSnapshotCorrupt  = errors.New("corrupt snapshot")
	ErrSnapshotVersion  = errors.New("unknown snapshot version")
	ErrSnapshotParams   = errors.New("snapshot taken with other cluster parameters")
	ErrSnapshotStale    = errors.New("snapshot too old")
	ErrSnapshotTooLarge = errors.New("snapshot larger than the table")
)

const (
	snapMagic      = "XCCTSNAP"
	snapVersion    = 2 // 2: TCP records keep the born field as it is
	snapHeaderSize = 48
	snapRecordSize = 56
	// snapFutureSlack tolerates a save time slightly ahead of the reader's
	// wall clock (a small step back of the clock).
	snapFutureSlack = time.Second
	knownFlags      = flagOrigA | flagSeenReply | flagAssured | flagCloseInit | flagLastRst | flagLastReply | flagLastSyn | flagChallenge
	maxAgeMs        = 1 << 31
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SnapshotInfo describes a snapshot that was read.
type SnapshotInfo struct {
	Saved    time.Time // when it was written (wall clock)
	Entries  int       // records in the file
	Restored int       // connections now in the table
	Expired  int       // records whose lifetime ran out while the daemon was down
}

// WriteSnapshot writes every live connection (one that has not expired at
// now, the table's time) to w and returns how many. wall is the wall
// clock time of now. The workers must be stopped: a table that changes
// while it is written makes WriteSnapshot fail.
func (t *Table) WriteSnapshot(w io.Writer, p SnapshotParams, now int64, wall time.Time) (int, error) {
	t.refreshAllOffloaded(now)
	count := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		tab := sh.tab.Load()
		for j := range tab.slots {
			if s := &tab.slots[j]; s.h != 0 && s.e.expires > now {
				count++
			}
		}
		sh.mu.Unlock()
	}
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)
	var hdr [snapHeaderSize]byte
	copy(hdr[0:8], snapMagic)
	binary.LittleEndian.PutUint32(hdr[8:], snapVersion)
	binary.LittleEndian.PutUint32(hdr[12:], snapRecordSize)
	binary.LittleEndian.PutUint32(hdr[16:], p.TotalNodes)
	binary.LittleEndian.PutUint32(hdr[20:], p.Seed)
	hdr[24] = p.Hash
	binary.LittleEndian.PutUint64(hdr[32:], uint64(wall.UnixNano()))
	binary.LittleEndian.PutUint64(hdr[40:], uint64(count))
	bw.Write(hdr[:])
	written := 0
	nowMs := uint32(now / 1e6)
	var rec [snapRecordSize]byte
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		tab := sh.tab.Load()
		for j := range tab.slots {
			s := &tab.slots[j]
			if s.h == 0 || s.e.expires <= now {
				continue
			}
			if written++; written > count {
				break
			}
			putRecord(rec[:], &s.k, &s.e, now, nowMs)
			bw.Write(rec[:])
		}
		sh.mu.Unlock()
	}
	if written != count {
		return 0, fmt.Errorf("write connection snapshot: the table changed while it was written (%d connections, then %d): stop the workers first", count, written)
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("write connection snapshot: %w", err)
	}
	var tr [4]byte
	binary.LittleEndian.PutUint32(tr[:], crc.Sum32())
	if _, err := w.Write(tr[:]); err != nil {
		return 0, fmt.Errorf("write connection snapshot: %w", err)
	}
	return count, nil
}

// crcReader reads through a CRC.
type crcReader struct {
	r   io.Reader
	crc uint32
}

func (c *crcReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.crc = crc32.Update(c.crc, castagnoli, b[:n])
	return n, err
}

// ReadSnapshot fills an empty table from a snapshot written by
// WriteSnapshot, before any packet is tracked (the dataplane's workers
// must not run yet). now is the table's time and wall the wall clock time
// at now. Each entry's remaining lifetime is shortened by the time since
// the save, so it expires when it would have; entries whose lifetime ran
// out are left out.
//
// The snapshot is refused, with an error wrapping one of the
// ErrSnapshot... values and the table left empty, when it is not a
// snapshot or is damaged (bad magic, short, a bad record or checksum,
// trailing bytes), of another version, taken with other params, older
// than maxAge (0: DefaultSnapshotMaxAge) or saved in the future, or holds
// more connections than the table's MaxEntries. It reads at most
// MaxEntries records.
func (t *Table) ReadSnapshot(r io.Reader, p SnapshotParams, now int64, wall time.Time, maxAge time.Duration) (SnapshotInfo, error) {
	if t.Len() != 0 {
		return SnapshotInfo{}, errors.New("read connection snapshot: the table is not empty")
	}
	info, err := t.readSnapshot(r, p, now, wall, maxAge)
	if err != nil {
		t.clear()
		return SnapshotInfo{Saved: info.Saved, Entries: info.Entries}, fmt.Errorf("read connection snapshot: %w", err)
	}
	return info, nil
}

func (t *Table) readSnapshot(r io.Reader, p SnapshotParams, now int64, wall time.Time, maxAge time.Duration) (info SnapshotInfo, err error) {
	if maxAge <= 0 {
		maxAge = DefaultSnapshotMaxAge
	}
	cr := &crcReader{r: bufio.NewReaderSize(r, 64<<10)}
	var hdr [snapHeaderSize]byte
	if n, err := io.ReadFull(cr, hdr[:]); err != nil {
		return info, fmt.Errorf("%w: header truncated at %d of %d bytes", ErrSnapshotCorrupt, n, snapHeaderSize)
	}
	if string(hdr[0:8]) != snapMagic {
		return info, fmt.Errorf("%w: magic %q, want %q", ErrSnapshotCorrupt, hdr[0:8], snapMagic)
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != snapVersion {
		return info, fmt.Errorf("%w %d: this daemon reads version %d", ErrSnapshotVersion, v, snapVersion)
	}
	if rs := binary.LittleEndian.Uint32(hdr[12:]); rs != snapRecordSize {
		return info, fmt.Errorf("%w: record size %d, want %d", ErrSnapshotCorrupt, rs, snapRecordSize)
	}
	if hdr[25]|hdr[26]|hdr[27]|hdr[28]|hdr[29]|hdr[30]|hdr[31] != 0 {
		return info, fmt.Errorf("%w: reserved header bytes set", ErrSnapshotCorrupt)
	}
	got := SnapshotParams{TotalNodes: binary.LittleEndian.Uint32(hdr[16:]), Seed: binary.LittleEndian.Uint32(hdr[20:]), Hash: hdr[24]}
	saved := int64(binary.LittleEndian.Uint64(hdr[32:]))
	count := binary.LittleEndian.Uint64(hdr[40:])
	info.Saved = time.Unix(0, saved)
	info.Entries = int(min(count, 1<<62))
	if got != p {
		return info, fmt.Errorf("%w: saved with %s, running with %s (every connection's bucket depends on them)", ErrSnapshotParams, got, p)
	}
	gap := wall.Sub(info.Saved)
	switch {
	case gap > maxAge:
		return info, fmt.Errorf("%w: saved %v ago, more than the %v allowed", ErrSnapshotStale, gap.Round(time.Millisecond), maxAge)
	case gap < -snapFutureSlack:
		return info, fmt.Errorf("%w: saved %v in the future (the wall clock went back?)", ErrSnapshotStale, (-gap).Round(time.Millisecond))
	case gap < 0:
		gap = 0
	}
	if count > uint64(t.cfg.MaxEntries) {
		return info, fmt.Errorf("%w: %d connections, max_entries is %d", ErrSnapshotTooLarge, count, t.cfg.MaxEntries)
	}
	// Size the shards for their share at once rather than doubling them
	// step by step (at most what MaxEntries allows anyway).
	share := int(count)/numShards + int(count)/numShards/4 + 8
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for share*4 > len(sh.tab.Load().slots)*3 {
			sh.grow()
		}
		sh.mu.Unlock()
	}
	gapMs := uint32(min(gap/time.Millisecond, maxAgeMs))
	nowMs := uint32(now / 1e6)
	var rec [snapRecordSize]byte
	var k key
	for i := uint64(0); i < count; i++ {
		if n, err := io.ReadFull(cr, rec[:]); err != nil {
			return info, fmt.Errorf("%w: truncated in record %d of %d (%d of %d bytes)", ErrSnapshotCorrupt, i, count, n, snapRecordSize)
		}
		var e entry
		remaining, age, pad := getRecord(rec[:], &k, &e)
		if err := validRecord(&k, &e, remaining, age, pad, p); err != nil {
			return info, fmt.Errorf("%w: record %d: %v", ErrSnapshotCorrupt, i, err)
		}
		remaining -= int64(gap)
		if remaining <= 0 {
			info.Expired++
			continue
		}
		e.expires = now + remaining
		if isTCP(&k) {
			e.born = age // TCP keeps sequence state there, not a time
		} else {
			e.born = nowMs - min(age+gapMs, maxAgeMs)
		}
		h := k.hash(&t.seed)
		sh := t.shardOf(h)
		// No per-shard limit here: this table's seed spreads the entries
		// over its shards differently, and the total is within
		// MaxEntries; a shard above its share evicts as usual.
		sh.mu.Lock()
		_, dup := sh.tab.Load().find(&k, h)
		if !dup {
			sh.put(&k, h, e)
			info.Restored++
		}
		sh.mu.Unlock()
		if dup {
			return info, fmt.Errorf("%w: record %d repeats a connection", ErrSnapshotCorrupt, i)
		}
	}
	sum := cr.crc
	var tr [4]byte
	if n, err := io.ReadFull(cr, tr[:]); err != nil {
		return info, fmt.Errorf("%w: checksum truncated (%d of 4 bytes)", ErrSnapshotCorrupt, n)
	}
	if want := binary.LittleEndian.Uint32(tr[:]); want != sum {
		return info, fmt.Errorf("%w: checksum %#08x, computed %#08x", ErrSnapshotCorrupt, want, sum)
	}
	if n, _ := cr.Read(tr[:1]); n != 0 {
		return info, fmt.Errorf("%w: bytes after the checksum", ErrSnapshotCorrupt)
	}
	return info, nil
}

// putRecord writes a live connection's record (the format above) into
// rec[:snapRecordSize]: its lifetime as what remains after now, its born
// field as bornField does at nowMs. The fast path's state is not written.
func putRecord(rec []byte, k *key, e *entry, now int64, nowMs uint32) {
	_ = rec[snapRecordSize-1]
	for j, v := range k.w {
		binary.LittleEndian.PutUint64(rec[8*j:], v)
	}
	binary.LittleEndian.PutUint64(rec[40:], uint64(e.expires-now))
	binary.LittleEndian.PutUint32(rec[48:], bornField(k, e.born, nowMs))
	rec[52], rec[53], rec[54], rec[55] = e.state, e.flags, e.tag, 0
}

// getRecord reads a record written by putRecord: the key and the entry's
// state, flags and tag into k and e (e's other fields are zeroed), and
// returns the remaining lifetime, the born field and the pad byte,
// unchecked (validRecord checks them).
func getRecord(rec []byte, k *key, e *entry) (remaining int64, age uint32, pad uint8) {
	_ = rec[snapRecordSize-1]
	for j := range k.w {
		k.w[j] = binary.LittleEndian.Uint64(rec[8*j:])
	}
	*e = entry{state: rec[52], flags: rec[53], tag: rec[54]}
	return int64(binary.LittleEndian.Uint64(rec[40:])), binary.LittleEndian.Uint32(rec[48:]), rec[55]
}

// validRecord checks what a record may hold; a snapshot that fails is
// damaged (the checksum should have caught it) or forged.
func validRecord(k *key, e *entry, remaining int64, age uint32, pad uint8, p SnapshotParams) error {
	meta := k.w[4]
	fam, proto := packet.Family(meta>>40), uint8(meta>>32)
	switch {
	case meta>>48 != 0 || pad != 0:
		return errors.New("reserved bits set")
	case fam != packet.IPv4 && fam != packet.IPv6:
		return fmt.Errorf("address family %d", fam)
	case fam == packet.IPv4 && (k.w[0]>>32|k.w[1]|k.w[2]>>32|k.w[3]) != 0:
		return errors.New("IPv4 key with bytes beyond its addresses")
	case !keyOrdered(k):
		return errors.New("key sides out of order")
	case remaining <= 0:
		return fmt.Errorf("remaining lifetime %d ns", remaining)
	case proto != packet.ProtoTCP && age > maxAgeMs:
		return fmt.Errorf("age %d ms", age)
	case e.flags&^knownFlags != 0:
		return fmt.Errorf("flags %#x", e.flags)
	case proto == packet.ProtoTCP && e.state >= uint8(numTCPStates):
		return fmt.Errorf("TCP state %d", e.state)
	case proto != packet.ProtoTCP && e.state != 0:
		return fmt.Errorf("state %d for protocol %d", e.state, proto)
	case uint32(e.tag) >= max(p.TotalNodes, 1):
		return fmt.Errorf("tag %d for %d nodes", e.tag, p.TotalNodes)
	}
	return nil
}

// isTCP reports whether k is a TCP connection's key.
func isTCP(k *key) bool { return uint8(k.w[4]>>32) == packet.ProtoTCP }

// bornField is what a record stores of an entry's born field: for TCP the
// field itself (the tracker keeps the end sequence number of an ignored
// SYN there, which must survive a restart unchanged); for the others the
// entry's age in milliseconds, so a restore can shift it by the downtime.
func bornField(k *key, born, nowMs uint32) uint32 {
	if isTCP(k) {
		return born
	}
	return min(nowMs-born, maxAgeMs)
}

// keyOrdered reports whether side a sorts before or equal to side b, as
// setKey makes every key.
func keyOrdered(k *key) bool {
	pa, pb := k.w[4]&0xffff, k.w[4]>>16&0xffff
	a0, a1, b0, b1 := k.w[0], k.w[1], k.w[2], k.w[3]
	return a0 < b0 || a0 == b0 && (a1 < b1 || a1 == b1 && pa <= pb)
}

// refreshAllOffloaded brings the expiry of every connection the fast path
// holds up to date with the fast path's last-seen times (a system call
// each, under its shard's lock), so that a snapshot saves the lifetime
// (and, for datagrams, the reply) of the connections whose packets only
// the fast path saw. Nothing is removed here; the fast path's state
// itself (entry.fp) is never saved: it is empty after a restart.
func (t *Table) refreshAllOffloaded(now int64) {
	if t.off == nil {
		return
	}
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		tab := sh.tab.Load()
		for j := range tab.slots {
			if s := &tab.slots[j]; s.h != 0 && s.e.fp&fpInstalled != 0 {
				t.refreshOffloaded(s, now)
			}
		}
		sh.mu.Unlock()
	}
}

// clear empties the table (its counters stay); the fast path forgets the
// connections it held (ReadSnapshot fills only an empty table, so none
// should be installed, but an emptied table must leave none behind).
func (t *Table) clear() {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		if t.off != nil {
			tab := sh.tab.Load()
			for j := range tab.slots {
				if s := &tab.slots[j]; s.h != 0 && s.e.fp&fpInstalled != 0 {
					tp := s.k.origTuple(s.e.flags&flagOrigA != 0)
					t.off.Forget(&tp)
				}
			}
		}
		if tab := sh.tab.Load(); len(tab.slots) == minSlots {
			clear(tab.slots)
		} else {
			sh.tab.Store(&slotTable{slots: make([]slot, minSlots), mask: minSlots - 1})
		}
		sh.n = 0
		clear(sh.frags)
		sh.mu.Unlock()
	}
}
