// UDP-like protocols (by ports) and the generic ones (by address pair).

package conntrack

// trackDatagram tracks UDP-like protocols (ports) and the generic
// address-pair protocols: NEW until a reply, then ESTABLISHED; the replied
// timeout (and assured status) once the connection has lived 2 s after a
// reply, as the kernel's UDP tracker does. offload: the connection goes
// to the fast path (protocols with ports, with an Offloader), installed
// from its first packet.
func (t *Table) trackDatagram(f *flow, now int64, unreplied, replied int64, offload bool, r *Result) {
	k, srcIsA := &f.k, f.srcIsA
	sh, e := t.lockFlow(f, now)
	defer sh.mu.Unlock()
	if e == nil {
		t.create(sh, f, 0, unreplied, now, offload, r)
		return
	}
	dir := dirOf(e, srcIsA)
	if e.flags&flagSeenReply != 0 && uint32(now/1e6)-e.born > 2000 {
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
