// Fragments: a first fragment's ports, remembered for its later fragments.

package conntrack

import (
	"encoding/binary"
	"math/bits"

	"github.com/xdpcluster/xdpcluster/packet"
)

type fragKey struct {
	src, dst [16]byte
	id       uint32
	proto    uint8
	family   packet.Family
}

type fragEntry struct {
	expires          int64
	srcPort, dstPort uint16
}

func (t *Table) fragShardOf(k *fragKey) *shard {
	h := binary.LittleEndian.Uint64(k.src[0:]) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(k.src[8:]), 17) ^
		bits.RotateLeft64(binary.LittleEndian.Uint64(k.dst[0:]), 31) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(k.dst[8:]), 47) ^
		uint64(k.id)<<8 ^ uint64(k.proto)
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return &t.shards[h>>56]
}

// rememberFragment records a first fragment's ports for its datagram's
// later fragments.
func (t *Table) rememberFragment(p *packet.Parsed, now int64) {
	fk := fragKey{src: p.Src, dst: p.Dst, id: p.FragID, proto: p.Proto, family: p.Family}
	sh := t.fragShardOf(&fk)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.frags[fk]; !ok && len(sh.frags) >= sh.fragLim {
		sh.evictFragment(now)
	}
	sh.frags[fk] = fragEntry{expires: now + t.frag, srcPort: p.SrcPort, dstPort: p.DstPort}
}

// evictFragment removes an expired fragment record, else any (sh locked).
func (sh *shard) evictFragment(now int64) {
	n := 0
	for k, f := range sh.frags {
		if f.expires <= now || n == 16 {
			delete(sh.frags, k)
			sh.fragEv++
			return
		}
		n++
	}
}

// trackLaterFragment attaches a non-first fragment to its connection, with
// the ports its first fragment carried. Such a fragment changes no state
// (it has no flags). A fragment that arrives before its first fragment is
// INVALID (FragNoHead): the hot path buffers nothing, and the kernel's own
// conntrack would hold it for reassembly instead. Protocols without ports
// need no first fragment.
func (t *Table) trackLaterFragment(p *packet.Parsed, now int64) Result {
	tp := p.Tuple
	switch p.Proto {
	case packet.ProtoTCP, packet.ProtoUDP, packet.ProtoUDPLite, packet.ProtoSCTP, packet.ProtoDCCP, packet.ProtoICMP, packet.ProtoICMPv6:
		fk := fragKey{src: p.Src, dst: p.Dst, id: p.FragID, proto: p.Proto, family: p.Family}
		sh := t.fragShardOf(&fk)
		sh.mu.Lock()
		f, ok := sh.frags[fk]
		if ok && f.expires <= now {
			delete(sh.frags, fk)
			ok = false
		}
		sh.mu.Unlock()
		if !ok {
			return Result{Reason: FragNoHead}
		}
		tp.SrcPort, tp.DstPort, tp.HasPorts = f.srcPort, f.dstPort, true
	}
	var k key
	e, srcIsA, ok := t.lookup(&k, &tp, now)
	if !ok {
		return Result{Reason: FragNoHead}
	}
	dir := dirOf(&e, srcIsA)
	st := stateOf(&e)
	if dir == Reply {
		st = Established
	}
	return result(&k, &e, dir, st)
}
