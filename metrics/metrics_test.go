package metrics

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	xnode "github.com/xdpcluster/xdpcluster/node"
	"github.com/xdpcluster/xdpcluster/node/gateway"
	"github.com/xdpcluster/xdpcluster/packet"
)

// modePort is a port that only says its mode.
type modePort struct {
	dataplane.Port
	mode string
}

func (p modePort) Mode() string { return p.mode }

// TestWorkerPath: the workers' counters are labelled by the kind of the
// interface's ports, whatever the AF_XDP mode.
func TestWorkerPath(t *testing.T) {
	for _, tc := range []struct{ mode, want string }{
		{"afxdp copy", PathAFXDP},
		{"afxdp zero-copy", PathAFXDP},
		{"afpacket", PathAFPacket},
	} {
		if got := workerPath(dataplane.Iface{Ports: []dataplane.Port{modePort{mode: tc.mode}}}); got != tc.want {
			t.Errorf("port mode %q: path %q, want %q", tc.mode, got, tc.want)
		}
	}
}

// udp4 is an IPv4 UDP frame to dst (valid checksums).
func udp4(dst net.HardwareAddr) []byte {
	f := make([]byte, 14+20+8+4)
	copy(f, dst)
	copy(f[6:], []byte{2, 0, 0, 0, 0, 0x42})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], 20+8+4)
	copy(ip[12:], []byte{192, 0, 2, 1})
	copy(ip[16:], []byte{198, 51, 100, 1})
	binary.BigEndian.PutUint16(ip[10:], packet.Checksum(ip))
	binary.BigEndian.PutUint16(f[34:], 4000)
	binary.BigEndian.PutUint16(f[36:], 53)
	binary.BigEndian.PutUint16(f[38:], 8+4) // UDP checksum 0: none
	return f
}

// TestPathLabel: a real gateway's xdpcluster_packets_total, bytes_total
// and owner_packets_total carry path="afxdp" with AF_XDP sockets and
// path="afpacket" with raw sockets, every series of the three families
// has one of the two, the frames played into the interface are counted
// under it, and the registry accepts the collector (no duplicate series,
// labels as described).
func TestPathLabel(t *testing.T) {
	nstest.Require(t)
	mac := net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}
	for _, tc := range []struct {
		io   dataplane.IO
		path string
	}{
		{dataplane.IOAFXDP, PathAFXDP},
		{dataplane.IOAFPacket, PathAFPacket},
	} {
		t.Run(string(tc.io), func(t *testing.T) {
			ns := nstest.Veth(t, "xc-mpath", "dpa", "dpb")
			var g *gateway.Gateway
			if err := ns.Do(func() (err error) {
				g, err = gateway.Start(gateway.Config{Interfaces: []xnode.Interface{{Name: "dpa", ClusterMAC: mac}},
					Match: cluster.LocalNode(2, 1, 1), IO: tc.io})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { g.Close() })
			reg := prometheus.NewPedanticRegistry()
			if err := reg.Register(New(g, "test")); err != nil {
				t.Fatal(err)
			}
			in := nstest.NewInjector(t, ns, "dpb")
			const sent = 5
			for i := 0; i < sent; i++ {
				in.Send(udp4(mac))
			}
			var counted float64
			deadline := time.Now().Add(5 * time.Second)
			for {
				fams, err := reg.Gather()
				if err != nil {
					t.Fatalf("gather: %v", err)
				}
				counted = 0
				seen := map[string]int{}
				for _, f := range fams {
					name := f.GetName()
					if name != "xdpcluster_packets_total" && name != "xdpcluster_bytes_total" && name != "xdpcluster_owner_packets_total" {
						continue
					}
					for _, mt := range f.GetMetric() {
						seen[name]++
						p := "<none>"
						for _, l := range mt.GetLabel() {
							if l.GetName() == "path" {
								p = l.GetValue()
							}
						}
						if p != tc.path {
							t.Fatalf("%s%v: path %q, want %q", name, mt.GetLabel(), p, tc.path)
						}
						if name == "xdpcluster_packets_total" {
							counted += mt.GetCounter().GetValue()
						}
					}
				}
				if seen["xdpcluster_packets_total"] != int(dataplane.NumVerdicts) || seen["xdpcluster_bytes_total"] != int(dataplane.NumVerdicts) ||
					seen["xdpcluster_owner_packets_total"] != 2 {
					t.Fatalf("series per family %v, want %d, %d, 2", seen, dataplane.NumVerdicts, dataplane.NumVerdicts)
				}
				if counted >= sent || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if counted < sent {
				t.Errorf("packets_total{path=%q} sums to %v after %d frames", tc.path, counted, sent)
			}
		})
	}
}
