package dataplane

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/packet"
)

// mapResolver answers per destination; anything else goes out of back.
type mapResolver map[netip.Addr]Route

func (m mapResolver) Resolve(fam packet.Family, dst [16]byte) Route {
	a := netip.AddrFrom16(dst)
	if fam == packet.IPv4 {
		a = netip.AddrFrom4([4]byte(dst[:4]))
	}
	if r, ok := m[a]; ok {
		return r
	}
	return Route{Iface: 1, NextHop: nextHop, Verdict: Forwarded}
}

// ipFrame is a UDP frame from src to dst (both IPv4 or both IPv6).
func ipFrame(t testing.TB, src, dst string) []byte {
	s, d := net.ParseIP(src), net.ParseIP(dst)
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 7}, DstMAC: net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}}
	var ip gopacket.NetworkLayer
	var ipl gopacket.SerializableLayer
	if netip.MustParseAddr(src).Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		v4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: s.To4(), DstIP: d.To4()}
		ip, ipl = v4, v4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: s, DstIP: d}
		ip, ipl = v6, v6
	}
	udp := &layers.UDP{SrcPort: 1000, DstPort: 9}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ipl, udp, gopacket.Payload("hostile?")); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// routerCases: each frame arrives on front (interface 0) of a one-node
// cluster whose own addresses are 198.51.100.1/2 and 2001:db8:100::1/2,
// with the routes of routerRoutes; want is its verdict.
var routerCases = []struct {
	name, src, dst string
	want           Verdict
}{
	{"ipv4 unicast", "198.51.100.10", "203.0.113.80", Forwarded},
	{"ipv6 unicast", "2001:db8:100::10", "2001:db8:200::80", Forwarded},
	{"source 127.0.0.1", "127.0.0.1", "203.0.113.80", MartianSource},
	{"source 0.0.0.0", "0.0.0.0", "203.0.113.80", MartianSource},
	{"source 224.0.0.1", "224.0.0.1", "203.0.113.80", MartianSource},
	{"source 255.255.255.255", "255.255.255.255", "203.0.113.80", MartianSource},
	{"source: the cluster address (the next hop's own)", "198.51.100.1", "203.0.113.80", MartianSource},
	{"source: the node's own address", "198.51.100.2", "203.0.113.80", MartianSource},
	{"source ::1", "::1", "2001:db8:200::80", MartianSource},
	{"source ::", "::", "2001:db8:200::80", MartianSource},
	{"source ff02::1", "ff02::1", "2001:db8:200::80", MartianSource},
	{"source v4-mapped: the kernel forwards it", "::ffff:127.0.0.1", "2001:db8:200::80", Forwarded},
	{"source: the cluster address, ipv6: the kernel forwards it", "2001:db8:100::1", "2001:db8:200::80", Forwarded},
	{"destination 127.0.0.1", "198.51.100.10", "127.0.0.1", MartianDestination},
	{"destination 0.0.0.0", "198.51.100.10", "0.0.0.0", MartianDestination},
	{"destination 0/8 but 0.0.0.0: unicast since Linux 5.2", "198.51.100.10", "0.1.2.3", Forwarded},
	{"source 0/8 but 0.0.0.0", "0.1.2.3", "203.0.113.80", Forwarded},
	{"destination ::1", "2001:db8:100::10", "::1", MartianDestination},
	{"destination: the cluster address", "198.51.100.10", "198.51.100.1", Local},
	{"destination: the node's address, ipv6", "2001:db8:100::10", "2001:db8:100::2", Local},
	{"limited broadcast", "198.51.100.10", "255.255.255.255", Broadcast},
	{"directed broadcast (broadcast route)", "198.51.100.10", "203.0.113.255", Broadcast},
	{"multicast 224.0.0.1", "198.51.100.10", "224.0.0.1", Multicast},
	{"multicast 239.1.1.1", "198.51.100.10", "239.1.1.1", Multicast},
	{"ff02::1 (would go back out of front)", "2001:db8:100::10", "ff02::1", Multicast},
	{"ff0e::1", "2001:db8:100::10", "ff0e::1", Multicast},
	{"source 169.254/16", "169.254.1.1", "203.0.113.80", LinkLocal},
	{"destination 169.254/16", "198.51.100.10", "169.254.1.1", LinkLocal},
	{"source fe80::/10", "fe80::1", "2001:db8:200::80", LinkLocal},
	{"destination fe80::/10", "2001:db8:100::10", "fe80::1", LinkLocal},
	{"blackhole route", "198.51.100.10", "192.0.2.1", RouteBlackhole},
	{"unreachable route", "198.51.100.10", "192.0.2.65", RouteUnreachable},
	{"prohibit route", "2001:db8:100::10", "2001:db8:301::1", RouteProhibit},
	{"anycast route", "198.51.100.10", "192.0.2.129", MartianDestination},
	{"class E source, routed", "240.0.0.1", "203.0.113.80", Forwarded},
	{"class E destination, routed", "198.51.100.10", "240.0.0.1", Forwarded},
	{"unicast back out of the ingress interface", "198.51.100.10", "198.51.100.11", Forwarded},
}

var routerRoutes = mapResolver{
	netip.MustParseAddr("203.0.113.255"):   {Iface: 1, Verdict: Broadcast},
	netip.MustParseAddr("192.0.2.1"):       {Verdict: RouteBlackhole},
	netip.MustParseAddr("192.0.2.65"):      {Verdict: RouteUnreachable},
	netip.MustParseAddr("2001:db8:301::1"): {Verdict: RouteProhibit},
	netip.MustParseAddr("192.0.2.129"):     {Verdict: MartianDestination},
	netip.MustParseAddr("198.51.100.11"):   {Iface: 0, NextHop: [6]byte{2, 0, 0, 0, 0, 0x11}, Verdict: Forwarded},
}

var ownAddrs = []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"),
	netip.MustParseAddr("2001:db8:100::1"), netip.MustParseAddr("2001:db8:100::2")}

// TestWorkerRouterRules: each hostile frame gets its own verdict, nothing
// but the legitimate ones is sent, and the unicast hairpin goes back out
// of front to its neighbour.
func TestWorkerRouterRules(t *testing.T) {
	for _, c := range routerCases {
		t.Run(c.name, func(t *testing.T) {
			d, front, back := testDataplane(t, cluster.LocalNode(1, 1, 1), routerRoutes)
			d.SetLocalAddrs(ownAddrs)
			front.keep, back.keep = true, true
			w := d.workers[0]
			front.frames = [][]byte{ipFrame(t, c.src, c.dst)}
			n := front.Receive(w.rx)
			w.batch(0, front, w.rx[:n], d.match.Load())
			w.flush()
			pkts, _, _ := d.Totals(0)
			for v := Verdict(0); v < NumVerdicts; v++ {
				want := uint64(0)
				if v == c.want {
					want = 1
				}
				if pkts[v] != want {
					t.Errorf("%s: %d, want %d", v, pkts[v], want)
				}
			}
			sent := len(front.sent) + len(back.sent)
			if c.want == Forwarded && sent != 1 || c.want != Forwarded && sent != 0 {
				t.Errorf("%d frames sent", sent)
			}
			if c.dst == "198.51.100.11" && (len(front.sent) != 1 || [6]byte(front.sent[0][:6]) != [6]byte{2, 0, 0, 0, 0, 0x11}) {
				t.Errorf("the hairpin was not sent back out of front to its neighbour")
			}
			// Dropped on its addresses: before tracking, no connection.
			_, routed := routerRoutes[netip.MustParseAddr(c.dst)]
			wantEntries := 0
			if c.want == Forwarded || routed {
				wantEntries = 1
			}
			if s := d.cfg.Tracker.Stats(); s.Entries != wantEntries {
				t.Errorf("%d connections, want %d", s.Entries, wantEntries)
			}
		})
	}
}

// TestWorkerRouterRulesAllocs: screening hostile frames allocates nothing,
// with the small (scanned) and the large (map) set of own addresses.
func TestWorkerRouterRulesAllocs(t *testing.T) {
	many := append([]netip.Addr(nil), ownAddrs...)
	for i := 0; i < 40; i++ {
		many = append(many, netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}), netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 9, 15: byte(i)}))
	}
	for _, own := range [][]netip.Addr{ownAddrs, many} {
		d, front, _ := testDataplane(t, cluster.LocalNode(1, 1, 1), routerRoutes)
		d.SetLocalAddrs(own)
		w := d.workers[0]
		var frames [][]byte
		for _, c := range routerCases {
			frames = append(frames, ipFrame(t, c.src, c.dst))
		}
		step := func() {
			front.frames = frames
			n := front.Receive(w.rx)
			w.batch(0, front, w.rx[:n], d.match.Load())
			w.flush()
		}
		step()
		if a := testing.AllocsPerRun(100, step); a != 0 {
			t.Fatalf("%d own addresses: a batch allocates %v times", len(own), a)
		}
		pkts, _, _ := d.Totals(0)
		if pkts[MartianSource] == 0 || pkts[Local] == 0 || pkts[Forwarded] == 0 {
			t.Fatalf("%d own addresses: verdicts %v", len(own), pkts)
		}
	}
}

// BenchmarkScreen: the per-packet cost of the router checks on a normal
// packet (it passes every one), with a node's usual handful of addresses.
func BenchmarkScreen(b *testing.B) {
	var p packet.Parsed
	if r := p.Decode(ipFrame(b, "198.51.100.10", "203.0.113.80")); r != packet.OK {
		b.Fatal(r)
	}
	own := newLocalSet(append(ownAddrs, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"),
		netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2")))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if screen(&p, own) != Forwarded {
			b.Fatal("screened out")
		}
	}
}

// countingResolver answers one verdict and counts the questions.
type countingResolver struct {
	v     Verdict
	calls *int
}

func (c countingResolver) Resolve(packet.Family, [16]byte) Route {
	*c.calls++
	return Route{Verdict: c.v}
}

// TestRouteTypeCached: a route type that does not forward is an answer,
// cached like a usable route, so a flood to a blackhole or a broadcast
// address does not ask the kernel every 20 ms; a failed resolution (no
// route, no neighbour) is retried soon.
func TestRouteTypeCached(t *testing.T) {
	for _, c := range []struct {
		v         Verdict
		wantCalls int
	}{{RouteBlackhole, 1}, {Broadcast, 1}, {Local, 1}, {NoRoute, 2}} {
		calls := 0
		d, front, _ := testDataplane(t, cluster.LocalNode(1, 1, 1), countingResolver{c.v, &calls})
		w := d.workers[0]
		for i := 0; i < 2; i++ {
			front.frames = [][]byte{ipFrame(t, "198.51.100.10", "192.0.2.1")}
			n := front.Receive(w.rx)
			w.batch(0, front, w.rx[:n], d.match.Load())
			time.Sleep(3 * negativeRouteTTL / 2)
		}
		if pkts, _, _ := d.Totals(0); pkts[c.v] != 2 {
			t.Errorf("%s: counted %v", c.v, pkts)
		}
		if calls != c.wantCalls {
			t.Errorf("%s: resolved %d times, want %d", c.v, calls, c.wantCalls)
		}
	}
}
