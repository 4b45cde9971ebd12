package gateway_test

import (
	"net"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/bench"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// benchForward measures, roughly, how many packets per second one node
// forwards: a one-node cluster (it owns everything), a generator in the
// client namespace blasting 64-byte UDP frames from 64 sources (live-frames
// XDP_TX, bench.Generator) for two seconds. Both share this machine's two
// cores with the node. The end-to-end harness of the
// benchmarks issue measures this properly, side by side with the kernel.
func benchForward(b *testing.B, backend string, fast dataplane.FastPath) {
	cl := nstest.Cluster(b, "xc-bench", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1, StaticNeighbours: true})
	gw := startMixed(b, cl, 0, backend, fast, bpfutil.ModeNative)[0].gw // the driver path, as on a NIC

	// The generator: live-frames XDP_TX out of the client's interface.
	nstest.Run(b, cl.Switch, "ethtool", "-K", "swc", "gro", "on") // the veth peer must run NAPI
	var gen *bench.Generator
	err := cl.Client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		gen, err = bench.NewGenerator(ifi.Index)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	defer gen.Close()
	srcMAC := nstest.MAC(b, cl.Client, "eth0")
	var frames [][]byte
	for i := 0; i < 64; i++ {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IP{198, 51, 100, byte(10 + i)}, DstIP: cl.Server4.AsSlice()}
		udp := &layers.UDP{SrcPort: layers.UDPPort(1000 + i), DstPort: 9}
		udp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			&layers.Ethernet{SrcMAC: srcMAC, DstMAC: cl.FrontMAC, EthernetType: layers.EthernetTypeIPv4}, ip, udp, gopacket.Payload(make([]byte, 18)))
		frames = append(frames, append([]byte(nil), buf.Bytes()...))
	}
	before, _, _ := gw.Dataplane().Totals(-1)
	fast0 := fastTotals(b, gw)
	const repeat = 2048
	start := time.Now()
	var sent uint64
	err = cl.Client.Do(func() error {
		for i := 0; time.Since(start) < 2*time.Second; i++ {
			if err := gen.Send(frames[i%len(frames)], repeat); err != nil {
				return err
			}
			sent += repeat
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	time.Sleep(100 * time.Millisecond)
	after, _, _ := gw.Dataplane().Totals(-1)
	fwd := after[dataplane.Forwarded] - before[dataplane.Forwarded] + fastTotals(b, gw).Forwarded - fast0.Forwarded
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "offered_pps")
	b.ReportMetric(float64(fwd)/elapsed.Seconds(), "forwarded_pps")
	b.ReportMetric(float64(after[dataplane.TxFull]-before[dataplane.TxFull]), "tx_full")
}

func BenchmarkForwardAFXDP(b *testing.B) {
	for _, fp := range fastPaths {
		b.Run("fast_path="+string(fp), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchForward(b, "afxdp", fp)
			}
		})
	}
}

func BenchmarkForwardAFPacket(b *testing.B) {
	for i := 0; i < b.N; i++ {
		benchForward(b, "afpacket", "")
	}
}
