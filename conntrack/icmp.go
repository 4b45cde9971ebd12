// ICMP and ICMPv6: queries, errors and the untracked neighbour discovery types.

package conntrack

import (
	"github.com/xdpcluster/xdpcluster/packet"
)

// icmp6Untracked: MLD and neighbour discovery, which the kernel leaves
// untracked (icmpv6 noct_valid_new).
func icmp6Untracked(typ uint8) bool {
	switch typ {
	case 130, 131, 132, 133, 134, 135, 136, 143:
		return true
	}
	return false
}

// icmpRequest: the query types that may open a connection.
func icmpRequest(family packet.Family, typ uint8) bool {
	if family == packet.IPv4 {
		return typ == 8 || typ == 13 || typ == 15 || typ == 17
	}
	return typ == 128
}

func (t *Table) trackICMPQuery(p *packet.Parsed, f *flow, now int64, r *Result) {
	k, srcIsA := &f.k, f.srcIsA
	sh, e := t.lockFlow(f, now)
	defer sh.mu.Unlock()
	if e == nil {
		if !icmpRequest(p.Family, p.ICMPType) {
			*r = Result{Reason: ICMPNotNew}
			return
		}
		t.create(sh, f, 0, t.icmp, now, false, r)
		return
	}
	dir := dirOf(e, srcIsA)
	if dir == Reply {
		e.flags |= flagSeenReply
	}
	e.expires = now + t.icmp
	setResult(r, k, e, dir, stateOf(e), OffloadNone)
}

// trackICMPError relates an ICMP error to the connection of the packet it
// embeds. The error must be addressed to the embedded packet's source (the
// kernel checks the same). The connection is not refreshed.
func (t *Table) trackICMPError(p *packet.Parsed, now int64) Result {
	if !p.InnerValid || p.Inner.Family != p.Family {
		return Result{Reason: ICMPErrorBadInner}
	}
	if p.Dst != p.Inner.Src {
		return Result{Reason: ICMPErrorMismatch}
	}
	var k key
	e, innerSrcIsA, ok := t.lookup(&k, &p.Inner, now)
	if !ok {
		return Result{Reason: ICMPErrorNoConn}
	}
	// The error travels towards the embedded packet's source.
	dir := Reply
	if dirOf(&e, innerSrcIsA) == Reply {
		dir = Original
	}
	return result(&k, &e, dir, Related)
}
