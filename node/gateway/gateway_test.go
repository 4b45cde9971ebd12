package gateway_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/dataplane/afpacket"
	"github.com/xdpcluster/xdpcluster/dataplane/xsk"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	xnode "github.com/xdpcluster/xdpcluster/node"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

// TestBackendChoice: "auto" falls back to raw sockets when AF_XDP cannot
// be set up (here: impossible ring options), "afxdp" then fails with the
// reason, and a bad io name is refused.
func TestBackendChoice(t *testing.T) {
	ns := nstest.Veth(t, "xc-backend", "dpa", "dpb")
	mac := net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}
	bad := xsk.PortOptions{NumFrames: 1000, FrameSize: 2048, RingSize: 256}
	start := func(backend string) (*gateway.Gateway, error) {
		var g *gateway.Gateway
		err := ns.Do(func() (err error) {
			g, err = gateway.Start(gateway.Config{
				Interfaces: []xnode.Interface{{Name: "dpa", ClusterMAC: mac}},
				Match:      cluster.LocalNode(2, 1, 1), IO: dataplane.IO(backend), Port: bad,
			})
			return err
		})
		return g, err
	}
	g, err := start("auto")
	if err != nil {
		t.Fatalf("auto: %v", err)
	}
	if len(g.Modes()) != 1 || !strings.HasPrefix(g.Modes()[0], "afpacket") {
		t.Errorf("auto chose %v, want the raw-socket fallback", g.Modes())
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
	ns := nstest.Veth(t, "xc-follow", "dpa", "dpb")
	g := startAFPacket(t, ns)
	defer g.Close()
	before := g.Dataplane().RouteGeneration()
	nstest.Run(t, ns, "ip", "neigh", "add", "192.0.2.9", "lladdr", "02:00:00:00:00:09", "dev", "dpa", "nud", "permanent")
	deadline := time.Now().Add(3 * time.Second)
	for g.Dataplane().RouteGeneration() == before {
		if time.Now().After(deadline) {
			t.Fatal("a neighbour change did not flush the route caches")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startAttached starts a gateway in ns and returns the XDP attach mode
// netlink reports for its first interface (IFLA_XDP_ATTACHED: 1 driver, 2
// generic).
func startAttached(ns *netns.NS, cfg gateway.Config) (*gateway.Gateway, uint32, error) {
	var g *gateway.Gateway
	var attached uint32
	err := ns.Do(func() (err error) {
		if g, err = gateway.Start(cfg); err != nil {
			return err
		}
		l, err := netlink.LinkByName(cfg.Interfaces[0].Name)
		if err != nil {
			g.Close()
			return err
		}
		if l.Attrs().Xdp != nil {
			attached = l.Attrs().Xdp.AttachMode
		}
		return nil
	})
	return g, attached, err
}

// TestGatewayXDPMode: Config.XDPMode reaches the kernel (the attach mode
// netlink reports) and the gateway's Modes; Modes and Programs hand out
// copies, so a caller cannot change what the gateway reports.
func TestGatewayXDPMode(t *testing.T) {
	ns := nstest.Veth(t, "xc-xdpmode", "dpa", "dpb")
	mac := net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}
	for _, tc := range []struct {
		mode   bpfutil.AttachMode
		prefix string // of Modes()[0]
		kernel uint8  // IFLA_XDP_ATTACHED: 1 driver, 2 generic (skb)
	}{
		{bpfutil.ModeAuto, "xdp generic, ", 2}, // generic first on veth
		{bpfutil.ModeNative, "xdp native, ", 1},
		{bpfutil.ModeGeneric, "xdp generic, ", 2},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			g, attached, err := startAttached(ns, gateway.Config{
				Interfaces: []xnode.Interface{{Name: "dpa", ClusterMAC: mac}},
				Match:      cluster.LocalNode(2, 1, 1), IO: "afxdp", XDPMode: tc.mode,
			})
			if err != nil {
				t.Fatalf("start with xdp mode %s: %v", tc.mode, err)
			}
			defer g.Close()
			modes := g.Modes()
			if len(modes) != 1 || !strings.HasPrefix(modes[0], tc.prefix) || attached != uint32(tc.kernel) {
				t.Fatalf("xdp mode %s: modes %q, kernel attach mode %d; want %q..., %d", tc.mode, modes, attached, tc.prefix, tc.kernel)
			}
			// The structured mode (xdpcluster_interface_info's labels)
			// says the same.
			if im := g.InterfaceModes(); len(im) != 1 || "xdp "+im[0].XDP+", " != tc.prefix || im[0].IO != xnode.IOAFXDP ||
				im[0].Role != xnode.RoleGateway || im[0].Queues < 1 || im[0].String() != modes[0] {
				t.Errorf("xdp mode %s: interface modes %+v, want xdp %q, afxdp, and %q as a string", tc.mode, im, tc.prefix, modes[0])
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

// TestGatewayAutoMultiQueueVeth: on a veth with two queues xdp_mode auto
// attaches natively and reads both queues, since generic XDP would see
// every frame on queue 0 (bpfutil's TestVethQueuesByMode); with one queue
// configured it stays generic.
func TestGatewayAutoMultiQueueVeth(t *testing.T) {
	nstest.Require(t)
	ns := nstest.New(t, "xc-mq")
	nstest.Run(t, ns, "ip", "link", "add", "mqa", "numtxqueues", "2", "numrxqueues", "2", "type", "veth", "peer", "name", "mqb", "numtxqueues", "2", "numrxqueues", "2")
	nstest.Run(t, ns, "ip", "link", "set", "mqa", "up")
	nstest.Run(t, ns, "ip", "link", "set", "mqb", "up")
	mac := net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}
	for _, tc := range []struct {
		queues int
		want   string
		kernel uint32
	}{
		{0, "xdp native, afxdp copy, 2 queue(s)", 1},
		{1, "xdp generic, afxdp copy, 1 queue(s)", 2},
	} {
		g, attached, err := startAttached(ns, gateway.Config{
			Interfaces: []xnode.Interface{{Name: "mqa", ClusterMAC: mac}},
			Match:      cluster.LocalNode(2, 1, 1), IO: "afxdp", Queues: tc.queues,
		})
		if err != nil {
			t.Fatalf("queues %d: start: %v", tc.queues, err)
		}
		modes := g.Modes()
		g.Close()
		if len(modes) != 1 || modes[0] != tc.want || attached != tc.kernel {
			t.Errorf("queues %d: modes %q, kernel attach mode %d; want %q, %d", tc.queues, modes, attached, tc.want, tc.kernel)
		}
	}
}

// TestAFPacketBridgePortNoTC: a raw-socket data interface that is a
// bridge's port keeps its frames from sockets bound per family (the bridge
// takes them first), so the gateway leaves the tc fast path off there,
// saying why, and reads every frame with one socket as without the fast
// path; on a plain interface the same configuration runs the fast path in
// tc.
func TestAFPacketBridgePortNoTC(t *testing.T) {
	ns := nstest.Veth(t, "xc-brport", "dpa", "dpb")
	nstest.Run(t, ns, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding=1")
	g := startAFPacket(t, ns)
	if g.FastPathHook() != "tc" {
		t.Errorf("plain interface: fast path hook %q (%s), want tc", g.FastPathHook(), g.FastPathReason())
	}
	g.Close()
	nstest.Run(t, ns, "ip", "link", "add", "br0", "type", "bridge")
	nstest.Run(t, ns, "ip", "link", "set", "dpa", "master", "br0")
	g = startAFPacket(t, ns)
	defer g.Close()
	if g.FastPathHook() != "" || !strings.Contains(g.FastPathReason(), "interface dpa is a port of bridge br0") {
		t.Errorf("bridge port: fast path hook %q, reason %q; want off, naming the bridge", g.FastPathHook(), g.FastPathReason())
	}
	if q := g.Dataplane().Queues(); q != 1 {
		t.Errorf("bridge port: %d queues (%v), want one socket for every frame", q, g.Modes())
	}
}

// startAFPacket starts node 1 of 2 on dpa in ns with raw sockets (io
// afpacket) and the fast path at its default; the caller closes it.
func startAFPacket(t *testing.T, ns *netns.NS) *gateway.Gateway {
	t.Helper()
	return startDpa(t, ns, dataplane.IOAFPacket, "")
}

// startDpa starts node 1 of 2 on dpa in ns with io and the GRO record
// groState ("": none); the caller closes it.
func startDpa(t *testing.T, ns *netns.NS, io dataplane.IO, groState string) *gateway.Gateway {
	t.Helper()
	var g *gateway.Gateway
	if err := ns.Do(func() (err error) {
		g, err = gateway.Start(gateway.Config{Interfaces: []xnode.Interface{{Name: "dpa", ClusterMAC: net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}}},
			Match: cluster.LocalNode(2, 1, 1), IO: io, GROState: groState})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestAutoIOOnVeth: dataplane.io auto chooses raw sockets with the fast
// path in tc on a veth (gateway.AutoTCReason), and AF_XDP wherever that
// choice does not hold: the fast path off (AF_XDP's slow path is the
// faster), an xdp_mode set, a bridge's port (the bridge takes the frames
// before the sockets bound per family see them), or GRO on (raw sockets
// would turn it off; a veth fed XDP frames needs it), which it leaves on.
// None of them is a fallback.
func TestAutoIOOnVeth(t *testing.T) {
	ns := nstest.Veth(t, "xc-autoio", "dpa", "dpb")
	nstest.Run(t, ns, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding=1")
	for _, tc := range []struct {
		name   string
		fast   dataplane.FastPath
		xdp    bpfutil.AttachMode
		bridge bool
		gro    bool
		mode   string // a part of the interface's mode
		hook   string
	}{
		{"defaults", "", bpfutil.ModeAuto, false, false, "afpacket, 2 sockets (IPv4, IPv6), fast path in tc", "tc"},
		{"fast_path off", dataplane.FastPathOff, bpfutil.ModeAuto, false, false, "xdp generic, afxdp", ""},
		{"xdp_mode native", "", bpfutil.ModeNative, false, false, "xdp native, afxdp", "xdp"},
		{"bridge port", "", bpfutil.ModeAuto, true, false, "xdp generic, afxdp", "xdp"},
		{"GRO on", "", bpfutil.ModeAuto, false, true, "xdp generic, afxdp", "xdp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.bridge {
				nstest.Run(t, ns, "ip", "link", "add", "br0", "type", "bridge")
				nstest.Run(t, ns, "ip", "link", "set", "dpa", "master", "br0")
				defer nstest.Run(t, ns, "ip", "link", "del", "br0")
			}
			if tc.gro {
				nstest.Run(t, ns, "ethtool", "-K", "dpa", "gro", "on")
				defer nstest.Run(t, ns, "ethtool", "-K", "dpa", "gro", "off")
			}
			var g *gateway.Gateway
			if err := ns.Do(func() (err error) {
				g, err = gateway.Start(gateway.Config{Interfaces: []xnode.Interface{{Name: "dpa", ClusterMAC: net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}}},
					Match: cluster.LocalNode(2, 1, 1), FastPath: tc.fast, XDPMode: tc.xdp})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			if m := g.Modes(); len(m) != 1 || !strings.Contains(m[0], tc.mode) || g.FastPathHook() != tc.hook || g.IOFallback() != "" {
				t.Errorf("modes %q, fast path hook %q (%s), io fallback %q; want %q, %q, no fallback",
					m, g.FastPathHook(), g.FastPathReason(), g.IOFallback(), tc.mode, tc.hook)
			}
			if on := nstest.GRO(t, ns, "dpa") == "on"; on != tc.gro {
				t.Errorf("GRO on %v while the gateway runs, want %v (as it was)", on, tc.gro)
			}
		})
	}
}

// TestAutoIOOnVethSocketsFail: where io auto chose tc on a veth but the
// raw sockets cannot be opened (here: a ring frame size the sockets
// refuse), it goes on to AF_XDP with the fast path in XDP, not as a
// fallback, and leaves no tc program attached.
func TestAutoIOOnVethSocketsFail(t *testing.T) {
	ns := nstest.Veth(t, "xc-autofail", "dpa", "dpb")
	nstest.Run(t, ns, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding=1")
	var g *gateway.Gateway
	var tcx int
	if err := ns.Do(func() (err error) {
		g, err = gateway.Start(gateway.Config{Interfaces: []xnode.Interface{{Name: "dpa", ClusterMAC: net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}}},
			Match: cluster.LocalNode(2, 1, 1), Packet: afpacket.Options{FrameSize: 100, RxFrames: 64, TxFrames: 64}})
		if err != nil {
			return err
		}
		ifc, err := net.InterfaceByName("dpa")
		if err != nil {
			return err
		}
		q, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		tcx = len(q.Programs)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if m := g.Modes(); len(m) != 1 || !strings.Contains(m[0], "xdp generic, afxdp") || g.FastPathHook() != "xdp" || g.IOFallback() != "" || len(g.TCPrograms()) != 0 {
		t.Errorf("modes %q, fast path hook %q (%s), io fallback %q, %d tc programs; want AF_XDP with the fast path in XDP, no fallback",
			m, g.FastPathHook(), g.FastPathReason(), g.IOFallback(), len(g.TCPrograms()))
	}
	if tcx != 0 {
		t.Errorf("%d tcx ingress programs left on dpa, want none", tcx)
	}
}
