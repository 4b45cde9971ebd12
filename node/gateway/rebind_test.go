package gateway_test

import (
	"net"
	"testing"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	xnode "github.com/xdpcluster/xdpcluster/node"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

// TestRestartRebinds: a gateway can be started again on the same
// interfaces right after Close (the AF_XDP queues are released).
func TestRestartRebinds(t *testing.T) {
	ns := nstest.Veth(t, "xc-rebind", "dpa", "dpb")
	for i := 0; i < 3; i++ {
		var g *gateway.Gateway
		if err := ns.Do(func() (err error) {
			g, err = gateway.Start(gateway.Config{Interfaces: []xnode.Interface{{Name: "dpa", ClusterMAC: net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}}},
				Match: cluster.LocalNode(2, 1, 1), IO: "afxdp"})
			return err
		}); err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
		if err := g.Close(); err != nil {
			t.Fatalf("close %d: %v", i+1, err)
		}
	}
}
