package dataplane

import (
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/packet"
)

// memPort is an in-memory Port for unit tests and benchmarks of the worker
// step (the end-to-end tests use real AF_XDP and raw sockets).
type memPort struct {
	frames [][]byte // receive queue
	bufs   [][]byte // frame memory: RX slots then TX slots
	rxUsed int
	txFree []int
	sent   [][]byte
	keep   bool // keep copies of sent frames
}

func newMemPort(n int) *memPort {
	p := &memPort{}
	for i := 0; i < 2*n; i++ {
		p.bufs = append(p.bufs, make([]byte, 2048))
		if i >= n {
			p.txFree = append(p.txFree, i)
		}
	}
	return p
}

func (p *memPort) Name() string { return "mem/q0" }
func (p *memPort) Mode() string { return "mem" }
func (p *memPort) FD() int      { return -1 }
func (p *memPort) Receive(fs []Frame) int {
	n := 0
	for n < len(fs) && len(p.frames) > 0 {
		slot := p.rxUsed % (len(p.bufs) / 2)
		p.rxUsed++
		copy(p.bufs[slot], p.frames[0])
		fs[n] = Frame{Addr: uint64(slot), Len: uint32(len(p.frames[0]))}
		p.frames = p.frames[1:]
		n++
	}
	return n
}
func (p *memPort) Bytes(f Frame) []byte { return p.bufs[f.Addr][:f.Len] }
func (p *memPort) Recycle([]Frame)      {}
func (p *memPort) AllocTx() (Frame, []byte, bool) {
	if len(p.txFree) == 0 {
		return Frame{}, nil, false
	}
	s := p.txFree[len(p.txFree)-1]
	p.txFree = p.txFree[:len(p.txFree)-1]
	return Frame{Addr: uint64(s), Len: 2048}, p.bufs[s], true
}
func (p *memPort) FreeTx(f Frame) { p.txFree = append(p.txFree, int(f.Addr)) }
func (p *memPort) Transmit(fs []Frame) int {
	for _, f := range fs {
		if p.keep {
			p.sent = append(p.sent, append([]byte(nil), p.bufs[f.Addr][:f.Len]...))
		}
		p.txFree = append(p.txFree, int(f.Addr))
	}
	return len(fs)
}
func (p *memPort) Reap() int        { return 0 }
func (p *memPort) Stats() PortStats { return PortStats{} }
func (p *memPort) Close() error     { return nil }

// staticResolver routes everything out of interface 1 to a fixed MAC.
type staticResolver struct{ r Route }

func (s staticResolver) Resolve(packet.Family, [16]byte) Route { return s.r }

var nextHop = [6]byte{2, 0, 0, 0, 0, 0x99}

func testDataplane(t testing.TB, match cluster.Match, res Resolver) (*Dataplane, *memPort, *memPort) {
	ct, err := conntrack.NewTable(conntrack.Config{Tag: func(fam packet.Family, orig [16]byte) uint8 {
		if fam == packet.IPv4 {
			return uint8(match.Bucket4((*[4]byte)(orig[:4])))
		}
		return uint8(match.Bucket16(&orig))
	}})
	if err != nil {
		t.Fatal(err)
	}
	front, back := newMemPort(256), newMemPort(256)
	d, err := New(Config{
		Ifaces: []Iface{{Name: "front", MAC: [6]byte{2, 0, 0, 0, 0, 1}, Ports: []Port{front}},
			{Name: "back", MAC: [6]byte{2, 0, 0, 0, 0, 2}, Ports: []Port{back}}},
		Match: match, Tracker: ct, Resolver: res,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d, front, back
}

func udpFrame(t testing.TB, src netip.Addr, ttl uint8, vlan bool) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 7}, DstMAC: net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}, EthernetType: layers.EthernetTypeIPv4}
	ls := []gopacket.SerializableLayer{eth}
	if vlan {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 5, Type: layers.EthernetTypeIPv4})
	}
	ip := &layers.IPv4{Version: 4, TTL: ttl, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: net.IP{203, 0, 113, 80}}
	udp := &layers.UDP{SrcPort: 1000, DstPort: 53}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, append(ls, ip, udp, gopacket.Payload("payload"))...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// clientOf returns a source address in the given 0-based bucket.
func clientOf(m cluster.Match, bucket int, skip int) netip.Addr {
	for i := 1; ; i++ {
		a := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		if m.Node(a) == bucket {
			if skip == 0 {
				return a
			}
			skip--
		}
	}
}

func TestWorkerVerdicts(t *testing.T) {
	m := cluster.LocalNode(2, 1, 0xdeadbeef)
	d, front, back := testDataplane(t, m, staticResolver{Route{Iface: 1, NextHop: nextHop, Verdict: Forwarded}})
	back.keep = true
	w := d.workers[0]
	mine, theirs := clientOf(m, 0, 0), clientOf(m, 1, 0)
	front.frames = [][]byte{
		udpFrame(t, mine, 64, false),                          // forwarded
		udpFrame(t, mine, 64, true),                           // forwarded, tag stripped
		udpFrame(t, theirs, 64, false),                        // foreign
		udpFrame(t, clientOf(m, 0, 1), 1, false),              // TTL expired (new connection, owned)
		{1, 2, 3},                                             // malformed
		append(udpFrame(t, mine, 64, false)[:12], 0x08, 0x06), // not IP
	}
	n := front.Receive(w.rx)
	w.batch(0, front, w.rx[:n], d.match.Load())
	w.flush()
	pkts, _, owner := d.Totals(0)
	want := map[Verdict]uint64{Forwarded: 2, Foreign: 1, TTLExpired: 1, Malformed: 1, NotIP: 1}
	for v := Verdict(0); v < NumVerdicts; v++ {
		if pkts[v] != want[v] {
			t.Errorf("%s: %d, want %d", v, pkts[v], want[v])
		}
	}
	if owner[0] != 3 || owner[1] != 1 {
		t.Errorf("owner counters %v", owner[:2])
	}
	if len(back.sent) != 2 {
		t.Fatalf("%d frames sent out of back", len(back.sent))
	}
	for _, f := range back.sent {
		var p packet.Parsed
		if r := p.Decode(f); r != packet.OK || p.VLANs != 0 || p.TTL != 63 {
			t.Fatalf("sent frame: %v, %d tags, TTL %d", r, p.VLANs, p.TTL)
		}
		if [6]byte(f[0:6]) != nextHop || [6]byte(f[6:12]) != ([6]byte{2, 0, 0, 0, 0, 2}) {
			t.Fatalf("MACs %x", f[:12])
		}
		ihl := int(f[14]&0xf) * 4
		if packet.Checksum(f[14:14+ihl]) != 0 {
			t.Fatal("IPv4 checksum broken")
		}
	}
	// Taking over the other bucket at run time: the foreign flow is now ours.
	m2 := m
	m2.NodeMask = 3
	if err := d.SetMatch(m2); err != nil {
		t.Fatal(err)
	}
	front.frames = [][]byte{udpFrame(t, theirs, 64, false)}
	n = front.Receive(w.rx)
	w.batch(0, front, w.rx[:n], d.match.Load())
	if pkts, _, _ := d.Totals(0); pkts[Forwarded] != 3 {
		t.Errorf("after takeover: forwarded %d, want 3", pkts[Forwarded])
	}
}

func TestWorkerNoRoute(t *testing.T) {
	m := cluster.LocalNode(1, 1, 1)
	for _, v := range []Verdict{NoRoute, NoNeighbour, Local} {
		d, front, _ := testDataplane(t, m, staticResolver{Route{Verdict: v}})
		w := d.workers[0]
		front.frames = [][]byte{udpFrame(t, netip.MustParseAddr("198.51.100.9"), 64, false)}
		n := front.Receive(w.rx)
		w.batch(0, front, w.rx[:n], d.match.Load())
		if pkts, _, _ := d.Totals(0); pkts[v] != 1 {
			t.Errorf("%s: %v", v, pkts)
		}
	}
}

// benchFrames: 64 frames, half of existing flows, IPv4 UDP.
func benchFrames(t testing.TB, m cluster.Match) [][]byte {
	var fs [][]byte
	for i := 0; i < 64; i++ {
		fs = append(fs, udpFrame(t, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 64, false))
	}
	return fs
}

// workerStep returns one full worker step over a 64-frame batch of
// existing flows, half owned: receive, parse, track, decide, copy,
// rewrite, queue and transmit. It has run once, so the connections and
// the route cache entry exist.
func workerStep(tb testing.TB) func() {
	m := cluster.LocalNode(2, 1, 7)
	d, front, _ := testDataplane(tb, m, staticResolver{Route{Iface: 1, NextHop: nextHop, Verdict: Forwarded}})
	w := d.workers[0]
	frames := benchFrames(tb, m)
	step := func() {
		front.frames = frames
		n := front.Receive(w.rx)
		w.batch(0, front, w.rx[:n], d.match.Load())
		w.flush()
	}
	step()
	return step
}

func TestWorkerBatchAllocs(t *testing.T) {
	step := workerStep(t)
	if allocs := testing.AllocsPerRun(100, step); allocs != 0 {
		t.Fatalf("a batch allocates %v times", allocs)
	}
}

// BenchmarkWorkerBatch: the full per-packet step (parse, track, decide,
// copy, rewrite, queue) on 64-frame batches of existing flows, half owned.
func BenchmarkWorkerBatch(b *testing.B) {
	step := workerStep(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step()
	}
	pkts := float64(b.N) * 64
	b.ReportMetric(b.Elapsed().Seconds()*1e9/pkts, "ns/pkt")
	b.ReportMetric(pkts/b.Elapsed().Seconds(), "pps")
}
