package gateway_test

import (
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

// TestGatewayXDPMode: Config.XDPMode reaches the kernel (the attach mode
// netlink reports) and the gateway's Modes; Modes and Programs hand out
// copies, so a caller cannot change what the gateway reports.
func TestGatewayXDPMode(t *testing.T) {
	ns := nstest.New(t, "xc-xdpmode")
	nstest.Run(t, ns, "ip", "link", "add", "dpa", "type", "veth", "peer", "name", "dpb")
	nstest.Run(t, ns, "ip", "link", "set", "dpa", "up")
	nstest.Run(t, ns, "ip", "link", "set", "dpb", "up")
	mac := net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}
	for _, tc := range []struct {
		mode   bpfutil.AttachMode
		prefix string // of Modes()[0]
		kernel uint8  // IFLA_XDP_ATTACHED: 1 driver, 2 generic (skb)
	}{
		{bpfutil.ModeAuto, "xdp native, ", 1}, // veth has native XDP
		{bpfutil.ModeNative, "xdp native, ", 1},
		{bpfutil.ModeGeneric, "xdp generic, ", 2},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			var g *gateway.Gateway
			var attached uint32
			err := ns.Do(func() (err error) {
				g, err = gateway.Start(gateway.Config{
					Interfaces: []gateway.Interface{{Name: "dpa", ClusterMAC: mac}},
					Match:      cluster.LocalNode(2, 1, 1), Backend: "afxdp", XDPMode: tc.mode,
				})
				if err != nil {
					return err
				}
				l, err := netlink.LinkByName("dpa")
				if err == nil && l.Attrs().Xdp != nil {
					attached = l.Attrs().Xdp.AttachMode
				}
				return err
			})
			if err != nil {
				t.Fatalf("start with xdp mode %s: %v", tc.mode, err)
			}
			defer g.Close()
			modes := g.Modes()
			if len(modes) != 1 || !strings.HasPrefix(modes[0], tc.prefix) || attached != uint32(tc.kernel) {
				t.Fatalf("xdp mode %s: modes %q, kernel attach mode %d; want %q..., %d", tc.mode, modes, attached, tc.prefix, tc.kernel)
			}
			modes[0] = "changed"
			if got := g.Modes()[0]; !strings.HasPrefix(got, tc.prefix) {
				t.Errorf("changing the slice Modes returned changed the gateway's: %q", got)
			}
			progs := g.Programs()
			if len(progs) != 1 {
				t.Fatalf("%d programs, want 1", len(progs))
			}
			progs[0] = nil
			if g.Programs()[0] == nil {
				t.Error("changing the slice Programs returned changed the gateway's")
			}
		})
	}
}
