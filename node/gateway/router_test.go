package gateway_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

// The router's own front addresses stand for these in the cases: the
// cluster addresses in the cluster, the router's address in the kernel
// router.
const (
	own4 = "OWN4"
	own6 = "OWN6"
)

// routerCase is one packet from the client side. want is our verdict;
// kernel says whether a plain Linux router forwards it (the oracle).
type routerCase struct {
	name, src, dst string
	want           dataplane.Verdict
	kernel         bool
}

// The client is 198.51.100.10 / 2001:db8:100::10, the server
// 203.0.113.80 / 2001:db8:200::80; routerRoutes are installed on every
// router (so a drop is never for want of a route).
var routerCases = []routerCase{
	{"ipv4 unicast", "198.51.100.10", "203.0.113.80", dataplane.Forwarded, true},
	{"ipv6 unicast", "2001:db8:100::10", "2001:db8:200::80", dataplane.Forwarded, true},
	{"source 127.0.0.1", "127.0.0.1", "203.0.113.80", dataplane.MartianSource, false},
	{"source 0.0.0.0", "0.0.0.0", "203.0.113.80", dataplane.MartianSource, false},
	{"source 224.0.0.1", "224.0.0.1", "203.0.113.80", dataplane.MartianSource, false},
	{"source 255.255.255.255", "255.255.255.255", "203.0.113.80", dataplane.MartianSource, false},
	{"source: the next hop's own address", own4, "203.0.113.80", dataplane.MartianSource, false},
	{"destination 127.0.0.1", "198.51.100.10", "127.0.0.1", dataplane.MartianDestination, false},
	{"destination 0.0.0.0", "198.51.100.10", "0.0.0.0", dataplane.MartianDestination, false},
	// The rest of 0/8 is unicast since Linux 5.2.
	{"destination 0/8 but 0.0.0.0", "198.51.100.10", "0.1.2.3", dataplane.Forwarded, true},
	{"source 0/8 but 0.0.0.0", "0.1.2.3", "203.0.113.80", dataplane.Forwarded, true},
	{"limited broadcast", "198.51.100.10", "255.255.255.255", dataplane.Broadcast, false},
	{"directed broadcast to the back subnet", "198.51.100.10", "203.0.113.255", dataplane.Broadcast, false},
	{"multicast 224.0.0.1", "198.51.100.10", "224.0.0.1", dataplane.Multicast, false},
	{"multicast 239.1.1.1", "198.51.100.10", "239.1.1.1", dataplane.Multicast, false},
	{"destination: the router itself", "198.51.100.10", own4, dataplane.Local, false},
	{"blackhole route", "198.51.100.10", "192.0.2.1", dataplane.RouteBlackhole, false},
	{"unreachable route", "198.51.100.10", "192.0.2.65", dataplane.RouteUnreachable, false},
	{"prohibit route", "198.51.100.10", "192.0.2.129", dataplane.RouteProhibit, false},
	{"class E source", "240.0.0.1", "203.0.113.80", dataplane.Forwarded, true},
	{"class E destination", "198.51.100.10", "240.0.0.1", dataplane.Forwarded, true},
	// RFC 3927: a router must not forward 169.254/16; the kernel does
	// when it has a route (here the default). A deliberate difference.
	{"source 169.254/16", "169.254.1.1", "203.0.113.80", dataplane.LinkLocal, true},
	{"destination 169.254/16", "198.51.100.10", "169.254.1.1", dataplane.LinkLocal, true},
	{"source ::1", "::1", "2001:db8:200::80", dataplane.MartianSource, false},
	{"source ::", "::", "2001:db8:200::80", dataplane.MartianSource, false},
	{"source ff02::1", "ff02::1", "2001:db8:200::80", dataplane.MartianSource, false},
	// ip6_forward checks neither v4-mapped sources nor the router's own.
	{"source v4-mapped", "::ffff:127.0.0.1", "2001:db8:200::80", dataplane.Forwarded, true},
	{"source: the next hop's own ipv6 address", own6, "2001:db8:200::80", dataplane.Forwarded, true},
	{"source fe80::1", "fe80::1", "2001:db8:200::80", dataplane.LinkLocal, false},
	{"destination ::1", "2001:db8:100::10", "::1", dataplane.MartianDestination, false},
	{"destination ff02::1", "2001:db8:100::10", "ff02::1", dataplane.Multicast, false},
	{"destination ff0e::1", "2001:db8:100::10", "ff0e::1", dataplane.Multicast, false},
	{"destination fe80::1", "2001:db8:100::10", "fe80::1", dataplane.LinkLocal, false},
	{"destination: the router itself, ipv6", "2001:db8:100::10", own6, dataplane.Local, false},
	{"blackhole route, ipv6", "2001:db8:100::10", "2001:db8:301::1", dataplane.RouteBlackhole, false},
	{"unreachable route, ipv6", "2001:db8:100::10", "2001:db8:302::1", dataplane.RouteUnreachable, false},
	{"prohibit route, ipv6", "2001:db8:100::10", "2001:db8:303::1", dataplane.RouteProhibit, false},
	// A unicast route back out of the ingress interface: the kernel
	// forwards (and sends a redirect), so do we.
	{"unicast back out of the ingress interface", "198.51.100.10", "198.51.100.11", dataplane.Forwarded, true},
	{"unicast back out of the ingress interface, ipv6", "2001:db8:100::10", "2001:db8:100::11", dataplane.Forwarded, true},
}

// sends is how often each case is sent, sendGap apart: the first frame to
// a new destination starts neighbour resolution, the later ones meet its
// result (a directed broadcast resolves to ff:ff:ff:ff:ff:ff).
const (
	sends   = 3
	sendGap = 30 * time.Millisecond
)

var routerRoutes = [][]string{
	{"ip", "route", "add", "default", "via", "203.0.113.80"},
	{"ip", "-6", "route", "add", "default", "via", "2001:db8:200::80"},
	{"ip", "route", "add", "blackhole", "192.0.2.0/26"},
	{"ip", "route", "add", "unreachable", "192.0.2.64/26"},
	{"ip", "route", "add", "prohibit", "192.0.2.128/26"},
	{"ip", "-6", "route", "add", "blackhole", "2001:db8:301::/64"},
	{"ip", "-6", "route", "add", "unreachable", "2001:db8:302::/64"},
	{"ip", "-6", "route", "add", "prohibit", "2001:db8:303::/64"},
}

func addRouterRoutes(t *testing.T, ns *netns.NS) {
	for _, r := range routerRoutes {
		nstest.Run(t, ns, r[0], r[1:]...)
	}
}

// routerFrame builds case i's frame: UDP to port 9 carrying a marker that
// names the case.
func routerFrame(t *testing.T, i int, c routerCase, dstMAC, srcMAC net.HardwareAddr, ownFront4, ownFront6 netip.Addr) []byte {
	t.Helper()
	addr := func(s string) netip.Addr {
		switch s {
		case own4:
			return ownFront4
		case own6:
			return ownFront6
		}
		return netip.MustParseAddr(s)
	}
	src, dst := addr(c.src), addr(c.dst)
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC}
	var ip gopacket.NetworkLayer
	var ipl gopacket.SerializableLayer
	if src.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		v4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		ip, ipl = v4, v4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		ip, ipl = v6, v6
	}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 9}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ipl, udp, gopacket.Payload(marker(i))); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func marker(i int) string { return fmt.Sprintf("xc-router-case-%02d;", i) }

// forwardedCases reads the captures (at the server, and at the client
// without the client's own frames: a router may send a frame back out of
// its ingress interface) and returns which cases came out of the router.
func forwardedCases(t *testing.T, files ...string) map[int]bool {
	out := map[int]bool{}
	for _, f := range files {
		nstest.Frames(t, f, func(data []byte) {
			for i := range routerCases {
				if bytes.Contains(data, []byte(marker(i))) {
					out[i] = true
				}
			}
		})
	}
	return out
}

// frontVerdicts sums the nodes' verdicts for frames received on front
// (what the server sends back arrives on back), and how many frames that is.
func frontVerdicts(nodes []*node) (s [dataplane.NumVerdicts]uint64, frames uint64) {
	for _, n := range nodes {
		p, _, _ := n.gw.Dataplane().Totals(0)
		// With the fast path on, the packets of cached connections are
		// decided in XDP: forwarded or foreign, like the workers'.
		if progs := n.gw.Programs(); n.gw.FlowCache() != nil && len(progs) > 0 {
			if st, err := progs[0].FastStats(); err == nil {
				p[dataplane.Forwarded] += st.Forwarded
				p[dataplane.Foreign] += st.Foreign
			}
		}
		for v := range s {
			s[v] += p[v]
			frames += p[v]
		}
	}
	return s, frames
}

// udpSink listens on UDP port 9 in ns, so the frames that reach it are
// not answered with ICMP port unreachable.
func udpSink(t *testing.T, ns *netns.NS) {
	if err := ns.Do(func() error {
		c, err := net.ListenPacket("udp", ":9")
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return err
	}); err != nil {
		t.Fatalf("UDP sink in %s: %v", ns.Name, err)
	}
}

// TestGatewayRouterRules sends each packet a Linux router does not forward
// (martian sources and destinations, the next hop's own address as
// source, broadcasts, multicast, link-local, reject routes) from the
// client to the cluster MAC, and a normal packet of each family: the
// normal ones reach the server, no hostile one leaves any node (captured
// at the server and at the client), and each is counted under its own
// verdict. The same frames then go through a plain Linux router (the
// oracle): it forwards exactly the same ones, but for the documented
// difference (169.254/16, which we never forward).
func TestGatewayRouterRules(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-rtr", netns.ClusterOptions{Nodes: 2, Clients4: 2, Clients6: 2})
	nodes := startNodes(t, cl)
	for _, n := range nodes {
		addRouterRoutes(t, n.ns)
	}
	udpSink(t, cl.Server)
	clientMAC := nstest.MAC(t, cl.Client, "eth0")
	atServer := nstest.Capture(t, cl.Server, "eth0", "udp port 9")
	atClient := nstest.Capture(t, cl.Client, "eth0", "udp port 9 and not ether src "+clientMAC.String())
	inj := nstest.NewInjector(t, cl.Client, "eth0")
	for i, c := range routerCases {
		// Every node handles every frame: wait until each has.
		before, n0 := frontVerdicts(nodes)
		frame := routerFrame(t, i, c, cl.FrontMAC, clientMAC, cl.ClusterFront4, cl.ClusterFront6)
		for k := 0; k < sends; k++ {
			inj.Send(frame)
			time.Sleep(sendGap)
		}
		want := uint64(sends * len(nodes))
		deadline := time.Now().Add(5 * time.Second)
		var after [dataplane.NumVerdicts]uint64
		for {
			var n uint64
			after, n = frontVerdicts(nodes)
			if n-n0 >= want {
				if n-n0 > want {
					t.Errorf("%s: %d frames handled, want %d", c.name, n-n0, want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %d frames handled after 5 s, want %d", c.name, n-n0, want)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		var got []string
		for v := range after {
			if d := after[v] - before[v]; d != 0 {
				got = append(got, fmt.Sprintf("%s+%d", dataplane.Verdict(v), d))
			}
		}
		if after[c.want]-before[c.want] < sends {
			t.Errorf("%s: counted %s %d times, want at least %d; counted %v", c.name, c.want, after[c.want]-before[c.want], sends, got)
		}
		sent := after[dataplane.Forwarded] + after[dataplane.ForwardedKernel] - before[dataplane.Forwarded] - before[dataplane.ForwardedKernel]
		if c.want == dataplane.Forwarded && sent != sends || c.want != dataplane.Forwarded && sent != 0 {
			t.Errorf("%s: sent %d times; counted %v", c.name, sent, got)
		}
		t.Logf("%-45s %v", c.name, got)
	}
	ours := forwardedCases(t, atServer(), atClient())

	// An address the nodes get at run time is theirs at once: the workers'
	// set of own addresses follows the kernel's route events.
	for _, n := range nodes {
		nstest.Run(t, n.ns, "ip", "addr", "add", "198.51.100.77/32", "dev", "back")
	}
	late := routerFrame(t, 99, routerCase{src: "198.51.100.77", dst: "203.0.113.80"}, cl.FrontMAC, clientMAC, cl.ClusterFront4, cl.ClusterFront6)
	deadline := time.Now().Add(3 * time.Second)
	for {
		before, _ := frontVerdicts(nodes)
		inj.Send(late)
		time.Sleep(50 * time.Millisecond)
		if after, _ := frontVerdicts(nodes); after[dataplane.MartianSource]-before[dataplane.MartianSource] == uint64(len(nodes)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an address added to the nodes at run time is not a martian source 3 s later")
		}
	}

	kernel := kernelRouterForwards(t)
	for i, c := range routerCases {
		if ours[i] != (c.want == dataplane.Forwarded) {
			t.Errorf("%s: forwarded by the dataplane: %v, want %v", c.name, ours[i], c.want == dataplane.Forwarded)
		}
		if kernel[i] != c.kernel {
			t.Errorf("%s: forwarded by the kernel router: %v, want %v", c.name, kernel[i], c.kernel)
		}
	}
	if !ours[0] || !ours[1] {
		t.Fatal("the normal packets were not forwarded: the test proves nothing")
	}
}

// kernelRouterForwards plays the cases through a plain Linux router
// (ip_forward=1, the same routes, rp_filter off: the dataplane does no
// reverse-path filtering either) and returns which cases it forwarded.
func kernelRouterForwards(t *testing.T) map[int]bool {
	cli := nstest.New(t, "xc-krc")
	rt := nstest.New(t, "xc-krr")
	srv := nstest.New(t, "xc-krs")
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv6.conf.all.forwarding", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"},
		{"net.ipv4.conf.all.accept_local", "0"}, {"net.ipv4.conf.default.accept_local", "0"},
		{"net.ipv4.conf.all.route_localnet", "0"}, {"net.ipv4.conf.default.route_localnet", "0"},
		{"net.ipv4.conf.all.bc_forwarding", "0"}, {"net.ipv4.conf.default.bc_forwarding", "0"}} {
		if err := rt.Sysctl(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	nstest.Run(t, cli, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "front", "netns", rt.Name)
	nstest.Run(t, srv, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "back", "netns", rt.Name)
	for _, x := range []struct {
		ns   *netns.NS
		dev  string
		addr []string
	}{{cli, "eth0", []string{"198.51.100.10/24", "2001:db8:100::10/64", "198.51.100.11/24", "2001:db8:100::11/64"}},
		{rt, "front", []string{"198.51.100.2/24", "2001:db8:100::2/64"}},
		{rt, "back", []string{"203.0.113.2/24", "2001:db8:200::2/64"}},
		{srv, "eth0", []string{"203.0.113.80/24", "2001:db8:200::80/64"}}} {
		for _, a := range x.addr {
			nstest.Run(t, x.ns, "ip", "addr", "add", a, "dev", x.dev, "nodad")
		}
		nstest.Run(t, x.ns, "ip", "link", "set", x.dev, "up")
	}
	addRouterRoutes(t, rt)
	// Resolve the neighbours first, so no frame waits for ARP/ND.
	for _, a := range []string{"203.0.113.80", "2001:db8:200::80", "198.51.100.11", "2001:db8:100::11"} {
		nstest.Run(t, rt, "ping", "-c", "1", "-W", "2", a)
	}
	udpSink(t, srv)
	clientMAC := nstest.MAC(t, cli, "eth0")
	atServer := nstest.Capture(t, srv, "eth0", "udp port 9")
	atClient := nstest.Capture(t, cli, "eth0", "udp port 9 and not ether src "+clientMAC.String())
	inj := nstest.NewInjector(t, cli, "eth0")
	routerMAC := nstest.MAC(t, rt, "front")
	for i, c := range routerCases {
		frame := routerFrame(t, i, c, routerMAC, clientMAC, netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("2001:db8:100::2"))
		for k := 0; k < sends; k++ {
			inj.Send(frame)
			time.Sleep(sendGap)
		}
	}
	time.Sleep(300 * time.Millisecond)
	return forwardedCases(t, atServer(), atClient())
}

// TestResolverRouteTypes: the resolver reports each kernel route type
// that does not forward as its own verdict (the kernel is asked, with
// real routes of every type), and a unicast route as forwarded.
func TestResolverRouteTypes(t *testing.T) {
	ns := gateway.ResolverNamespace(t, "xc-rtype")
	nstest.Run(t, ns, "ip", "neigh", "add", "203.0.113.80", "lladdr", "02:00:00:00:00:80", "dev", "dpa", "nud", "permanent")
	nstest.Run(t, ns, "ip", "route", "add", "anycast", "192.0.2.192/26", "dev", "dpa")
	addRouterRoutes(t, ns)
	r := gateway.ResolverIn(t, ns, "dpa")
	for _, c := range []struct {
		dst  string
		want dataplane.Verdict
	}{
		{"203.0.113.80", dataplane.Forwarded},
		{"203.0.113.255", dataplane.Broadcast},
		{"203.0.113.2", dataplane.Local},
		{"127.0.0.1", dataplane.Local},
		{"224.0.0.1", dataplane.Multicast},
		{"239.1.1.1", dataplane.Multicast},
		{"192.0.2.1", dataplane.RouteBlackhole},
		{"192.0.2.65", dataplane.RouteUnreachable},
		{"192.0.2.129", dataplane.RouteProhibit},
		{"192.0.2.193", dataplane.MartianDestination}, // anycast
		{"2001:db8:200::2", dataplane.Local},
		{"ff02::1", dataplane.Multicast},
		{"2001:db8:301::1", dataplane.RouteBlackhole},
		{"2001:db8:302::1", dataplane.RouteUnreachable},
		{"2001:db8:303::1", dataplane.RouteProhibit},
	} {
		if got := gateway.ResolveAddr(r, netip.MustParseAddr(c.dst)); got.Verdict != c.want {
			t.Errorf("%s: %s, want %s", c.dst, got.Verdict, c.want)
		}
	}
	addrs, err := r.LocalAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, a := range addrs {
		s = append(s, a.String())
	}
	if j := strings.Join(s, " "); !strings.Contains(j, "203.0.113.2 ") && !strings.HasSuffix(j, "203.0.113.2") || !strings.Contains(j, "2001:db8:200::2") {
		t.Errorf("local addresses %v lack the node's", s)
	}
}
