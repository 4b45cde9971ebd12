package gateway_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/bench"
	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/dataplane/xsk"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	xnode "github.com/xdpcluster/xdpcluster/node"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

// benchDirect: gen -- dut -- sink over plain veths (no bridge), the dut
// one node of a 2-node cluster (it owns about half the 64 sources), the
// generator live-frames XDP_TX. Rough: generator and dut share 2 cores.
func benchDirect(b *testing.B, backend string) {
	nstest.Require(b)
	gen, dut, sink := nstest.New(b, "xc-gen"), nstest.New(b, "xc-dut"), nstest.New(b, "xc-sink")
	nstest.Run(b, gen, "ip", "link", "add", "g0", "type", "veth", "peer", "name", "in0", "netns", dut.Name)
	nstest.Run(b, dut, "ip", "link", "add", "out0", "type", "veth", "peer", "name", "s0", "netns", sink.Name)
	for _, c := range []struct {
		ns interface {
			Run(string, ...string) ([]byte, error)
		}
		args []string
	}{
		{gen, []string{"ip", "link", "set", "g0", "up"}},
		{dut, []string{"ip", "link", "set", "in0", "up"}},
		{dut, []string{"ip", "link", "set", "out0", "up"}},
		{sink, []string{"ip", "link", "set", "s0", "up"}},
		{dut, []string{"ip", "addr", "add", "198.51.100.1/24", "dev", "in0"}},
		{dut, []string{"ip", "addr", "add", "203.0.113.1/24", "dev", "out0"}},
		{sink, []string{"ip", "addr", "add", "203.0.113.80/24", "dev", "s0"}},
	} {
		if _, err := c.ns.Run(c.args[0], c.args[1:]...); err != nil {
			b.Fatal(err)
		}
	}
	sinkMAC := nstest.MAC(b, sink, "s0")
	nstest.Run(b, dut, "ip", "neigh", "replace", "203.0.113.80", "lladdr", sinkMAC.String(), "dev", "out0", "nud", "permanent")
	clusterMAC := net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}
	match := cluster.LocalNode(2, 1, 0xdeadbeef)
	var gw *gateway.Gateway
	if err := dut.Do(func() (err error) {
		gw, err = gateway.Start(gateway.Config{
			Interfaces: []xnode.Interface{{Name: "in0", ClusterMAC: clusterMAC}, {Name: "out0", ClusterMAC: net.HardwareAddr{1, 0, 0x5e, 0, 1, 2}}},
			Match:      match, IO: dataplane.IO(backend), Port: xsk.PortOptions{NumFrames: 8192, FrameSize: 2048, RingSize: 4096},
		})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer gw.Close()
	var g *bench.Generator
	if err := gen.Do(func() error {
		ifi, err := net.InterfaceByName("g0")
		if err != nil {
			return err
		}
		g, err = bench.NewGenerator(ifi.Index)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	if backend == "afpacket" {
		nstest.Run(b, dut, "ethtool", "-K", "in0", "gro", "on") // veth NAPI for XDP_TX frames
	}
	genMAC := nstest.MAC(b, gen, "g0")
	var frames [][]byte
	owned := 0
	for i := 0; i < 64; i++ {
		src := net.IP{198, 51, 100, byte(10 + i)}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src, DstIP: net.IP{203, 0, 113, 80}}
		udp := &layers.UDP{SrcPort: layers.UDPPort(1000 + i), DstPort: 9}
		udp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			&layers.Ethernet{SrcMAC: genMAC, DstMAC: clusterMAC, EthernetType: layers.EthernetTypeIPv4}, ip, udp, gopacket.Payload(make([]byte, 18)))
		frames = append(frames, append([]byte(nil), buf.Bytes()...))
		if match.Owns(netipOf(src)) {
			owned++
		}
	}
	before, _, _ := gw.Dataplane().Totals(-1)
	const repeat = 4096
	var sent uint64
	start := time.Now()
	if err := gen.Do(func() error {
		for i := 0; time.Since(start) < 2*time.Second; i++ {
			if err := g.Send(frames[i%len(frames)], repeat); err != nil {
				return err
			}
			sent += repeat
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	time.Sleep(100 * time.Millisecond)
	after, _, _ := gw.Dataplane().Totals(-1)
	var in uint64
	for v := range after {
		in += after[v] - before[v]
	}
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "offered_pps")
	b.ReportMetric(float64(in)/elapsed.Seconds(), "received_pps")
	b.ReportMetric(float64(after[dataplane.Forwarded]-before[dataplane.Forwarded])/elapsed.Seconds(), "forwarded_pps")
	b.ReportMetric(float64(owned)/64, "owned_share")
}

func BenchmarkDirectAFXDP(b *testing.B) {
	for i := 0; i < b.N; i++ {
		benchDirect(b, "afxdp")
	}
}

func BenchmarkDirectAFPacket(b *testing.B) {
	for i := 0; i < b.N; i++ {
		benchDirect(b, "afpacket")
	}
}

func netipOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}
