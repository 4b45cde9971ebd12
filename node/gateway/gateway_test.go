package gateway_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/dataplane/xsk"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	xnode "github.com/xdpcluster/xdpcluster/node"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

// TestBackendChoice: "auto" falls back to raw sockets when AF_XDP cannot
// be set up (here: impossible ring options), "afxdp" then fails with the
// reason, and a bad io name is refused.
func TestBackendChoice(t *testing.T) {
	ns := nstest.New(t, "xc-backend")
	nstest.Run(t, ns, "ip", "link", "add", "dpa", "type", "veth", "peer", "name", "dpb")
	nstest.Run(t, ns, "ip", "link", "set", "dpa", "up")
	nstest.Run(t, ns, "ip", "link", "set", "dpb", "up")
	mac := net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}
	bad := xsk.PortOptions{NumFrames: 1000, FrameSize: 2048, RingSize: 256}
	start := func(backend string) (*gateway.Gateway, error) {
		var g *gateway.Gateway
		err := ns.Do(func() (err error) {
			g, err = gateway.Start(gateway.Config{
				Interfaces: []xnode.Interface{{Name: "dpa", ClusterMAC: mac}},
				Match:      cluster.LocalNode(2, 1, 1), IO: backend, Port: bad,
			})
			return err
		})
		return g, err
	}
	g, err := start("auto")
	if err != nil {
		t.Fatalf("auto: %v", err)
	}
	if len(g.Modes) != 1 || !strings.HasPrefix(g.Modes[0], "afpacket") {
		t.Errorf("auto chose %v, want the raw-socket fallback", g.Modes)
	}
	g.Close()
	if _, err := start("afxdp"); err == nil || !strings.Contains(err.Error(), "num_frames 1000: must be a power of two") {
		t.Errorf("afxdp with bad options: %v", err)
	}
	if _, err := start("dpdk"); err == nil || !strings.Contains(err.Error(), `io "dpdk"`) {
		t.Errorf("unknown io: %v", err)
	}
}

// TestFollowsKernelChanges: a neighbour change in the kernel flushes the
// workers' route caches.
func TestFollowsKernelChanges(t *testing.T) {
	ns := nstest.New(t, "xc-follow")
	nstest.Run(t, ns, "ip", "link", "add", "dpa", "type", "veth", "peer", "name", "dpb")
	nstest.Run(t, ns, "ip", "link", "set", "dpa", "up")
	nstest.Run(t, ns, "ip", "link", "set", "dpb", "up")
	var g *gateway.Gateway
	if err := ns.Do(func() (err error) {
		g, err = gateway.Start(gateway.Config{Interfaces: []xnode.Interface{{Name: "dpa", ClusterMAC: net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}}},
			Match: cluster.LocalNode(2, 1, 1), IO: "afpacket"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	before := g.DP.RouteGeneration()
	nstest.Run(t, ns, "ip", "neigh", "add", "192.0.2.9", "lladdr", "02:00:00:00:00:09", "dev", "dpa", "nud", "permanent")
	deadline := time.Now().Add(3 * time.Second)
	for g.DP.RouteGeneration() == before {
		if time.Now().After(deadline) {
			t.Fatal("a neighbour change did not flush the route caches")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
