package packet

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// view is the parser-independent summary both our Parsed and gopacket's
// layers are reduced to for comparison.
type view struct {
	VLANs            []uint16
	Family           int
	Src, Dst         netip.Addr
	TTL              uint8
	Proto            uint8
	Fragment         bool
	FragOffset       uint16
	MoreFrags        bool
	FragID           uint32
	HasPorts         bool
	SrcPort, DstPort uint16
	TCPFlags         uint8
	Seq, Ack         uint32
	ICMPType         uint8
	ICMPCode         uint8
	Inner            *innerView
}

type innerView struct {
	Src, Dst         netip.Addr
	Proto            uint8
	HasPorts         bool
	SrcPort, DstPort uint16
}

func addrOf(fam Family, b [16]byte) netip.Addr {
	if fam == IPv4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

func ourView(p *Parsed) view {
	v := view{Family: int(p.Family), Src: addrOf(p.Family, p.Src), Dst: addrOf(p.Family, p.Dst), TTL: p.TTL,
		Proto: p.Proto, Fragment: p.Fragment, FragOffset: p.FragOffset, MoreFrags: p.MoreFrags, FragID: p.FragID,
		HasPorts: p.HasPorts, SrcPort: p.SrcPort, DstPort: p.DstPort, TCPFlags: p.TCPFlags, Seq: p.Seq, Ack: p.Ack,
		ICMPType: p.ICMPType, ICMPCode: p.ICMPCode}
	for i := 0; i < int(p.VLANs); i++ {
		v.VLANs = append(v.VLANs, p.VLAN[i])
	}
	if p.InnerValid {
		v.Inner = &innerView{addrOf(p.Inner.Family, p.Inner.Src), addrOf(p.Inner.Family, p.Inner.Dst),
			p.Inner.Proto, p.Inner.HasPorts, p.Inner.SrcPort, p.Inner.DstPort}
	}
	return v
}

func ip(a net.IP) netip.Addr {
	x, _ := netip.AddrFromSlice(a)
	if a4 := a.To4(); a4 != nil && len(a) == 4 {
		x = netip.AddrFrom4([4]byte(a4))
	}
	return x
}

// transport fills ports and flags from gopacket's transport layers.
func transport(v *view, l gopacket.Layer) {
	switch l := l.(type) {
	case *layers.TCP:
		if len(l.Contents) < 20 {
			return // gopacket could not decode a truncated header
		}
		v.HasPorts, v.SrcPort, v.DstPort, v.Seq, v.Ack = true, uint16(l.SrcPort), uint16(l.DstPort), l.Seq, l.Ack
		v.TCPFlags = l.Contents[13]
	case *layers.UDP:
		v.HasPorts, v.SrcPort, v.DstPort = true, uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.UDPLite:
		v.HasPorts, v.SrcPort, v.DstPort = true, uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.SCTP:
		v.HasPorts, v.SrcPort, v.DstPort = true, uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.ICMPv4:
		v.ICMPType, v.ICMPCode = l.TypeCode.Type(), l.TypeCode.Code()
		if icmp4Query(v.ICMPType) {
			v.HasPorts, v.SrcPort, v.DstPort = true, l.Id, l.Id
		}
	case *layers.ICMPv6:
		v.ICMPType, v.ICMPCode = l.TypeCode.Type(), l.TypeCode.Code()
	case *layers.ICMPv6Echo:
		v.HasPorts, v.SrcPort, v.DstPort = true, l.Identifier, l.Identifier
	}
}

// gopacketView decodes frame with gopacket and reduces it to a view.
// Where gopacket stops early (a first fragment's transport header, DCCP),
// the spec that built the frame supplies the transport fields.
func gopacketView(t *testing.T, frame []byte, s spec) view {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil && !strings.Contains(el.Error().Error(), "not currently supported") &&
		!strings.Contains(el.Error().Error(), "Unable to decode IPProtocol") {
		t.Fatalf("%s: gopacket cannot decode the frame: %v", s.name, el.Error())
	}
	var v view
	var l4payload []byte
	for _, l := range pkt.Layers() {
		switch l := l.(type) {
		case *layers.Dot1Q:
			v.VLANs = append(v.VLANs, l.VLANIdentifier)
		case *layers.IPv4:
			v.Family, v.Src, v.Dst, v.TTL, v.Proto = 4, ip(l.SrcIP.To4()), ip(l.DstIP.To4()), l.TTL, uint8(l.Protocol)
			v.FragOffset, v.MoreFrags, v.FragID = l.FragOffset*8, l.Flags&layers.IPv4MoreFragments != 0, uint32(l.Id)
			v.Fragment = v.MoreFrags || v.FragOffset != 0
			l4payload = l.Payload
		case *layers.IPv6:
			v.Family, v.Src, v.Dst, v.TTL, v.Proto = 6, ip(l.SrcIP), ip(l.DstIP), l.HopLimit, uint8(l.NextHeader)
		case *layers.IPv6HopByHop:
			v.Proto = uint8(l.NextHeader)
		case *layers.IPv6Destination:
			v.Proto = uint8(l.NextHeader)
		case *layers.IPv6Routing:
			v.Proto = uint8(l.NextHeader)
		case *layers.IPSecAH:
			v.Proto = uint8(l.NextHeader)
		case *layers.IPv6Fragment:
			v.Proto, v.FragOffset, v.MoreFrags, v.FragID = uint8(l.NextHeader), l.FragmentOffset*8, l.MoreFragments, l.Identification
			v.Fragment = v.FragOffset != 0 || v.MoreFrags
			l4payload = l.Payload
		default:
			transport(&v, l)
		}
	}
	// A first fragment: gopacket leaves the transport header undecoded.
	if v.Fragment && v.FragOffset == 0 && !v.HasPorts && v.ICMPType == 0 {
		var lt gopacket.LayerType
		switch v.Proto {
		case ProtoTCP:
			lt = layers.LayerTypeTCP
		case ProtoUDP:
			lt = layers.LayerTypeUDP
		}
		if lt != 0 {
			for _, l := range gopacket.NewPacket(l4payload, lt, gopacket.Default).Layers() {
				transport(&v, l)
			}
		}
	}
	if v.Proto == ProtoDCCP && !v.Fragment {
		v.HasPorts, v.SrcPort, v.DstPort = true, s.sport, 5004
	}
	if s.inner != "" {
		v.Inner = innerFromGopacket(t, frame, s)
	}
	return v
}

// innerFromGopacket decodes the packet embedded in an ICMP error.
func innerFromGopacket(t *testing.T, frame []byte, s spec) *innerView {
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	var emb []byte
	lt := layers.LayerTypeIPv4
	if l, ok := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
		emb = l.Payload
	} else if l, ok := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
		emb, lt = l.Payload[4:], layers.LayerTypeIPv6
	} else {
		t.Fatalf("%s: no ICMP layer", s.name)
	}
	in := gopacket.NewPacket(emb, lt, gopacket.Lazy)
	iv := &innerView{}
	var l4 []byte
	if l, ok := in.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		iv.Src, iv.Dst, iv.Proto, l4 = ip(l.SrcIP.To4()), ip(l.DstIP.To4()), uint8(l.Protocol), l.Payload
	} else if l, ok := in.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		iv.Src, iv.Dst, iv.Proto, l4 = ip(l.SrcIP), ip(l.DstIP), uint8(l.NextHeader), l.Payload
	}
	// The embedded transport header is truncated to 8 bytes, which
	// gopacket refuses for TCP; its first 4 bytes are the ports.
	var v view
	for _, l := range in.Layers() {
		transport(&v, l)
	}
	if !v.HasPorts && (iv.Proto == ProtoTCP || iv.Proto == ProtoUDP) {
		v.HasPorts, v.SrcPort, v.DstPort = true, binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
	}
	iv.HasPorts, iv.SrcPort, iv.DstPort = v.HasPorts, v.SrcPort, v.DstPort
	return iv
}

// spec describes one crafted frame.
type spec struct {
	name   string
	vlans  []uint16
	v6     bool
	ipOpts bool
	ext    []uint8 // IPv6 extension headers, in order
	frag   string  // "", "first", "middle", "atomic"
	l4     string  // tcp udp udplite sctp dccp echo esp gre error
	inner  string  // for l4 == "error": tcp udp echo
	sport  uint16
}

var (
	mac1, mac2 = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, net.HardwareAddr{0x01, 0, 0x5e, 0, 1, 1}
	cli4, srv4 = net.IP{198, 51, 100, 7}, net.IP{203, 0, 113, 9}
	cli6, srv6 = net.ParseIP("2001:db8:1::7"), net.ParseIP("2001:db8:2::9")
)

func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// ipLayer returns the IP layer (and raw IPv6 extension headers) for a
// packet carrying proto from src to dst.
func ipLayers(s spec, src, dst net.IP, proto uint8) (gopacket.NetworkLayer, []gopacket.SerializableLayer) {
	if !s.v6 {
		l := &layers.IPv4{Version: 4, TTL: 61, Id: 0x4242, Protocol: layers.IPProtocol(proto), SrcIP: src, DstIP: dst}
		if s.ipOpts {
			l.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}} // NOP NOP NOP EOL
		}
		switch s.frag {
		case "first":
			l.Flags = layers.IPv4MoreFragments
		case "middle":
			l.Flags, l.FragOffset = layers.IPv4MoreFragments, 185
		}
		return l, []gopacket.SerializableLayer{l}
	}
	l := &layers.IPv6{Version: 6, HopLimit: 62, SrcIP: src, DstIP: dst}
	out := []gopacket.SerializableLayer{l}
	chain := append([]uint8(nil), s.ext...)
	if s.frag != "" {
		chain = append(chain, ProtoFragment)
	}
	chain = append(chain, proto)
	l.NextHeader = layers.IPProtocol(chain[0])
	for i, h := range chain[:len(chain)-1] {
		next := chain[i+1]
		var b []byte
		switch h {
		case ProtoAH: // 12 bytes of header + 4 of ICV: length field (16/4)-2 = 2
			b = []byte{next, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 7, 0xaa, 0xbb, 0xcc, 0xdd}
		case ProtoFragment:
			b = []byte{next, 0, 0, 0, 0xca, 0xfe, 0xbe, 0xef}
			switch s.frag {
			case "first":
				b[3] = 1
			case "middle":
				binary.BigEndian.PutUint16(b[2:], 1480|1)
			}
		case ProtoRouting: // type 0 with no addresses left, padded to 8
			b = []byte{next, 0, 0, 0, 0, 0, 0, 0}
		default: // hop-by-hop, destination options: a PadN to 8 bytes
			b = []byte{next, 0, 1, 4, 0, 0, 0, 0}
		}
		out = append(out, gopacket.Payload(b))
	}
	return l, out
}

// build crafts the frame a spec describes.
func build(t *testing.T, s spec) []byte {
	t.Helper()
	src, dst := cli4, srv4
	if s.v6 {
		src, dst = cli6, srv6
	}
	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: mac1, DstMAC: mac2}
	ls = append(ls, eth)
	et := layers.EthernetTypeIPv4
	if s.v6 {
		et = layers.EthernetTypeIPv6
	}
	for i, id := range s.vlans {
		tag := &layers.Dot1Q{VLANIdentifier: id, Type: et}
		if i == 0 {
			eth.EthernetType = layers.EthernetTypeDot1Q
			if len(s.vlans) == 2 {
				eth.EthernetType = layers.EthernetTypeQinQ
			}
		} else {
			ls[len(ls)-1].(*layers.Dot1Q).Type = layers.EthernetTypeDot1Q
		}
		ls = append(ls, tag)
	}
	if len(s.vlans) == 0 {
		eth.EthernetType = et
	}
	payload := gopacket.Payload("0123456789abcdefghij")
	var proto uint8
	var l4 []gopacket.SerializableLayer
	switch s.l4 {
	case "tcp":
		proto = ProtoTCP
		tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: 443, Seq: 1000, Ack: 2000, SYN: true, ACK: true, Window: 512,
			Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}}}}
		l4 = []gopacket.SerializableLayer{tcp, payload}
	case "udp":
		proto = ProtoUDP
		l4 = []gopacket.SerializableLayer{&layers.UDP{SrcPort: layers.UDPPort(s.sport), DstPort: 9999}, payload}
	case "udplite":
		proto = ProtoUDPLite
		b := make([]byte, 8)
		binary.BigEndian.PutUint16(b, s.sport)
		binary.BigEndian.PutUint16(b[2:], 5060)
		l4 = []gopacket.SerializableLayer{gopacket.Payload(b), payload}
	case "sctp":
		proto = ProtoSCTP
		l4 = []gopacket.SerializableLayer{&layers.SCTP{SrcPort: layers.SCTPPort(s.sport), DstPort: 3868, VerificationTag: 7}}
	case "dccp":
		proto = ProtoDCCP
		b := make([]byte, 16)
		binary.BigEndian.PutUint16(b, s.sport)
		binary.BigEndian.PutUint16(b[2:], 5004)
		b[4] = 4
		l4 = []gopacket.SerializableLayer{gopacket.Payload(b)}
	case "esp":
		proto = ProtoESP
		l4 = []gopacket.SerializableLayer{gopacket.Payload([]byte{0, 0, 1, 0, 0, 0, 0, 1, 9, 9, 9, 9})}
	case "gre":
		proto = 47
		l4 = []gopacket.SerializableLayer{gopacket.Payload([]byte{0, 0, 0x08, 0x00})}
	case "echo":
		if s.v6 {
			proto = ProtoICMPv6
			l4 = []gopacket.SerializableLayer{&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)},
				&layers.ICMPv6Echo{Identifier: s.sport, SeqNumber: 3}, payload}
		} else {
			proto = ProtoICMP
			l4 = []gopacket.SerializableLayer{&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: s.sport, Seq: 3}, payload}
		}
	case "error":
		// The embedded packet went from dst to src; a router reports it to src.
		inner := build(t, spec{v6: s.v6, l4: s.inner, sport: 4444})[14:]
		if s.v6 {
			proto = ProtoICMPv6
			emb := append([]byte{0, 0, 0, 0}, inner[:min(len(inner), 40+8+8)]...)
			swapIP6(emb[4:])
			l4 = []gopacket.SerializableLayer{&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(1, 4)}, gopacket.Payload(emb)}
		} else {
			proto = ProtoICMP
			emb := append([]byte(nil), inner[:28]...)
			swapIP4(emb)
			l4 = []gopacket.SerializableLayer{&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4)}, gopacket.Payload(emb)}
		}
	}
	netl, ipls := ipLayers(s, src, dst, proto)
	for _, l := range l4 {
		switch l := l.(type) {
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(netl)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(netl)
		case *layers.ICMPv6:
			l.SetNetworkLayerForChecksum(netl)
		}
	}
	if s.frag == "middle" { // a non-first fragment carries only data
		l4 = []gopacket.SerializableLayer{gopacket.Payload("middle of the datagram...")}
	}
	return serialize(t, append(append(ls, ipls...), l4...)...)
}

func swapIP4(h []byte) {
	var a [4]byte
	copy(a[:], h[12:16])
	copy(h[12:16], h[16:20])
	copy(h[16:20], a[:])
}

func swapIP6(h []byte) {
	var a [16]byte
	copy(a[:], h[8:24])
	copy(h[8:24], h[24:40])
	copy(h[24:40], a[:])
}

// corpus is every combination of tags, family, extension headers,
// fragmentation and transport that the parser claims to handle.
func corpus() []spec {
	var out []spec
	sport := uint16(30000)
	for _, vl := range [][]uint16{nil, {10}, {100, 200}} {
		for _, v6 := range []bool{false, true} {
			exts := [][]uint8{nil}
			opts := []bool{false, true}
			if v6 {
				exts = [][]uint8{nil, {ProtoHopByHop}, {ProtoHopByHop, ProtoDstOpts, ProtoRouting}, {ProtoAH}, {ProtoDstOpts, ProtoAH, ProtoDstOpts}}
				opts = []bool{false}
			}
			for _, ext := range exts {
				for _, o := range opts {
					for _, l4 := range []string{"tcp", "udp", "udplite", "sctp", "dccp", "echo", "esp", "gre", "error/tcp", "error/udp", "error/echo"} {
						frags := []string{""}
						if l4 == "tcp" || l4 == "udp" {
							frags = []string{"", "first", "middle"}
						}
						for _, fr := range frags {
							sport++
							s := spec{vlans: vl, v6: v6, ext: ext, ipOpts: o, frag: fr, l4: l4, sport: sport}
							if len(l4) > 6 && l4[:6] == "error/" {
								s.l4, s.inner = "error", l4[6:]
							}
							s.name = fmt.Sprintf("vlan%v/v6=%v/ext%v/opts=%v/frag=%s/%s", vl, v6, ext, o, fr, l4)
							out = append(out, s)
						}
					}
				}
			}
		}
	}
	return out
}

func TestDecodeAgreesWithGopacket(t *testing.T) {
	var p Parsed
	n := 0
	for _, s := range corpus() {
		frame := build(t, s)
		if r := p.Decode(frame); r != OK {
			t.Errorf("%s: Decode = %v", s.name, r)
			continue
		}
		got, want := ourView(&p), gopacketView(t, frame, s)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n ours     %+v\n gopacket %+v", s.name, got, want)
			if got.Inner != nil && want.Inner != nil {
				t.Errorf(" inner ours %+v gopacket %+v", *got.Inner, *want.Inner)
			}
		}
		if p.End != uint16(len(frame)) && len(frame) > 60 || p.End > uint16(len(frame)) {
			t.Errorf("%s: End %d, frame %d", s.name, p.End, len(frame))
		}
		n++
	}
	if n < 300 {
		t.Errorf("only %d frames in the corpus", n)
	}
}

// TestEthernetPadding: a minimum-size frame carries padding after the IP
// packet; lengths come from the IP header, not the frame.
func TestEthernetPadding(t *testing.T) {
	frame := build(t, spec{l4: "udp", sport: 7})
	frame = frame[:14+20+8] // no payload
	binary.BigEndian.PutUint16(frame[14+2:], 28)
	binary.BigEndian.PutUint16(frame[14+10:], 0)
	binary.BigEndian.PutUint16(frame[14+10:], Checksum(frame[14:34]))
	binary.BigEndian.PutUint16(frame[34+4:], 8)
	frame = append(frame, make([]byte, 60-len(frame))...)
	var p Parsed
	if r := p.Decode(frame); r != OK || p.End != 42 || p.SrcPort != 7 || p.PayloadOff != 42 {
		t.Fatalf("Decode = %v, End %d, sport %d, payload at %d", r, p.End, p.SrcPort, p.PayloadOff)
	}
}

func TestMalformed(t *testing.T) {
	good4 := build(t, spec{l4: "tcp", sport: 1})
	good6 := build(t, spec{v6: true, l4: "udp", sport: 1})
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	fixsum := func(b []byte) []byte {
		ihl := int(b[14]&0xf) * 4
		binary.BigEndian.PutUint16(b[24:], 0)
		if len(b) >= 14+ihl {
			binary.BigEndian.PutUint16(b[24:], Checksum(b[14:14+ihl]))
		}
		return b
	}
	ext := func(n int) []byte { // n hop-by-hop headers, then UDP
		b := append([]byte(nil), good6[:54]...)
		b[20] = ProtoHopByHop
		for i := 0; i < n; i++ {
			next := byte(ProtoHopByHop)
			if i == n-1 {
				next = ProtoUDP
			}
			b = append(b, next, 0, 1, 4, 0, 0, 0, 0)
		}
		b = append(b, good6[54:]...)
		binary.BigEndian.PutUint16(b[18:], uint16(len(b)-54))
		return b
	}
	tests := []struct {
		name  string
		frame []byte
		want  Reason
	}{
		{"empty", nil, TruncEthernet},
		{"13 bytes", good4[:13], TruncEthernet},
		{"arp", mod(good4, func(b []byte) []byte { b[12], b[13] = 0x08, 0x06; return b }), NotIP},
		{"vlan cut", []byte{1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 0x81, 0, 0, 10}, TruncVLAN},
		{"three tags", append([]byte{1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 0x88, 0xa8, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 0x08, 0}, good4[14:]...), TooManyVLANs},
		{"ipv4 cut", good4[:30], TruncIPv4},
		{"ipv4 version 5", mod(good4, func(b []byte) []byte { b[14] = 0x55; return b }), BadIPv4Header},
		{"ipv4 ihl 4", mod(good4, func(b []byte) []byte { b[14] = 0x44; return b }), BadIPv4Header},
		{"ipv4 ihl beyond frame", mod(good4[:40], func(b []byte) []byte { b[14] = 0x4f; return b }), TruncIPv4},
		{"ipv4 total length beyond frame", mod(good4, func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 1500); return fixsum(b) }), BadIPv4Length},
		{"ipv4 total length below header", mod(good4, func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 19); return fixsum(b) }), BadIPv4Length},
		{"ipv4 bad checksum", mod(good4, func(b []byte) []byte { b[24] ^= 0xff; return b }), BadIPv4Checksum},
		{"tcp cut", mod(good4, func(b []byte) []byte {
			b = b[:14+20+10]
			binary.BigEndian.PutUint16(b[16:], 30)
			return fixsum(b)
		}), TruncTCP},
		{"tcp data offset 4", mod(good4, func(b []byte) []byte { b[34+12] = 0x40; return b }), BadTCPOffset},
		{"tcp data offset beyond packet", mod(good4, func(b []byte) []byte { b[34+12] = 0xf0; return b[:len(b)] }), BadTCPOffset},
		{"ipv6 cut", good6[:50], TruncIPv6},
		{"ipv6 version 4", mod(good6, func(b []byte) []byte { b[14] = 0x40; return b }), BadIPv6Header},
		{"ipv6 payload beyond frame", mod(good6, func(b []byte) []byte { binary.BigEndian.PutUint16(b[18:], 2000); return b }), BadIPv6Length},
		{"jumbogram", mod(good6, func(b []byte) []byte { binary.BigEndian.PutUint16(b[18:], 0); b[20] = 0; return b }), BadIPv6Length},
		{"udp cut", mod(good6, func(b []byte) []byte { binary.BigEndian.PutUint16(b[18:], 6); return b[:60] }), TruncUDP},
		{"udp length 7", mod(good6, func(b []byte) []byte { binary.BigEndian.PutUint16(b[54+4:], 7); return b }), BadUDPLength},
		{"udp length beyond packet", mod(good6, func(b []byte) []byte { binary.BigEndian.PutUint16(b[54+4:], 900); return b }), BadUDPLength},
		{"ext header cut", mod(ext(1), func(b []byte) []byte { binary.BigEndian.PutUint16(b[18:], 4); return b[:58] }), TruncExtHeader},
		{"ext header length beyond", mod(ext(1), func(b []byte) []byte { b[55] = 30; return b }), TruncExtHeader},
		{"8 ext headers ok", ext(8), OK},
		{"9 ext headers", ext(9), TooManyExtHeaders},
		{"sctp cut", mod(good6, func(b []byte) []byte { b[20] = ProtoSCTP; binary.BigEndian.PutUint16(b[18:], 3); return b[:57] }), TruncPorts},
		{"icmp cut", mod(good6, func(b []byte) []byte { b[20] = ProtoICMPv6; binary.BigEndian.PutUint16(b[18:], 7); return b[:61] }), TruncICMP},
	}
	var p Parsed
	for _, tc := range tests {
		if got := p.Decode(tc.frame); got != tc.want {
			t.Errorf("%s: Decode = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestICMPErrorInnerTruncated: an error whose embedded packet is too short
// for its ports still parses, with InnerValid false.
func TestICMPErrorInnerTruncated(t *testing.T) {
	frame := build(t, spec{l4: "error", inner: "tcp", sport: 9})
	var p Parsed
	if r := p.Decode(frame); r != OK || !p.InnerValid || !p.ICMPError {
		t.Fatalf("full: %v %v", r, p.InnerValid)
	}
	cut := append([]byte(nil), frame[:len(frame)-6]...) // 2 bytes of inner L4 left
	binary.BigEndian.PutUint16(cut[16:], uint16(len(cut)-14))
	binary.BigEndian.PutUint16(cut[24:], 0)
	binary.BigEndian.PutUint16(cut[24:], Checksum(cut[14:34]))
	if r := p.Decode(cut); r != OK || p.InnerValid || !p.ICMPError {
		t.Fatalf("cut: %v InnerValid=%v", r, p.InnerValid)
	}
}

func TestDecTTL(t *testing.T) {
	for _, s := range []spec{{l4: "tcp", sport: 1}, {l4: "udp", ipOpts: true, sport: 2}, {v6: true, l4: "udp", sport: 3}} {
		frame := build(t, s)
		var p Parsed
		if r := p.Decode(frame); r != OK {
			t.Fatal(r)
		}
		for ttl := int(p.TTL); ttl > 1; ttl-- {
			if !DecTTL(frame, &p) {
				t.Fatalf("DecTTL refused at TTL %d", ttl)
			}
			var q Parsed
			if r := q.Decode(frame); r != OK || q.TTL != uint8(ttl-1) {
				t.Fatalf("after DecTTL: %v, TTL %d, want %d", r, q.TTL, ttl-1)
			}
		}
		if DecTTL(frame, &p) {
			t.Fatal("DecTTL accepted TTL 1")
		}
	}
	// Every 16-bit checksum value, including the one's-complement corner cases.
	frame := build(t, spec{l4: "udp", sport: 1})
	for id := 0; id < 65536; id++ {
		binary.BigEndian.PutUint16(frame[18:], uint16(id))
		frame[22] = 64
		binary.BigEndian.PutUint16(frame[24:], 0)
		binary.BigEndian.PutUint16(frame[24:], Checksum(frame[14:34]))
		var p Parsed
		p.Decode(frame)
		DecTTL(frame, &p)
		if Checksum(frame[14:34]) != 0 {
			t.Fatalf("id %#x: checksum does not verify after DecTTL", id)
		}
	}
}

func TestSetMACs(t *testing.T) {
	frame := build(t, spec{l4: "udp", sport: 1})
	d, s := [6]byte{1, 2, 3, 4, 5, 6}, [6]byte{7, 8, 9, 10, 11, 12}
	SetMACs(frame, &d, &s)
	if [6]byte(frame[0:6]) != d || [6]byte(frame[6:12]) != s {
		t.Fatalf("MACs %x", frame[:12])
	}
}

func TestDecodeAllocs(t *testing.T) {
	frames := [][]byte{build(t, spec{vlans: []uint16{5}, l4: "tcp", sport: 1}), build(t, spec{v6: true, ext: []uint8{ProtoHopByHop}, l4: "error", inner: "udp", sport: 1})}
	var p Parsed
	if n := testing.AllocsPerRun(100, func() {
		for _, f := range frames {
			p.Decode(f)
		}
	}); n != 0 {
		t.Fatalf("Decode allocates %v times", n)
	}
}

func TestReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for r := Reason(0); r < NumReasons; r++ {
		n := r.String()
		if n == "" || seen[n] {
			t.Errorf("reason %d has name %q", r, n)
		}
		seen[n] = true
	}
}

// FuzzDecode: any input decodes without panic, and an OK result has
// consistent offsets inside the frame; DecTTL keeps an IPv4 header valid.
// DecodeCaptured agrees with Decode on the whole frame and, on every
// prefix of the first 128 bytes (a capture's short snap length), gives the
// same headers or a truncation (checkCaptured).
func FuzzDecode(f *testing.F) {
	for _, s := range corpus()[:60] {
		f.Add(buildF(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var p Parsed
		r := p.Decode(frame)
		if r >= NumReasons {
			t.Fatalf("reason %d out of range", r)
		}
		checkCaptured(t, frame, &p, r, 128)
		if r != OK {
			return
		}
		if int(p.End) > len(frame) || p.L3Off >= p.End {
			t.Fatalf("L3 %d End %d frame %d", p.L3Off, p.End, len(frame))
		}
		if p.L4Off != 0 && (p.L4Off <= p.L3Off || p.L4Off > p.End) {
			t.Fatalf("L4 %d outside [%d, %d]", p.L4Off, p.L3Off, p.End)
		}
		if p.PayloadOff != 0 && (p.PayloadOff < p.L4Off || p.PayloadOff > p.End) {
			t.Fatalf("payload %d outside [%d, %d]", p.PayloadOff, p.L4Off, p.End)
		}
		if p.Family != 4 && p.Family != 6 {
			t.Fatalf("family %d", p.Family)
		}
		if p.Fragment && p.FragOffset != 0 && (p.HasPorts || p.L4Off != 0) {
			t.Fatal("non-first fragment with a transport header")
		}
		if DecTTL(frame, &p) && p.Family == IPv4 {
			ihl := int(frame[p.L3Off]&0xf) * 4
			if Checksum(frame[p.L3Off:int(p.L3Off)+ihl]) != 0 {
				t.Fatal("DecTTL broke the IPv4 header checksum")
			}
		}
	})
}

// buildF builds a corpus frame outside a test (fuzz seeding).
func buildF(s spec) []byte {
	var t testing.T
	return build(&t, s)
}

var benchFrames = func() [][]byte {
	var t testing.T
	return [][]byte{
		build(&t, spec{l4: "tcp", sport: 1}),
		build(&t, spec{l4: "udp", sport: 2}),
		build(&t, spec{v6: true, l4: "tcp", sport: 3}),
		build(&t, spec{vlans: []uint16{7}, l4: "udp", sport: 4}),
	}
}()

func BenchmarkDecode(b *testing.B) {
	var p Parsed
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		p.Decode(benchFrames[i&3])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pps")
}

// BenchmarkGopacketDecodingLayerParser is gopacket's fastest decoding path
// on the same frames, for comparison.
func BenchmarkGopacketDecodingLayerParser(b *testing.B) {
	var (
		eth  layers.Ethernet
		dot  layers.Dot1Q
		ip4  layers.IPv4
		ip6  layers.IPv6
		tcp  layers.TCP
		udp  layers.UDP
		pl   gopacket.Payload
		dec  []gopacket.LayerType
		pars = gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &eth, &dot, &ip4, &ip6, &tcp, &udp, &pl)
	)
	pars.IgnoreUnsupported = true
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = pars.DecodeLayers(benchFrames[i&3], &dec)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pps")
}
