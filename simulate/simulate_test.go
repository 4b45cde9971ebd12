package simulate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/xdpcluster/xdpcluster/cluster"
)

var (
	macC = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	macS = net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}
	srv4 = netip.MustParseAddr("203.0.113.80")
	srv6 = netip.MustParseAddr("2001:db8:80::80")
)

// capture builds frames of known flows and the per-bucket totals they
// must produce.
type capture struct {
	t      *testing.T
	frames [][]byte
	ts     time.Time
	want   [cluster.MaxNodes]counts
	match  cluster.Match
	vlan   bool
}

func newCapture(t *testing.T, total uint32, seed uint32) *capture {
	return &capture{t: t, ts: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), match: cluster.LocalNode(total, 1, seed)}
}

func (c *capture) frame(src, dst netip.Addr, l4 ...gopacket.SerializableLayer) []byte {
	eth := &layers.Ethernet{SrcMAC: macC, DstMAC: macS}
	var ip gopacket.NetworkLayer
	proto := layers.IPProtocolTCP
	switch l4[0].(type) {
	case *layers.UDP:
		proto = layers.IPProtocolUDP
	case *layers.ICMPv4:
		proto = layers.IPProtocolICMPv4
	}
	if src.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	}
	ls := []gopacket.SerializableLayer{eth}
	if c.vlan {
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 42, Type: eth.EthernetType})
		eth.EthernetType = layers.EthernetTypeDot1Q
	}
	ls = append(ls, ip.(gopacket.SerializableLayer))
	for _, l := range l4 {
		switch l := l.(type) {
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(ip)
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, append(ls, l4...)...); err != nil {
		c.t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// add records a frame of a connection whose original source is orig.
func (c *capture) add(orig netip.Addr, f []byte, counted bool) {
	c.frames = append(c.frames, f)
	if counted {
		b := c.match.Node(orig)
		c.want[b].pkts++
		c.want[b].bytes += uint64(len(f))
	}
}

func (c *capture) tcpConn(cli netip.Addr, sport uint16, data int) {
	srv := srv4
	if cli.Is6() {
		srv = srv6
	}
	seg := func(from string, flags string, payload int) []byte {
		t := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: 443, Window: 1000}
		src, dst := cli, srv
		if from == "s" {
			t.SrcPort, t.DstPort = 443, layers.TCPPort(sport)
			src, dst = srv, cli
		}
		for _, f := range flags {
			switch f {
			case 'S':
				t.SYN = true
			case 'A':
				t.ACK = true
			case 'F':
				t.FIN = true
			case 'P':
				t.PSH = true
			}
		}
		return c.frame(src, dst, t, gopacket.Payload(bytes.Repeat([]byte{'x'}, payload)))
	}
	c.want[c.match.Node(cli)].conns++
	c.add(cli, seg("c", "S", 0), true)
	c.add(cli, seg("s", "SA", 0), true)
	c.add(cli, seg("c", "A", 0), true)
	for i := 0; i < data; i++ {
		c.add(cli, seg("c", "PA", 100), true)
		c.add(cli, seg("s", "PA", 1200), true)
	}
	c.add(cli, seg("c", "FA", 0), true)
	c.add(cli, seg("s", "FA", 0), true)
	c.add(cli, seg("c", "A", 0), true)
}

func (c *capture) udpFlow(cli netip.Addr, sport uint16, n int) {
	srv := srv4
	if cli.Is6() {
		srv = srv6
	}
	c.want[c.match.Node(cli)].conns++
	for i := 0; i < n; i++ {
		c.add(cli, c.frame(cli, srv, &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: 53}, gopacket.Payload("query")), true)
		c.add(cli, c.frame(srv, cli, &layers.UDP{SrcPort: 53, DstPort: layers.UDPPort(sport)}, gopacket.Payload("answer answer")), true)
	}
}

func (c *capture) ping(cli netip.Addr, id uint16) {
	c.want[c.match.Node(cli)].conns++
	c.add(cli, c.frame(cli, srv4, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: id, Seq: 1}, gopacket.Payload("ping")), true)
	c.add(cli, c.frame(srv4, cli, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(0, 0), Id: id, Seq: 1}, gopacket.Payload("ping")), true)
}

// pcap writes the frames as a pcap file with the given link type.
func (c *capture) pcap(lt layers.LinkType) []byte {
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if err := w.WriteFileHeader(65536, lt); err != nil {
		c.t.Fatal(err)
	}
	ts := c.ts
	for _, f := range c.frames {
		data := convert(f, lt)
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: len(data)}, data); err != nil {
			c.t.Fatal(err)
		}
		ts = ts.Add(time.Millisecond)
	}
	return b.Bytes()
}

func (c *capture) pcapng() []byte {
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriter(&b, layers.LinkTypeEthernet)
	if err != nil {
		c.t.Fatal(err)
	}
	ts := c.ts
	for _, f := range c.frames {
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(f), Length: len(f)}, f); err != nil {
			c.t.Fatal(err)
		}
		ts = ts.Add(time.Millisecond)
	}
	w.Flush()
	return b.Bytes()
}

// convert turns an Ethernet frame into the link type's framing. Frame
// lengths in the expectations are Ethernet lengths, so for cooked captures
// the test compares packets and connections only.
func convert(f []byte, lt layers.LinkType) []byte {
	switch lt {
	case layers.LinkTypeLinuxSLL:
		h := make([]byte, 16)
		binary.BigEndian.PutUint16(h[2:], 1) // ARPHRD_ETHER
		binary.BigEndian.PutUint16(h[4:], 6)
		copy(h[6:], f[6:12])
		copy(h[14:], f[12:14])
		return append(h, f[14:]...)
	case layers.LinkTypeRaw:
		return append([]byte(nil), f[14:]...)
	}
	return f
}

func standard(t *testing.T, total, seed uint32) *capture {
	c := newCapture(t, total, seed)
	r := rand.New(rand.NewPCG(uint64(seed), 1))
	for i := 0; i < 300; i++ {
		cli := netip.AddrFrom4([4]byte{198, 51, byte(r.IntN(256)), byte(1 + r.IntN(254))})
		c.tcpConn(cli, uint16(20000+i), 1+r.IntN(4))
	}
	for i := 0; i < 100; i++ {
		var a [16]byte
		for j := range a {
			a[j] = byte(r.Uint32())
		}
		a[0], a[1] = 0x20, 0x01
		if i%3 == 0 { // a shared /32
			a[2], a[3] = 0x0d, 0xb8
		}
		c.udpFlow(netip.AddrFrom16(a), uint16(30000+i), 1+r.IntN(3))
	}
	for i := 0; i < 20; i++ {
		c.ping(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), uint16(i+1))
	}
	return c
}

func checkNormal(t *testing.T, c *capture, rep *Report, withBytes bool) {
	t.Helper()
	for b, ns := range rep.Normal.Nodes {
		w := c.want[b]
		if ns.Connections != w.conns || ns.Packets != w.pkts || withBytes && ns.Bytes != w.bytes {
			t.Errorf("node %d: %d conns, %d pkts, %d bytes; want %d, %d, %d", ns.Node, ns.Connections, ns.Packets, ns.Bytes, w.conns, w.pkts, w.bytes)
		}
	}
	if o := rep.Normal.Ownership; o.None != 0 || o.Several != 0 || o.ExactlyOne != uint64(len(c.frames)) {
		t.Errorf("ownership %+v for %d frames", o, len(c.frames))
	}
	if len(rep.Unowned) != 0 || len(rep.Malformed) != 0 || rep.NotIP != 0 {
		t.Errorf("unowned %v malformed %v notIP %d", rep.Unowned, rep.Malformed, rep.NotIP)
	}
}

func TestKnownFlows(t *testing.T) {
	for _, total := range []uint32{2, 3, 7} {
		c := standard(t, total, 0xdeadbeef)
		for _, v := range []struct {
			name      string
			data      []byte
			withBytes bool
		}{
			{"pcap", c.pcap(layers.LinkTypeEthernet), true},
			{"pcapng", c.pcapng(), true},
			{"linux-sll", c.pcap(layers.LinkTypeLinuxSLL), false},
			{"raw-ip", c.pcap(layers.LinkTypeRaw), false},
		} {
			t.Run(fmt.Sprintf("%d-nodes/%s", total, v.name), func(t *testing.T) {
				rep, err := Run(bytes.NewReader(v.data), Options{TotalNodes: total, Seed: 0xdeadbeef})
				if err != nil {
					t.Fatal(err)
				}
				checkNormal(t, c, rep, v.withBytes)
				if rep.Connections != 420 || rep.Frames != uint64(len(c.frames)) {
					t.Errorf("%d connections, %d frames", rep.Connections, rep.Frames)
				}
			})
		}
	}
	// VLAN-tagged frames.
	c := newCapture(t, 3, 5)
	c.vlan = true
	for i := 0; i < 50; i++ {
		c.tcpConn(netip.AddrFrom4([4]byte{10, 9, 8, byte(i)}), uint16(1000+i), 2)
	}
	rep, err := Run(bytes.NewReader(c.pcap(layers.LinkTypeEthernet)), Options{TotalNodes: 3, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	checkNormal(t, c, rep, true)
}

func TestTakeover(t *testing.T) {
	c := standard(t, 3, 1)
	rep, err := Run(bytes.NewReader(c.pcap(layers.LinkTypeEthernet)), Options{TotalNodes: 3, Seed: 1, Takeovers: []Takeover{{2, 1}}})
	if err != nil {
		t.Fatal(err)
	}
	f := rep.Failover
	if f == nil {
		t.Fatal("no failover scenario")
	}
	n1, n2, n3 := f.Nodes[0], f.Nodes[1], f.Nodes[2]
	if !n2.Failed || n2.Packets != 0 || n1.Packets != c.want[0].pkts+c.want[1].pkts || n3.Packets != c.want[2].pkts {
		t.Fatalf("failover split %+v", f.Nodes)
	}
	if f.Ownership.None != 0 || f.Ownership.Several != 0 {
		t.Fatalf("failover ownership %+v", f.Ownership)
	}
	for _, bad := range [][]Takeover{{{2, 2}}, {{4, 1}}, {{2, 1}, {2, 3}}, {{2, 1}, {1, 3}}} {
		if _, err := Run(bytes.NewReader(nil), Options{TotalNodes: 3, Seed: 1, Takeovers: bad}); err == nil {
			t.Errorf("takeover %v accepted", bad)
		}
	}
	if tos, err := ParseTakeovers("2:1, 3:1"); err != nil || len(tos) != 2 || tos[1] != (Takeover{3, 1}) {
		t.Errorf("ParseTakeovers: %v %v", tos, err)
	}
	if _, err := ParseTakeovers("2-1"); err == nil {
		t.Error("ParseTakeovers accepted 2-1")
	}
}

// TestMidStream: a capture that starts in the middle of a connection: its
// packets are owned by nobody (loose pickup off), and --tcp-loose changes
// that.
func TestMidStream(t *testing.T) {
	c := newCapture(t, 2, 9)
	c.tcpConn(netip.MustParseAddr("198.51.100.1"), 999, 3)
	c.frames = c.frames[3:] // drop the handshake
	data := c.pcap(layers.LinkTypeEthernet)
	rep, err := Run(bytes.NewReader(data), Options{TotalNodes: 2, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unowned["tcp_no_syn"] != uint64(len(c.frames)) || rep.Tracked != 0 {
		t.Fatalf("unowned %v, tracked %d", rep.Unowned, rep.Tracked)
	}
	loose, err := Run(bytes.NewReader(data), Options{TotalNodes: 2, Seed: 9, TCPLoose: true})
	if err != nil {
		t.Fatal(err)
	}
	if loose.Tracked == 0 {
		t.Fatal("loose pickup tracked nothing")
	}
}

func TestTruncated(t *testing.T) {
	c := standard(t, 3, 2)
	for _, v := range []struct {
		name string
		data []byte
	}{{"pcap", c.pcap(layers.LinkTypeEthernet)}, {"pcapng", c.pcapng()}} {
		data := v.data[:len(v.data)*2/3]
		rep, err := Run(bytes.NewReader(data), Options{TotalNodes: 3, Seed: 2})
		var ce *CaptureError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: error %v, want a CaptureError", v.name, err)
		}
		if rep == nil || rep.Frames == 0 || rep.Warning == "" || ce.Frame != rep.Frames+1 || ce.Offset <= 0 || ce.Offset > int64(len(data)) {
			t.Fatalf("%s: report %+v, error %+v", v.name, rep, ce)
		}
		if v.name == "pcap" {
			// The exact offset: the 24-byte header plus every whole record.
			want := int64(24)
			for _, f := range c.frames[:rep.Frames] {
				want += 16 + int64(len(f))
			}
			if ce.Offset != want {
				t.Errorf("offset %d, want %d", ce.Offset, want)
			}
		}
	}
	if _, err := Run(bytes.NewReader([]byte("not a capture at all")), Options{TotalNodes: 3, Seed: 2}); err == nil {
		t.Error("garbage accepted")
	}
}

func TestSeedSearch(t *testing.T) {
	c := standard(t, 4, 3)
	rep, err := Run(bytes.NewReader(c.pcap(layers.LinkTypeEthernet)), Options{TotalNodes: 4, Seed: 3, SeedSearch: 200})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Seeds) != 5 {
		t.Fatalf("%d seeds reported", len(rep.Seeds))
	}
	for i := 1; i < len(rep.Seeds); i++ {
		if rep.Seeds[i].Imbalance.Bytes < rep.Seeds[i-1].Imbalance.Bytes {
			t.Fatal("seeds not sorted by byte imbalance")
		}
	}
	if rep.Seeds[0].Imbalance.Bytes > rep.Normal.Imbalance.Bytes+1e-9 {
		t.Fatalf("best seed %.3f worse than the configured one %.3f", rep.Seeds[0].Imbalance.Bytes, rep.Normal.Imbalance.Bytes)
	}
	// The best seed really gives that imbalance.
	best := rep.Seeds[0]
	again, err := Run(bytes.NewReader(c.pcap(layers.LinkTypeEthernet)), Options{TotalNodes: 4, Seed: best.Seed})
	if err != nil {
		t.Fatal(err)
	}
	if d := again.Normal.Imbalance.Bytes - best.Imbalance.Bytes; d > 1e-9 || d < -1e-9 {
		t.Fatalf("seed %#x: search said %.4f, replay says %.4f", best.Seed, best.Imbalance.Bytes, again.Normal.Imbalance.Bytes)
	}
	if m, err := cluster.ParseIptables(best.Rule); err != nil || m.Seed != best.Seed {
		t.Fatalf("rule %q: %v", best.Rule, err)
	}
}

func TestTopSources(t *testing.T) {
	c := newCapture(t, 2, 4)
	heavy := netip.MustParseAddr("198.51.100.200")
	c.tcpConn(heavy, 1, 50)
	for i := 0; i < 20; i++ {
		c.tcpConn(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), uint16(100+i), 1)
	}
	rep, err := Run(bytes.NewReader(c.pcap(layers.LinkTypeEthernet)), Options{TotalNodes: 2, Seed: 4, Top: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.TopSources) != 3 || rep.TopSources[0].Source != heavy.String() || rep.TopSources[0].Node != c.match.Node(heavy)+1 {
		t.Fatalf("top sources %+v", rep.TopSources)
	}
	if rep.TopPrefixes[0].Source != "198.51.100.0/24" {
		t.Fatalf("top prefixes %+v", rep.TopPrefixes)
	}
}

func BenchmarkReplay(b *testing.B) {
	var t testing.T
	c := standard(&t, 3, 1)
	data := c.pcap(layers.LinkTypeEthernet)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Run(bytes.NewReader(data), Options{TotalNodes: 3, Seed: 1, MaxEntries: 4096}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(c.frames))/b.Elapsed().Seconds(), "frames/s")
}
