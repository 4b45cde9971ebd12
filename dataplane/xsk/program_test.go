package xsk

import (
	"github.com/cilium/ebpf"
	"net"
	"os"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var clusterMAC = net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x01, 0x01}

func needRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading XDP programs needs root (CAP_BPF, CAP_NET_ADMIN); run the tests as root")
	}
}

func frame(t *testing.T, dst net.HardwareAddr, tags []layers.EthernetType, l3 layers.EthernetType) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: dst, EthernetType: l3}
	ls := []gopacket.SerializableLayer{eth}
	if len(tags) > 0 {
		eth.EthernetType = tags[0]
		for i := range tags {
			next := l3
			if i+1 < len(tags) {
				next = layers.EthernetTypeDot1Q
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(10 + i), Type: next})
		}
	}
	switch l3 {
	case layers.EthernetTypeIPv4:
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IP{198, 51, 100, 1}, DstIP: net.IP{203, 0, 113, 1}}
		ls = append(ls, ip, &layers.UDP{SrcPort: 1, DstPort: 2})
	case layers.EthernetTypeIPv6:
		ls = append(ls, &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolNoNextHeader, SrcIP: net.ParseIP("2001:db8::1"), DstIP: net.ParseIP("2001:db8::2")})
	case layers.EthernetTypeARP:
		ls = append(ls, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: 1, SourceHwAddress: []byte{2, 0, 0, 0, 0, 1}, SourceProtAddress: []byte{1, 2, 3, 4}, DstHwAddress: make([]byte, 6), DstProtAddress: []byte{1, 2, 3, 5}})
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, append(ls, gopacket.Payload("xdpcluster"))...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestProgramVerdicts runs the compiled program on crafted frames with
// BPF_PROG_TEST_RUN: cluster-MAC IP frames are counted for the AF_XDP
// socket (and, with no socket registered, passed to the kernel), the rest
// passed.
func TestProgramVerdicts(t *testing.T) {
	needRoot(t)
	p, err := NewProgram(clusterMAC, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	own := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	other := net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x01, 0x02}
	q := layers.EthernetTypeQinQ
	v := layers.EthernetTypeDot1Q
	tests := []struct {
		name  string
		frame []byte
		toXSK bool
	}{
		{"ipv4 to cluster MAC", frame(t, clusterMAC, nil, layers.EthernetTypeIPv4), true},
		{"ipv6 to cluster MAC", frame(t, clusterMAC, nil, layers.EthernetTypeIPv6), true},
		{"802.1Q ipv4", frame(t, clusterMAC, []layers.EthernetType{v}, layers.EthernetTypeIPv4), true},
		{"QinQ ipv6", frame(t, clusterMAC, []layers.EthernetType{q, v}, layers.EthernetTypeIPv6), true},
		{"arp to cluster MAC", frame(t, clusterMAC, nil, layers.EthernetTypeARP), false},
		{"ipv4 to own MAC", frame(t, own, nil, layers.EthernetTypeIPv4), false},
		{"ipv4 to another cluster MAC", frame(t, other, nil, layers.EthernetTypeIPv4), false},
		{"broadcast arp", frame(t, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, nil, layers.EthernetTypeARP), false},
		{"14 bytes of cluster MAC, LLDP", append(append([]byte(nil), clusterMAC...), 2, 0, 0, 0, 0, 1, 0x88, 0xcc), false},
		{"14 bytes of cluster MAC, no IP", append(append([]byte(nil), clusterMAC...), 2, 0, 0, 0, 0, 1, 0x08, 0x00), true},
		{"vlan tag cut short", frame(t, clusterMAC, []layers.EthernetType{v}, layers.EthernetTypeIPv4)[:16], false},
	}
	for _, tc := range tests {
		before, _ := p.Stats()
		ret, err := p.Prog.Run(&ebpf.RunOptions{Data: tc.frame})
		if err != nil {
			t.Fatalf("%s: run: %v", tc.name, err)
		}
		after, _ := p.Stats()
		if ret != xdpPass {
			t.Errorf("%s: verdict %d, want XDP_PASS (no socket registered)", tc.name, ret)
		}
		gotXSK := after[StatToXSK]-before[StatToXSK] == 1 && after[StatNoSocket]-before[StatNoSocket] == 1
		gotPass := after[StatPassed]-before[StatPassed] == 1
		if gotXSK != tc.toXSK || gotPass == tc.toXSK {
			t.Errorf("%s: counters %v -> %v, want to_xsk=%v", tc.name, before, after, tc.toXSK)
		}
	}
}
