// TrackBatch: a batch of packets, their table slots touched first.

package conntrack

import (
	"sync/atomic"

	"github.com/xdpcluster/xdpcluster/packet"
)

// BatchSize is the largest batch TrackBatch handles in one pass.
const BatchSize = 64

// TrackBatch tracks ps[i] into out[i] for a batch of packets, as Track
// does, but first touches every packet's table slot, so that the batch's
// cache misses overlap instead of following one another. len(out) must be
// at least len(ps); batches above BatchSize are handled in chunks.
func (t *Table) TrackBatch(ps []*packet.Parsed, now int64, out []Result) {
	t.trackBatch(ps, now, out, false)
}

// TrackBatchExisting is TrackBatch for packets that may not open
// connections (they arrived on an interface where new connections are
// refused): a packet of a known connection, or RELATED to one, is tracked
// as usual; one that would open a connection opens none and is INVALID
// with reason NewRefused. Like `-i IF -m conntrack --ctstate NEW -j DROP`
// in front of the cluster rules, except that nothing is created, but for
// the record a TCP SYN/ACK makes of a connection whose SYN was not seen:
// that passes nothing until the connection's originator, on its own
// side, has sent a packet where it may open connections (pickUpSynAck).
func (t *Table) TrackBatchExisting(ps []*packet.Parsed, now int64, out []Result) {
	t.trackBatch(ps, now, out, true)
}

func (t *Table) trackBatch(ps []*packet.Parsed, now int64, out []Result, noNew bool) {
	for len(ps) > 0 {
		n := min(len(ps), BatchSize)
		// Hash first, then touch in a tight loop: the fewer instructions
		// between two touches, the more cache misses the CPU keeps in flight.
		var fs [BatchSize]flow
		for i, p := range ps[:n] {
			if simple(p) {
				t.setFlow(&fs[i], &p.Tuple, p.HasPorts)
				fs[i].noNew = noNew
			}
		}
		var sink uint64
		for i := range fs[:n] {
			if h := fs[i].h; h != 0 {
				sink += t.shardOf(h).touch(h)
			}
		}
		touchSink.Store(sink)
		for i, p := range ps[:n] {
			if fs[i].h != 0 {
				t.track(p, &fs[i], now, &out[i])
			} else {
				t.track(p, nil, now, &out[i])
			}
		}
		ps, out = ps[n:], out[n:]
	}
}

// touchSink keeps TrackBatch's touches from being optimised away.
var touchSink atomic.Uint64
