package conntrack

import (
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/packet"
)

// TestMergeTakesNewerTCPState: a restarted node restores a snapshot (up
// to 60 s old) holding a connection ESTABLISHED; while it was down the
// connection closed (the peer has it in TIME_WAIT). The resync takes the
// peer's newer state: kept, the local entry would be a ghost, assured
// (never evicted), for 5 days.
func TestMergeTakesNewerTCPState(t *testing.T) {
	local, peer := tagTable(t, 0), tagTable(t, 0)
	tp := established(local, 0, at(0)) // from the snapshot
	established(peer, 0, at(0))
	fin := func(from string, flags uint8) {
		p := pkt(false, from, packet.ProtoTCP, flags)
		if from == c {
			p.Tuple = tp
		} else {
			p.Src, p.Dst, p.SrcPort, p.DstPort = tp.Dst, tp.Src, tp.DstPort, tp.SrcPort
		}
		peer.Track(p, at(time.Second))
	}
	fin(c, FIN|ACK)
	fin(s, FIN|ACK)
	fin(c, ACK)
	if p := mustGet(t, peer, tp); p.TCPState != TCPTimeWait {
		t.Fatalf("peer: %v", p.TCPState)
	}
	var recs []byte
	peer.Export(mtx, func(b []byte) error { recs = append(recs, b...); return nil })
	st, err := local.Merge(recs, snapParams, mtx)
	l := mustGet(t, local, tp)
	t.Logf("merge %+v %v: local %v, expires in %v", st, err, l.TCPState, time.Duration(l.Expires-mtx))
	if l.TCPState != TCPTimeWait {
		t.Errorf("after the resync the restarted node has the closed connection %v for %v; the peer has it TIME_WAIT", l.TCPState, time.Duration(l.Expires-mtx))
	}
}
