package backend

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

var (
	clusterMAC = net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}
	ownMAC     = net.HardwareAddr{2, 0, 0, 0, 0, 7}
	otherMAC   = net.HardwareAddr{2, 0, 0, 0, 0, 9}
)

// want is the oracle: the verdict cluster.Match implies for a frame built
// from these facts.
type frameFacts struct {
	toCluster bool       // destination MAC is the cluster MAC
	ip        bool       // IPv4/IPv6 (else ARP)
	malformed bool       // the IP header is unreadable
	key       netip.Addr // the address ownership is decided by
}

func expect(m *cluster.Match, f frameFacts) uint32 {
	switch {
	case !f.toCluster || !f.ip:
		return xdpPass
	case f.malformed:
		return xdpDrop
	case m.Owns(f.key):
		return xdpPass
	}
	return xdpDrop
}

func randAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if r.IntN(3) == 0 {
			b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		}
		return netip.AddrFrom16(b)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], r.Uint32())
	return netip.AddrFrom4(b)
}

// randomFrame builds a random frame and the facts that decide it.
func randomFrame(r *rand.Rand) ([]byte, frameFacts) {
	f := frameFacts{toCluster: r.IntN(10) != 0, ip: r.IntN(20) != 0}
	dst := clusterMAC
	if !f.toCluster {
		dst = otherMAC
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: dst}
	ls := []gopacket.SerializableLayer{eth}
	v6 := r.IntN(2) == 0
	l3 := layers.EthernetTypeIPv4
	if v6 {
		l3 = layers.EthernetTypeIPv6
	}
	if !f.ip {
		l3 = layers.EthernetTypeARP
	}
	switch r.IntN(4) {
	case 0:
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 5, Type: l3})
	case 1:
		eth.EthernetType = layers.EthernetTypeQinQ
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 5, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 6, Type: l3})
	default:
		eth.EthernetType = l3
	}
	if !f.ip {
		ls = append(ls, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: 1, SourceHwAddress: make([]byte, 6), SourceProtAddress: make([]byte, 4), DstHwAddress: make([]byte, 6), DstProtAddress: make([]byte, 4)})
		return ser(ls), f
	}
	src, dst4 := randAddr(r, v6), randAddr(r, v6)
	f.key = src
	kind := r.IntN(6) // 0-2 udp, 3 icmp error, 4 fragment, 5 icmp error without room
	if !v6 {
		ip := &layers.IPv4{Version: 4, TTL: 64, SrcIP: src.AsSlice(), DstIP: dst4.AsSlice(), Protocol: layers.IPProtocolUDP}
		if r.IntN(4) == 0 {
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
		}
		switch kind {
		case 3, 5:
			ip.Protocol = layers.IPProtocolICMPv4
			inner := randAddr(r, false)
			emb := ser([]gopacket.SerializableLayer{&layers.IPv4{Version: 4, TTL: 1, Protocol: layers.IPProtocolTCP, SrcIP: dst4.AsSlice(), DstIP: inner.AsSlice()}, gopacket.Payload(make([]byte, 8))})
			types := []uint8{3, 11, 12, 4, 5}
			typ := types[r.IntN(len(types))]
			if kind == 5 {
				emb = emb[:10] // no room for the embedded header
			} else {
				f.key = inner
			}
			if r.IntN(5) == 0 { // an echo request: not an error
				typ, f.key = 8, src
			}
			ls = append(ls, ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0)}, gopacket.Payload(emb))
		case 4:
			ip.Flags, ip.FragOffset = layers.IPv4MoreFragments, uint16(1+r.IntN(100))
			ip.Protocol = layers.IPProtocolICMPv4 // even ICMP: a later fragment has no header
			ls = append(ls, ip, gopacket.Payload(make([]byte, 16)))
		default:
			ls = append(ls, ip, &layers.UDP{SrcPort: 1, DstPort: 2}, gopacket.Payload("data"))
		}
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: src.AsSlice(), DstIP: dst4.AsSlice(), NextHeader: layers.IPProtocolUDP}
		switch kind {
		case 3, 5:
			ip.NextHeader = layers.IPProtocolICMPv6
			inner := randAddr(r, true)
			emb := ser([]gopacket.SerializableLayer{&layers.IPv6{Version: 6, HopLimit: 1, NextHeader: layers.IPProtocolTCP, SrcIP: dst4.AsSlice(), DstIP: inner.AsSlice()}, gopacket.Payload(make([]byte, 8))})
			typ := uint8(1 + r.IntN(4))
			if kind == 5 {
				emb = emb[:20]
			} else {
				f.key = inner
			}
			if r.IntN(5) == 0 {
				typ, f.key = 128, src
			}
			ls = append(ls, ip, &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}, gopacket.Payload(append(make([]byte, 4), emb...)))
		case 4:
			ip.NextHeader = layers.IPProtocolIPv6Fragment
			ls = append(ls, ip, gopacket.Payload([]byte{17, 0, 0x05, 0xc8, 1, 2, 3, 4}), gopacket.Payload(make([]byte, 16)))
		default:
			ls = append(ls, ip, &layers.UDP{SrcPort: 1, DstPort: 2}, gopacket.Payload("data"))
		}
	}
	frame := ser(ls)
	// Malformed: cut inside the IP header, or a lying version/IHL.
	if r.IntN(15) == 0 {
		off := 14
		if eth.EthernetType == layers.EthernetTypeDot1Q {
			off = 18
		} else if eth.EthernetType == layers.EthernetTypeQinQ {
			off = 22
		}
		switch r.IntN(3) {
		case 0:
			frame = frame[:off+r.IntN(20)]
		case 1:
			frame[off] = 0x5f // version 5
		case 2:
			if !v6 {
				frame[off] = 0x43 // IHL 3
			} else {
				frame[off] = 0x40
			}
		}
		f.malformed = true
	}
	if len(frame) < 14 {
		frame = append(frame, make([]byte, 14-len(frame))...)
	}
	return frame, f
}

func ser(ls []gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// TestVerdictsMatchCluster runs the compiled program on 100,000 random
// frames with BPF_PROG_TEST_RUN: its verdict equals cluster.Match's, owned
// frames get our MAC, and malformed frames are never passed as owned.
func TestVerdictsMatchCluster(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading XDP programs needs root; run the tests as root")
	}
	r := rand.New(rand.NewPCG(11, 12))
	matches := []cluster.Match{
		cluster.LocalNode(3, 1, 0xdeadbeef),
		{TotalNodes: 7, NodeMask: 0x15, Seed: 0},
		{TotalNodes: 32, NodeMask: 0xffff0000, Seed: r.Uint32(), Invert: true},
		cluster.LocalNode(2, 2, 12345),
	}
	p, err := NewProgram(clusterMAC, ownMAC, matches[0])
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const frames = 100000
	counts := map[uint32]int{}
	for i := 0; i < frames; i++ {
		m := &matches[i*len(matches)/frames]
		if i%(frames/len(matches)) == 0 {
			if err := p.SetMatch(*m); err != nil {
				t.Fatal(err)
			}
		}
		frame, facts := randomFrame(r)
		out := make([]byte, len(frame))
		ret, err := p.Prog.Run(&ebpf.RunOptions{Data: frame, DataOut: out})
		if err != nil {
			t.Fatalf("frame %d: run: %v", i, err)
		}
		want := expect(m, facts)
		if ret != want {
			t.Fatalf("frame %d (%+v, match %s): verdict %d, want %d\n%x", i, facts, m, ret, want, frame)
		}
		owned := facts.toCluster && facts.ip && !facts.malformed && ret == xdpPass
		if owned && net.HardwareAddr(out[:6]).String() != ownMAC.String() {
			t.Fatalf("frame %d: owned but the destination MAC is %s", i, net.HardwareAddr(out[:6]))
		}
		if !owned && string(out) != string(frame) {
			t.Fatalf("frame %d: a frame not owned was modified", i)
		}
		counts[ret]++
	}
	st, _ := p.Stats()
	t.Logf("%d frames: %d passed, %d dropped; counters %v", frames, counts[xdpPass], counts[xdpDrop], st)
	if st[StatOwned] == 0 || st[StatForeign] == 0 || st[StatOther] == 0 || st[StatICMPInner] == 0 || st[StatMalformed] == 0 {
		t.Errorf("a counter never moved: %v", st)
	}
}

// TestSetMatchAtomic: SetMatch flipping between two writings of the same
// ownership (node 1 of 2: mask 0b01, or mask 0b10 inverted) never lets a
// packet see a mix of them (0b01 inverted or 0b10 plain, which own node
// 2's share instead): the program reads mask and invert as one word,
// which SetMatch stores atomically. The flips run on another thread
// while the program decides a packet of each share thousands of times.
func TestSetMatchAtomic(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading XDP programs needs root; run the tests as root")
	}
	const seed = 0xdeadbeef
	plain := cluster.LocalNode(2, 1, seed)
	inverted := cluster.Match{TotalNodes: 2, NodeMask: 0b10, Seed: seed, Invert: true}
	p, err := NewProgram(clusterMAC, ownMAC, plain)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	frameFrom := func(node int) []byte {
		for i := 1; ; i++ {
			src := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
			if plain.Node(src) != node {
				continue
			}
			return ser([]gopacket.SerializableLayer{
				&layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, DstMAC: clusterMAC, EthernetType: layers.EthernetTypeIPv4},
				&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: net.IP{192, 0, 2, 10}},
				&layers.UDP{SrcPort: 1000, DstPort: 53},
				gopacket.Payload("q"),
			})
		}
	}
	mine, theirs := frameFrom(0), frameFrom(1)
	stop := nstest.Repeat(func() {
		p.SetMatch(inverted)
		p.SetMatch(plain)
	})
	out := make([]byte, 2048)
	var bad int
	const runs = 5000
	for range runs {
		if ret, _ := p.Prog.Run(&ebpf.RunOptions{Data: mine, DataOut: out}); ret != xdpPass {
			bad++
		}
		if ret, _ := p.Prog.Run(&ebpf.RunOptions{Data: theirs, DataOut: out}); ret != xdpDrop {
			bad++
		}
	}
	n := 2 * stop()
	if bad != 0 {
		t.Fatalf("over %d flips, %d of %d verdicts were not the ownership both writings mean", n, bad, 2*runs)
	}
	t.Logf("%d runs per share during %d flips: every verdict the same", runs, n)
}
