package conntrack

import (
	"net/netip"
	"testing"

	"github.com/xdpcluster/xdpcluster/packet"
)

// TestTrackBatchExisting: on an interface where new connections are
// refused, a packet that would open one opens none (NewRefused, and the
// table stays empty), while the packets of a connection opened elsewhere
// (through TrackBatch) are tracked as usual, in both directions.
func TestTrackBatchExisting(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		tests := []struct {
			name  string
			proto uint8
			flags uint8
		}{
			{"udp", packet.ProtoUDP, 0},
			{"tcp syn", packet.ProtoTCP, SYN},
		}
		for _, tc := range tests {
			t.Run(tc.name+map[bool]string{false: " ipv4", true: " ipv6"}[v6], func(t *testing.T) {
				tb := newTable(t, Config{MaxEntries: 64})
				out := make([]Result, 1)
				// A server's packet arriving first, on the refusing side:
				// the reply-before-request reordering a non-owner can see.
				tb.TrackBatchExisting([]*packet.Parsed{pkt(v6, s, tc.proto, tc.flags)}, 1, out)
				if out[0].State != Invalid || out[0].Reason != NewRefused {
					t.Fatalf("server's first packet on the refusing side: %v/%v, want INVALID/new_refused", out[0].State, out[0].Reason)
				}
				if n := tb.Len(); n != 0 {
					t.Fatalf("refused packet left %d entries", n)
				}
				// The client opens the connection on the other side...
				tb.TrackBatch([]*packet.Parsed{pkt(v6, c, tc.proto, tc.flags)}, 2, out)
				if out[0].State != New {
					t.Fatalf("client's first packet: %v/%v, want NEW", out[0].State, out[0].Reason)
				}
				// ...and the server's reply on the refusing side belongs to it.
				reply := uint8(0)
				if tc.proto == packet.ProtoTCP {
					reply = SYN | ACK
				}
				tb.TrackBatchExisting([]*packet.Parsed{pkt(v6, s, tc.proto, reply)}, 3, out)
				if out[0].State != Established || out[0].Orig != a16(hostsOf(v6)[c]) {
					t.Fatalf("server's reply: %v/%v orig %v, want ESTABLISHED with the client as original source", out[0].State, out[0].Reason, out[0].Orig)
				}
				if tb.Stats().Inserts != 1 {
					t.Fatalf("inserts %d, want 1", tb.Stats().Inserts)
				}
			})
		}
	}
}

func hostsOf(v6 bool) map[string]netip.Addr {
	if v6 {
		return hosts6
	}
	return hosts4
}

func TestTrackBatchExistingAllocs(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 64})
	ps := []*packet.Parsed{pkt(false, s, packet.ProtoUDP, 0)}
	out := make([]Result, 1)
	if n := testing.AllocsPerRun(100, func() { tb.TrackBatchExisting(ps, 1, out) }); n != 0 {
		t.Fatalf("%v allocations per batch, want 0", n)
	}
}
