package dataplane

import (
	"net/netip"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/packet"
)

// TestOneClock: every worker tracks with the dataplane's clock, the one
// its tracker's sweeper and snapshots use, not with an origin of its own.
// The clock here started an hour ago, so an entry made now by any worker
// must expire an hour and 30 s (UDP unreplied) after the origin.
func TestOneClock(t *testing.T) {
	m := cluster.LocalNode(1, 1, 7)
	ct, err := conntrack.NewTable(conntrack.Config{})
	if err != nil {
		t.Fatal(err)
	}
	clock := conntrack.ClockSince(time.Now().Add(-time.Hour))
	const queues = 2
	ifaces := []Iface{{Name: "front", MAC: [6]byte{2, 0, 0, 0, 0, 1}}, {Name: "back", MAC: [6]byte{2, 0, 0, 0, 0, 2}}}
	for i := range ifaces {
		for q := 0; q < queues; q++ {
			ifaces[i].Ports = append(ifaces[i].Ports, newMemPort(64))
		}
	}
	d, err := New(Config{Ifaces: ifaces, Match: m, Tracker: ct, Clock: clock,
		Resolver: staticResolver{Route{Iface: 1, NextHop: nextHop, Verdict: Forwarded}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Clock().Now(); got < int64(time.Hour) || got > int64(time.Hour+time.Minute) {
		t.Fatalf("dataplane clock at %v, want the given origin's 1h", time.Duration(got))
	}
	for q, w := range d.workers {
		src := netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + q)})
		front := ifaces[0].Ports[q].(*memPort)
		front.frames = [][]byte{udpFrame(t, src, 64, false)}
		n := front.Receive(w.rx)
		w.batch(0, front, w.rx[:n], d.match.Load())
		var p packet.Parsed
		if r := p.Decode(udpFrame(t, src, 64, false)); r != packet.OK {
			t.Fatal(r)
		}
		info, ok := ct.Get(p.Tuple, clock.Now())
		if !ok {
			t.Fatalf("worker %d's entry is not live on the dataplane's clock: tracked with another origin", q)
		}
		want := clock.Now() + int64(30*time.Second)
		if d := time.Duration(want - info.Expires); d < 0 || d > 10*time.Second {
			t.Errorf("worker %d: entry expires at %v on the dataplane's clock, want about %v: the worker has a clock of its own",
				q, time.Duration(info.Expires), time.Duration(want))
		}
	}
}
