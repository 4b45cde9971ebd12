package arp

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

var clusterMAC = net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}

// pair builds a peer namespace and a node namespace joined by a veth; the
// node's interface "n0" has 192.0.2.2/24, the peer's "p0" 192.0.2.9/24.
func pair(t *testing.T) (peer, node *netns.NS) {
	peer, node = nstest.New(t, "xc-arp-p"), nstest.New(t, "xc-arp-n")
	nstest.Run(t, peer, "ip", "link", "add", "p0", "type", "veth", "peer", "name", "n0", "netns", node.Name)
	nstest.Run(t, peer, "ip", "addr", "add", "192.0.2.9/24", "dev", "p0")
	nstest.Run(t, node, "ip", "addr", "add", "192.0.2.2/24", "dev", "n0")
	nstest.Run(t, peer, "ip", "link", "set", "p0", "up")
	nstest.Run(t, node, "ip", "link", "set", "n0", "up")
	return peer, node
}

func start(t *testing.T, node *netns.NS, cfg Config) *Responder {
	var r *Responder
	if err := node.Do(func() (err error) { r, err = Start(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func arpRequest(src net.HardwareAddr, spa, tpa netip.Addr, tha net.HardwareAddr) []byte {
	s, d := spa.As4(), tpa.As4()
	buf := gopacket.NewSerializeBuffer()
	gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true},
		&layers.Ethernet{SrcMAC: src, DstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: src, SourceProtAddress: s[:], DstHwAddress: tha, DstProtAddress: d[:]})
	return buf.Bytes()
}

// replies reads ARP replies arriving at the peer for a while.
func replies(t *testing.T, peer *netns.NS, send func(), wait time.Duration) []*layers.ARP {
	var fd int
	if err := peer.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName("p0")
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	send()
	var out []*layers.ARP
	buf := make([]byte, 2048)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		p := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
		if a, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok && a.Operation == layers.ARPReply {
			out = append(out, a)
		}
	}
	return out
}

// rxDropped is the interface's rx_dropped counter in ns.
func rxDropped(t *testing.T, ns *netns.NS, dev string) uint64 {
	var v uint64
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err == nil {
			v = l.Attrs().Statistics.RxDropped
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestAnswersWithClusterMAC(t *testing.T) {
	nstest.Require(t)
	peer, node := pair(t)
	cluster := netip.MustParseAddr("192.0.2.1")
	r := start(t, node, Config{Interface: "n0", ClusterMAC: clusterMAC, IPv4: []netip.Addr{cluster}})
	in := nstest.NewInjector(t, peer, "p0")
	peerMAC := nstest.MAC(t, peer, "p0")
	got := replies(t, peer, func() { in.Send(arpRequest(peerMAC, netip.MustParseAddr("192.0.2.9"), cluster, make([]byte, 6))) }, 500*time.Millisecond)
	if len(got) != 1 || net.HardwareAddr(got[0].SourceHwAddress).String() != clusterMAC.String() ||
		netip.AddrFrom4([4]byte(got[0].SourceProtAddress)) != cluster {
		t.Fatalf("replies %+v", got)
	}
	if st := r.Stats(); st.ARPRequests != 1 || st.ARPReplies != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPeerARPWithClusterMACTarget: a peer's ARP request for the node's own
// address that carries the cluster MAC as target hardware address (what
// arptables --mangle-mac-d produced in the classic recipe) is still
// answered by the kernel, with the node's own MAC, and not by us.
func TestPeerARPWithClusterMACTarget(t *testing.T) {
	nstest.Require(t)
	peer, node := pair(t)
	r := start(t, node, Config{Interface: "n0", ClusterMAC: clusterMAC, IPv4: []netip.Addr{netip.MustParseAddr("192.0.2.1")}})
	in := nstest.NewInjector(t, peer, "p0")
	peerMAC := nstest.MAC(t, peer, "p0")
	nodeMAC := nstest.MAC(t, node, "n0")
	got := replies(t, peer, func() {
		in.Send(arpRequest(peerMAC, netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("192.0.2.2"), clusterMAC))
	}, 500*time.Millisecond)
	if len(got) != 1 || net.HardwareAddr(got[0].SourceHwAddress).String() != nodeMAC.String() {
		t.Fatalf("replies %+v, want one from the kernel with %s", got, nodeMAC)
	}
	if st := r.Stats(); st.ARPReplies != 0 || st.Ignored == 0 {
		t.Fatalf("the responder answered for the node's own address: %+v", st)
	}
}

func TestRateLimit(t *testing.T) {
	nstest.Require(t)
	peer, node := pair(t)
	cluster := netip.MustParseAddr("192.0.2.1")
	r := start(t, node, Config{Interface: "n0", ClusterMAC: clusterMAC, IPv4: []netip.Addr{cluster}, RateLimit: 50})
	in := nstest.NewInjector(t, peer, "p0")
	peerMAC := nstest.MAC(t, peer, "p0")
	req := arpRequest(peerMAC, netip.MustParseAddr("192.0.2.9"), cluster, make([]byte, 6))
	vethBefore := rxDropped(t, node, "n0")
	got := replies(t, peer, func() {
		for i := 0; i < 2000; i++ {
			in.Send(req)
		}
	}, time.Second)
	st := r.Stats()
	if st.RateLimited == 0 || st.ARPReplies > 50+100 || len(got) == 0 {
		t.Fatalf("flood of 2000: %d replies seen, stats %+v", len(got), st)
	}
	t.Logf("flood of 2000 requests: %d replies, %d rate-limited, %d dropped at the socket", st.ARPReplies, st.RateLimited, st.SocketDrops)
	// Every request is accounted for: read (and answered or rate-limited)
	// or dropped at the socket; a few other ARP/NS frames may be dropped too.
	// (The veth's own drops, rare, are the kernel's and not ours to count.)
	veth := rxDropped(t, node, "n0") - vethBefore
	if got := st.ARPRequests + st.SocketDrops + veth; got < 2000 || got > 2010 || st.ARPRequests != st.ARPReplies+st.RateLimited {
		t.Errorf("flood of 2000: %d read + %d dropped at the socket + %d by the veth = %d; %d answered, %d rate-limited", st.ARPRequests, st.SocketDrops, veth, got, st.ARPReplies, st.RateLimited)
	}
}

func TestRefusesAssignedClusterAddress(t *testing.T) {
	nstest.Require(t)
	_, node := pair(t)
	err := node.Do(func() error {
		_, err := Start(Config{Interface: "n0", ClusterMAC: clusterMAC, IPv4: []netip.Addr{netip.MustParseAddr("192.0.2.2")}})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "cluster address 192.0.2.2 is assigned to the interface") || !strings.Contains(err.Error(), "ip addr del") {
		t.Fatalf("err = %v", err)
	}
}

func TestSolicitedNode(t *testing.T) {
	a := netip.MustParseAddr("2001:db8::12:3456")
	if got := SolicitedNodeMAC(a).String(); got != "33:33:ff:12:34:56" {
		t.Errorf("MAC %s", got)
	}
	if got := SolicitedNodeAddr(a).String(); got != "ff02::1:ff12:3456" {
		t.Errorf("addr %s", got)
	}
}

// FuzzHandle: any frame the filter lets through is handled without panic.
func FuzzHandle(f *testing.F) {
	f.Add(arpRequest(net.HardwareAddr{2, 0, 0, 0, 0, 1}, netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("192.0.2.1"), make([]byte, 6)))
	f.Add([]byte{1, 2, 3})
	r := &Responder{cfg: Config{ClusterMAC: clusterMAC, IPv4: []netip.Addr{netip.MustParseAddr("192.0.2.1")},
		IPv6: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, NDMAC: clusterMAC, RateLimit: 1 << 30}, fd: -1,
		ownMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, tokens: 1 << 30, last: time.Now()}
	f.Fuzz(func(t *testing.T, frame []byte) {
		r.handle(frame)
	})
}

// TestSocketDropsCounted: requests the kernel drops because the
// responder's socket buffer is full are counted as SocketDrops. The
// responder is stalled (the test holds its rate limiter's lock) and its
// receive buffer shrunk to the minimum, then a paced flood arrives: every
// request sent is either read (ARPRequests) or dropped at the socket
// (SocketDrops). The bound: requests + drops equals what was sent, give or
// take the few other ARP/NS frames the filter lets through (counted as
// ignored, or dropped along with the flood) and frames the veth itself
// dropped (its rx_dropped, read from the kernel).
func TestSocketDropsCounted(t *testing.T) {
	nstest.Require(t)
	peer, node := pair(t)
	cluster := netip.MustParseAddr("192.0.2.1")
	r := start(t, node, Config{Interface: "n0", ClusterMAC: clusterMAC, IPv4: []netip.Addr{cluster}, RateLimit: 1 << 20})
	if err := unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1); err != nil {
		t.Fatal(err)
	}
	in := nstest.NewInjector(t, peer, "p0")
	peerMAC := nstest.MAC(t, peer, "p0")
	req := arpRequest(peerMAC, netip.MustParseAddr("192.0.2.9"), cluster, make([]byte, 6))
	vethDrops := func() uint64 { return rxDropped(t, node, "n0") }
	before := r.Stats()
	vethBefore := vethDrops()
	const sent = 3000
	r.mu.Lock() // the responder stalls on its first request
	for i := 0; i < sent; i++ {
		in.Send(req)
		if i%50 == 49 {
			time.Sleep(time.Millisecond) // pace: no drops in the veth's backlog
		}
	}
	time.Sleep(100 * time.Millisecond)
	r.mu.Unlock()
	// Let the responder drain what its buffer held.
	var st Stats
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		st = r.Stats()
		if st.ARPRequests-before.ARPRequests+st.SocketDrops-before.SocketDrops >= sent {
			break
		}
	}
	reqs, drops := st.ARPRequests-before.ARPRequests, st.SocketDrops-before.SocketDrops
	other := st.Ignored - before.Ignored
	veth := vethDrops() - vethBefore
	t.Logf("sent %d: %d read, %d dropped at the socket, %d other ARP/ND frames, %d dropped by the veth", sent, reqs, drops, other, veth)
	if drops == 0 {
		t.Fatal("no socket drops counted, though the responder was stalled with a minimal buffer")
	}
	if drops < sent/2 {
		t.Errorf("only %d of %d dropped with the responder stalled", drops, sent)
	}
	// The kernel may also drop a few unrelated ARP/NS frames at the socket;
	// allow 10 of those.
	if got := reqs + drops + veth; got < sent || got > sent+10 {
		t.Errorf("read %d + dropped %d + veth %d = %d, want %d (+ at most 10 other frames)", reqs, drops, veth, got, sent)
	}
	if st.ARPReplies-before.ARPReplies != reqs {
		t.Errorf("%d requests read, %d answered", reqs, st.ARPReplies-before.ARPReplies)
	}
	// The total survives Close.
	r.Close()
	if after := r.Stats(); after.SocketDrops < st.SocketDrops {
		t.Errorf("drops fell from %d to %d at Close", st.SocketDrops, after.SocketDrops)
	}
}
