package backend_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/bench"
	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/node/backend"
)

// BenchmarkBackendVsDrop: back-end decisions per second against the
// XDP_DROP ceiling on the same veth path, in the same run, native and
// generic. A live-frames generator sends 64-byte UDP from 64 sources to
// the cluster MAC; the dut owns about half (2 nodes).
func BenchmarkBackendVsDrop(b *testing.B) {
	nstest.Require(b)
	gen, dut := nstest.New(b, "xc-begen"), nstest.New(b, "xc-bedut")
	nstest.Run(b, gen, "ip", "link", "add", "g0", "type", "veth", "peer", "name", "in0", "netns", dut.Name)
	nstest.Run(b, gen, "ip", "link", "set", "g0", "up")
	nstest.Run(b, dut, "ip", "link", "set", "in0", "up")
	nstest.Run(b, dut, "ip", "addr", "add", "198.51.100.2/24", "dev", "in0")
	clusterMAC := net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}
	var g *bench.Generator
	var ifindex int
	gen.Do(func() (err error) {
		ifi, _ := net.InterfaceByName("g0")
		g, err = bench.NewGenerator(ifi.Index)
		return err
	})
	defer g.Close()
	dut.Do(func() error { ifi, _ := net.InterfaceByName("in0"); ifindex = ifi.Index; return nil })
	nstest.Run(b, dut, "ethtool", "-K", "in0", "gro", "on") // NAPI for XDP_TX frames when only generic XDP is attached
	src := nstest.MAC(b, gen, "g0")
	m := cluster.LocalNode(2, 1, 0xdeadbeef)
	mixed, foreign := framesFor(src, clusterMAC, m, false), framesFor(src, clusterMAC, m, true)
	frames := mixed
	// blast sends for 2 s and returns the offered rate.
	blast := func() float64 {
		start := time.Now()
		var sent uint64
		gen.Do(func() error {
			for i := 0; time.Since(start) < 2*time.Second; i++ {
				if err := g.Send(frames[i%len(frames)], 4096); err != nil {
					return err
				}
				sent += 4096
			}
			return nil
		})
		return float64(sent) / time.Since(start).Seconds()
	}
	for _, mode := range []bpfutil.AttachMode{bpfutil.ModeNative, bpfutil.ModeGeneric} {
		frames = mixed
		// The ceiling: count and drop.
		d, err := bench.NewDropCounter()
		if err != nil {
			b.Fatal(err)
		}
		var l link.Link
		if err := dut.Do(func() (err error) {
			_, l, err = bpfutil.Attach(d.Prog, ifindex, mode)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		offered := blast()
		ceiling := float64(d.Count()) / time.Since(start).Seconds()
		l.Close()
		d.Close()
		b.ReportMetric(offered, mode.String()+"_offered_pps")
		b.ReportMetric(ceiling, mode.String()+"_xdp_drop_pps")
		// Our back-end program: all foreign (the decision alone, dropped),
		// then half owned (those go up the stack on the same cores).
		for _, traffic := range []struct {
			name   string
			frames [][]byte
		}{{"foreign", foreign}, {"half_owned", mixed}} {
			frames = traffic.frames
			var p *backend.Program
			if err := dut.Do(func() (err error) {
				if p, err = backend.NewProgram(clusterMAC, nstest.MAC(b, dut, "in0"), m); err != nil {
					return err
				}
				_, err = p.Attach(ifindex, mode)
				return err
			}); err != nil {
				b.Fatal(err)
			}
			start = time.Now()
			blast()
			st, _ := p.Stats()
			decided := float64(st[backend.StatOwned]+st[backend.StatForeign]) / time.Since(start).Seconds()
			p.Close()
			b.ReportMetric(decided, mode.String()+"_backend_"+traffic.name+"_pps")
			b.ReportMetric(100*decided/ceiling, mode.String()+"_backend_"+traffic.name+"_pct_of_ceiling")
		}
	}
}

// framesFor builds 64 frames from sources the dut owns about half of, or
// (foreignOnly) none of.
func framesFor(src, clusterMAC net.HardwareAddr, m cluster.Match, foreignOnly bool) [][]byte {
	var frames [][]byte
	for i := 0; len(frames) < 64; i++ {
		a := net.IP{198, 51, byte(100 + i/250), byte(10 + i%250)}
		if foreignOnly && m.Owns(netipOf(a)) {
			continue
		}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: a, DstIP: net.IP{198, 51, 100, 1}}
		buf := gopacket.NewSerializeBuffer()
		gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true},
			&layers.Ethernet{SrcMAC: src, DstMAC: clusterMAC, EthernetType: layers.EthernetTypeIPv4}, ip, &layers.UDP{SrcPort: 1000, DstPort: 9}, gopacket.Payload(make([]byte, 18)))
		frames = append(frames, append([]byte(nil), buf.Bytes()...))
	}
	return frames
}

func netipOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}
