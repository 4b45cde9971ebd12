package dataplane

import (
	"net/netip"
	"testing"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/packet"
)

// recCache records what the workers ask of a flow cache, in order.
type recCache struct {
	ops     []string // "install"/"remove" per call
	keys    [][]FlowKey
	buckets [][]uint8
	mask    uint32
	invert  bool
	sets    int
}

func (c *recCache) Install(orig []FlowKey, buckets []uint8) error {
	c.ops = append(c.ops, "install")
	c.keys = append(c.keys, append([]FlowKey(nil), orig...))
	c.buckets = append(c.buckets, append([]uint8(nil), buckets...))
	return nil
}

func (c *recCache) Remove(orig []FlowKey) error {
	c.ops = append(c.ops, "remove")
	c.keys = append(c.keys, append([]FlowKey(nil), orig...))
	c.buckets = append(c.buckets, nil)
	return nil
}

func (c *recCache) SetMatch(mask uint32, invert bool) error {
	c.mask, c.invert, c.sets = mask, invert, c.sets+1
	return nil
}

// nopOffloader lets the tracker decide installs without a kernel.
type nopOffloader struct{}

func (nopOffloader) Seen(*packet.Tuple) (int64, int64, bool) { return 0, 0, false }
func (nopOffloader) Forget(*packet.Tuple)                    {}

// TestWorkerFlowCache: the worker installs a UDP connection at its second
// packet, keyed by its original direction with the tracker's bucket, in one
// call per batch, whichever direction the packet that installs it travels;
// SetMatch reaches the cache.
func TestWorkerFlowCache(t *testing.T) {
	m := cluster.LocalNode(2, 1, 0xdeadbeef)
	d, front, back := testDataplane(t, m, staticResolver{Route{Iface: 1, NextHop: nextHop, Verdict: Forwarded}})
	c := &recCache{}
	d.cfg.FlowCache = c
	d.cfg.Tracker.SetOffloader(nopOffloader{})
	w := d.workers[0]
	mine, theirs := clientOf(m, 0, 0), clientOf(m, 1, 0)
	front.frames = [][]byte{udpFrame(t, mine, 64, false), udpFrame(t, theirs, 64, false), udpFrame(t, mine, 64, false), udpFrame(t, theirs, 64, false)}
	n := front.Receive(w.rx)
	w.batch(0, front, w.rx[:n], d.match.Load())
	if len(c.ops) != 1 || c.ops[0] != "install" || len(c.keys[0]) != 2 {
		t.Fatalf("flow cache calls %v %v, want one install of 2 connections", c.ops, c.keys)
	}
	for i, src := range []netip.Addr{mine, theirs} {
		k := c.keys[0][i]
		if netip.AddrFrom4([4]byte(k.Src[:4])) != src || k.Family != 4 || k.Proto != packet.ProtoUDP || k.SrcPort != 1000 || k.DstPort != 53 {
			t.Errorf("install %d: key %+v, want the original direction from %s", i, k, src)
		}
		if want := uint8(m.Node(src)); c.buckets[0][i] != want {
			t.Errorf("install %d: bucket %d, want %d", i, c.buckets[0][i], want)
		}
	}
	// The reply of a connection refreshed more than a second later installs
	// it again under its original key.
	reply := udpFrame(t, mine, 64, false)
	copy(reply[26:30], []byte{203, 0, 113, 80})
	copy(reply[30:34], mine.AsSlice())
	reply[34], reply[35], reply[36], reply[37] = 0, 53, 0x03, 0xe8
	var p packet.Parsed
	if r := p.Decode(reply); r != packet.OK {
		t.Fatal(r)
	}
	if res := d.cfg.Tracker.Track(&p, d.cfg.Clock.Now()+2e9); res.Dir != conntrack.Reply || res.Offload != conntrack.OffloadInstall {
		t.Fatalf("tracker: %+v, want a reply to install again", res)
	}
	// The most common second packet is the reply: a connection installed
	// by it (through the other interface) is keyed by its original
	// direction, with the client's bucket.
	c.ops, c.keys, c.buckets = nil, nil, nil
	other := clientOf(m, 1, 1)
	front.frames = [][]byte{udpFrame(t, other, 64, false)}
	n = front.Receive(w.rx)
	w.batch(0, front, w.rx[:n], d.match.Load())
	if len(c.ops) != 0 {
		t.Fatalf("a first packet installed: %v %v", c.ops, c.keys)
	}
	resp := udpFrame(t, other, 64, false)
	copy(resp[26:30], []byte{203, 0, 113, 80})
	copy(resp[30:34], other.AsSlice())
	resp[34], resp[35], resp[36], resp[37] = 0, 53, 0x03, 0xe8
	back.frames = [][]byte{resp}
	n = back.Receive(w.rx)
	w.batch(1, back, w.rx[:n], d.match.Load())
	if len(c.ops) != 1 || c.ops[0] != "install" || len(c.keys[0]) != 1 {
		t.Fatalf("after the reply: flow cache calls %v %v, want one install", c.ops, c.keys)
	}
	if k := c.keys[0][0]; netip.AddrFrom4([4]byte(k.Src[:4])) != other || k.SrcPort != 1000 || k.DstPort != 53 || c.buckets[0][0] != uint8(m.Node(other)) {
		t.Errorf("installed by the reply: key %+v bucket %d, want the original direction from %s, bucket %d", k, c.buckets[0][0], other, m.Node(other))
	}
	m2 := m
	m2.NodeMask = 3
	if err := d.SetMatch(m2); err != nil || c.mask != 3 {
		t.Fatalf("SetMatch: %v, cache mask %d", err, c.mask)
	}
}

// TestWorkerFlowCacheOrder: an install and a removal of one connection in
// one batch reach the cache in that order.
func TestWorkerFlowCacheOrder(t *testing.T) {
	m := cluster.LocalNode(1, 1, 1)
	d, _, _ := testDataplane(t, m, staticResolver{Route{Iface: 1, NextHop: nextHop, Verdict: Forwarded}})
	c := &recCache{}
	d.cfg.FlowCache = c
	w := d.workers[0]
	var p packet.Parsed
	p.Tuple = packet.Tuple{Family: packet.IPv4, Proto: packet.ProtoTCP, SrcPort: 1, DstPort: 2, HasPorts: true}
	w.offload(0, &p, &conntrack.Result{Offload: conntrack.OffloadInstall})
	w.offload(0, &p, &conntrack.Result{Offload: conntrack.OffloadRemove})
	w.applyCache(0)
	if len(c.ops) != 2 || c.ops[0] != "install" || c.ops[1] != "remove" {
		t.Fatalf("cache calls %v, want install then remove", c.ops)
	}
	if got := d.Counters(0, 0); got.Installs.Load() != 1 || got.Removals.Load() != 1 {
		t.Errorf("counters: %d installs, %d removals", got.Installs.Load(), got.Removals.Load())
	}
}
