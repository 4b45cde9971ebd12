package metrics

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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

// testMAC is the cluster MAC of gatewayRegistry's gateway.
var testMAC = net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}

// gatewayRegistry starts a gateway (node 1 of 2) with io and queues (0:
// every RX queue of the interface) on dpa of a new veth pair named after prefix, registers
// its collector in a pedantic registry and plays frames UDP frames into
// dpa from dpb.
func gatewayRegistry(t *testing.T, prefix string, io dataplane.IO, queues, frames int) *prometheus.Registry {
	t.Helper()
	ns := nstest.Veth(t, prefix, "dpa", "dpb")
	var g *gateway.Gateway
	if err := ns.Do(func() (err error) {
		g, err = gateway.Start(gateway.Config{Interfaces: []xnode.Interface{{Name: "dpa", ClusterMAC: testMAC}},
			Match: cluster.LocalNode(2, 1, 1), IO: io, Queues: queues})
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
	for i := 0; i < frames; i++ {
		in.Send(udp4(testMAC))
	}
	return reg
}

// TestPathLabel: a real gateway's xdpcluster_packets_total, bytes_total
// and owner_packets_total carry path="afxdp" with AF_XDP sockets and
// path="afpacket" with raw sockets, every series of the three families
// has one of the two, the frames played into the interface are counted
// under it, and the registry accepts the collector (no duplicate series,
// labels as described).
func TestPathLabel(t *testing.T) {
	nstest.Require(t)
	for _, tc := range []struct {
		io   dataplane.IO
		path string
	}{
		{dataplane.IOAFXDP, PathAFXDP},
		{dataplane.IOAFPacket, PathAFPacket},
	} {
		t.Run(string(tc.io), func(t *testing.T) {
			const sent = 5
			reg := gatewayRegistry(t, "xc-mpath", tc.io, 0, sent)
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

// TestBatchHistogram: the batch_size histogram's sum is the frames
// received, not the buckets' upper bounds, its buckets are cumulative and
// its count is their total.
func TestBatchHistogram(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sizes   [8]uint64
		frames  uint64
		count   uint64
		sum     float64
		buckets map[float64]uint64
	}{
		{"none", [8]uint64{}, 0, 0, 0, map[float64]uint64{1: 0, 2: 0, 4: 0, 8: 0, 16: 0, 32: 0, 64: 0}},
		// Three batches of 3, 5 and 33 frames: upper bounds would say 4+8+64.
		{"uneven", [8]uint64{2: 1, 3: 1, 6: 1}, 3 + 5 + 33, 3, 41, map[float64]uint64{1: 0, 2: 0, 4: 1, 8: 2, 16: 2, 32: 2, 64: 3}},
		{"singles", [8]uint64{0: 10}, 10, 10, 10, map[float64]uint64{1: 10, 2: 10, 4: 10, 8: 10, 16: 10, 32: 10, 64: 10}},
		// The last bucket holds batches above 64 (none with batch_size
		// at most 64): only in +Inf, the count.
		{"overflow", [8]uint64{6: 1, 7: 1}, 64 + 100, 2, 164, map[float64]uint64{1: 0, 2: 0, 4: 0, 8: 0, 16: 0, 32: 0, 64: 1}},
	} {
		count, sum, buckets := batchHistogram(tc.sizes, tc.frames)
		if count != tc.count || sum != tc.sum {
			t.Errorf("%s: count %d, sum %v; want %d, %v", tc.name, count, sum, tc.count, tc.sum)
		}
		if len(buckets) != len(tc.buckets) {
			t.Errorf("%s: buckets %v, want %v", tc.name, buckets, tc.buckets)
		}
		for le, want := range tc.buckets {
			if buckets[le] != want {
				t.Errorf("%s: bucket le=%v %d, want %d", tc.name, le, buckets[le], want)
			}
		}
	}
}

// labelsOf returns a series' labels as a map.
func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// TestGatewayLabels: a real gateway's ring events carry interface and
// queue (one series per event for each of the interface's queues),
// interface_info its structured mode, and batch_size's sum is exactly
// the frames the workers received (packets_total of their path, not
// the XDP fast path's), with
// AF_XDP and raw sockets.
func TestGatewayLabels(t *testing.T) {
	nstest.Require(t)
	for _, tc := range []struct {
		io   dataplane.IO
		info map[string]string // interface_info's labels but xdp_mode and copy when "*"
	}{
		{dataplane.IOAFXDP, map[string]string{"interface": "dpa", "role": "gateway", "io": "afxdp", "queues": "1", "xdp_mode": "*", "copy": "*"}},
		{dataplane.IOAFPacket, map[string]string{"interface": "dpa", "role": "gateway", "io": "afpacket", "queues": "1", "xdp_mode": "none", "copy": "copy"}},
	} {
		t.Run(string(tc.io), func(t *testing.T) {
			const sent = 7
			reg := gatewayRegistry(t, "xc-mlabel", tc.io, 1, sent)
			// Gather until packets_total has the frames and two scrapes
			// agree (nothing else in flight).
			var fams map[string]*dto.MetricFamily
			var pkts, prev float64 = 0, -1
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				got, err := reg.Gather()
				if err != nil {
					t.Fatalf("gather: %v", err)
				}
				fams = map[string]*dto.MetricFamily{}
				for _, f := range got {
					fams[f.GetName()] = f
				}
				pkts = 0
				for _, m := range fams["xdpcluster_packets_total"].GetMetric() {
					if labelsOf(m)["path"] != PathXDP { // the workers' frames
						pkts += m.GetCounter().GetValue()
					}
				}
				if (pkts >= sent && pkts == prev) || time.Now().After(deadline) {
					break
				}
				prev = pkts
			}
			if pkts < sent {
				t.Fatalf("packets_total %v after %d frames", pkts, sent)
			}
			h := fams["xdpcluster_batch_size"].GetMetric()
			if len(h) != 1 || h[0].GetHistogram().GetSampleSum() != pkts {
				t.Errorf("batch_size %v: want one series whose sum is the %v frames received", h, pkts)
			} else if c := h[0].GetHistogram().GetSampleCount(); c == 0 || c > uint64(pkts) {
				t.Errorf("batch_size count %d for %v frames", c, pkts)
			}
			events := map[string]bool{}
			for _, m := range fams["xdpcluster_ring_events_total"].GetMetric() {
				l := labelsOf(m)
				if len(l) != 3 || l["interface"] != "dpa" || l["queue"] != "0" || l["event"] == "" {
					t.Errorf("ring_events_total labels %v, want interface=dpa, queue=0, event", l)
				}
				events[l["event"]] = true
			}
			if len(events) != 6 {
				t.Errorf("ring events %v, want 6", events)
			}
			info := fams["xdpcluster_interface_info"].GetMetric()
			if len(info) != 1 {
				t.Fatalf("interface_info %v: want one series", info)
			}
			l := labelsOf(info[0])
			if len(l) != len(tc.info) {
				t.Errorf("interface_info labels %v, want %v", l, tc.info)
			}
			for k, want := range tc.info {
				switch {
				case want != "*" && l[k] != want:
					t.Errorf("interface_info %s=%q, want %q", k, l[k], want)
				case k == "xdp_mode" && want == "*" && l[k] != "native" && l[k] != "generic":
					t.Errorf("interface_info xdp_mode=%q, want native or generic", l[k])
				case k == "copy" && want == "*" && l[k] != "copy" && l[k] != "zerocopy":
					t.Errorf("interface_info copy=%q, want copy or zerocopy", l[k])
				}
			}
		})
	}
}
