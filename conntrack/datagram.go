// UDP-like protocols (by ports) and the generic ones (by address pair).

package conntrack

import "math"

// trackDatagram tracks UDP-like protocols (ports) and the generic
// address-pair protocols: NEW until a reply, then ESTABLISHED; the replied
// timeout (and assured status) once the connection has lived 2 s after a
// reply, as the kernel's UDP tracker does. offload: the connection goes
// to the fast path (protocols with ports, with an Offloader), installed
// at its second packet, in either direction. Not at its first: a
// datagram flow of one packet (a DNS query, a scan, a flood of new
// sources) would cost an install (two map updates, about 1.5 µs of
// system calls) and an eviction for nothing, and at 200 kpps of new
// flows on one core that cost alone loses packets; a longer flow sends
// one more packet through the slow path. The bucket is fixed by the
// first packet either way.
func (t *Table) trackDatagram(f *flow, now int64, unreplied, replied int64, offload bool, r *Result) {
	k, srcIsA := &f.k, f.srcIsA
	sh, e := t.lockFlow(f, now)
	defer sh.mu.Unlock()
	if e == nil {
		t.create(sh, f, 0, unreplied, now, false, r)
		return
	}
	dir := dirOf(e, srcIsA)
	if e.flags&flagSeenReply != 0 && pastTwoSeconds(uint32(now/1e6), e.born) {
		e.expires = now + replied
		e.flags |= flagAssured
	} else {
		e.expires = now + unreplied
	}
	if dir == Reply {
		e.flags |= flagSeenReply
	}
	off := OffloadNone
	if offload {
		off = install(e, now)
	}
	setResult(r, k, e, dir, stateOf(e), off)
}

// pastTwoSeconds reports whether a datagram connection born at born (ms,
// wrapping at 2^32) is more than 2 s old at atMs: then, with its reply
// seen, it is a stream (assured, the replied timeout), as the kernel's
// UDP tracker decides. An atMs up to a second before born is not an age:
// the fast path stamps the clock at its last tick
// (bpf_ktime_get_coarse_ns), which can be a few ms before the birth the
// workers took from the exact clock.
func pastTwoSeconds(atMs, born uint32) bool {
	age := atMs - born
	return age > 2000 && age < math.MaxUint32-1000
}
