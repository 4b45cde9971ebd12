package gateway_test

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/dataplane/xsk"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

// TestFastPathCarriesEstablished: once a TCP connection is established,
// its packets are decided in XDP on every node (forwarded by its owner,
// dropped by the others) and the workers see none of them; its close
// goes through the workers, which remove it from the cache. Then the
// owner fails and a survivor takes its share: the very next packets of the
// cached connection are forwarded by the survivor's fast path, none
// dropped as foreign there and none through its workers.
func TestFastPathCarriesEstablished(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-fp", netns.ClusterOptions{Nodes: 2, Clients4: 20, Clients6: 1})
	nodes := startNodes(t, cl)
	servers(t, cl)
	var a netip.Addr // a client node 2 owns
	for _, c := range cl.Clients4 {
		if nodes[0].match.Node(c) == 1 {
			a = c
			break
		}
	}
	if !a.IsValid() {
		t.Fatal("no client in node 2's share")
	}
	owner, other := nodes[1], nodes[0]
	c := dial(t, cl, a)
	defer c.Close()
	echo(t, c, 1000) // established and installed on both nodes

	type counts struct {
		workers [dataplane.NumVerdicts]uint64
		fast    xsk.FastStats
	}
	read := func(n *node) counts {
		p, _, _ := n.gw.Dataplane().Totals(-1)
		return counts{p, fastTotals(t, n.gw)}
	}
	// Under load a non-owner drains its two interfaces at different
	// times, so it may see the client's first ACKs before the server's
	// SYN/ACK (INVALID there, harmless: it drops them) and install the
	// connection later than the owner. Wait until both nodes' flow caches
	// hold the connection (both directions) and neither node's workers
	// see its packets any more (their counters are published per batch:
	// give them a moment before reading).
	installed := func(n *node) bool {
		st, err := n.gw.FlowCache().Stats()
		return err == nil && st.Entries >= 2
	}
	for i := 0; ; i++ {
		o, f := read(owner), read(other)
		echo(t, c, 2000)
		time.Sleep(200 * time.Millisecond)
		if o2, f2 := read(owner), read(other); installed(owner) && installed(other) && o2.workers == o.workers && f2.workers == f.workers {
			break
		}
		if i == 50 {
			t.Fatal("the connection is not installed on both nodes, or its packets still reach the workers, after 50 more exchanges")
		}
	}
	o0, f0 := read(owner), read(other)
	echo(t, c, 200000)
	o1, f1 := read(owner), read(other)
	if d := o1.fast.Forwarded - o0.fast.Forwarded; d < 20 {
		t.Errorf("owner: the fast path forwarded %d packets of 200 kB each way, want most of them", d)
	}
	if d := f1.fast.Foreign - f0.fast.Foreign; d < 20 {
		t.Errorf("other node: the fast path dropped %d packets as foreign, want most of them", d)
	}
	for _, x := range []struct {
		name     string
		from, to counts
	}{{"owner", o0, o1}, {"other node", f0, f1}} {
		for v := range x.to.workers {
			if d := x.to.workers[v] - x.from.workers[v]; d != 0 {
				t.Errorf("%s: the workers handled %d packets (%s) of an established connection", x.name, d, dataplane.Verdict(v))
			}
		}
	}
	for i, n := range nodes {
		st, err := n.gw.FlowCache().Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Installs == 0 || st.Entries == 0 {
			t.Errorf("node %d: flow cache %+v, want the connection installed", i+1, st)
		}
	}

	// The owner fails; node 1 takes its share. The cached connection's
	// next packets go out through node 1's fast path.
	if err := owner.gw.Close(); err != nil {
		t.Fatal(err)
	}
	m := other.match
	m.NodeMask |= 1 << 1
	if err := other.gw.Dataplane().SetMatch(m); err != nil {
		t.Fatal(err)
	}
	f2 := read(other)
	echo(t, c, 100000)
	f3 := read(other)
	if d := f3.fast.Forwarded - f2.fast.Forwarded; d < 20 {
		t.Errorf("after the takeover node 1's fast path forwarded %d packets, want the connection's", d)
	}
	if d := f3.fast.Foreign - f2.fast.Foreign; d != 0 {
		t.Errorf("after the takeover node 1 dropped %d packets of the connection as foreign", d)
	}
	if d := f3.workers[dataplane.Forwarded] - f2.workers[dataplane.Forwarded]; d != 0 {
		t.Errorf("after the takeover %d packets went through node 1's workers, want none (the cache decides)", d)
	}

	// The close goes through the workers, which remove the connection.
	st0, _ := other.gw.FlowCache().Stats()
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := other.gw.FlowCache().Stats()
		if st.Removals > st0.Removals {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the connection's FIN did not remove it from the flow cache: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFastPathOffWithoutForwarding: with forwarding off on the data
// interfaces the kernel's route lookup from XDP would route nothing, so
// fast_path auto leaves the fast path off, saying why.
func TestFastPathOffWithoutForwarding(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-fpoff", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1})
	nstest.Run(t, cl.Nodes[0], "sysctl", "-qw", "net.ipv4.conf.all.forwarding=0", "net.ipv6.conf.all.forwarding=0")
	var logs nstest.LogBuffer
	var gw *gateway.Gateway
	err := cl.Nodes[0].Do(func() (err error) {
		gw, err = gateway.Start(gateway.Config{Interfaces: interfaces(cl), Match: cluster.LocalNode(1, 1, seed),
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if gw.FlowCache() != nil {
		t.Fatal("the fast path is on with forwarding off")
	}
	if r := gw.FastPathReason(); !strings.Contains(r, "forwarding is off on front, back") {
		t.Errorf("reason %q", r)
	}
	if !strings.Contains(logs.String(), "fast path off") {
		t.Errorf("not logged:\n%s", logs.String())
	}
}

// TestFastPathReconcile: a flow cache entry the tracker did not install
// (an orphan: a re-install that raced another worker's removal) is removed
// by the reconciliation, while the connections the tracker installed stay.
func TestFastPathReconcile(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-fprc", netns.ClusterOptions{Nodes: 1, Clients4: 2, Clients6: 1})
	nodes := startNodes(t, cl)
	servers(t, cl)
	gw := nodes[0].gw
	a := cl.Clients4[0]
	if _, err := cl.Client.Exchange("udp", a, netip.AddrPortFrom(cl.Server4, 5353), []byte("hello"), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	st0, err := gw.FlowCache().Stats()
	if err != nil || st0.Entries != 2 {
		t.Fatalf("flow cache after one UDP exchange: %+v %v, want its 2 entries", st0, err)
	}
	orphan := dataplane.FlowKey{Family: 4, Proto: 17, SrcPort: 4000, DstPort: 53}
	copy(orphan.Src[:], []byte{198, 51, 100, 200})
	copy(orphan.Dst[:], []byte{203, 0, 113, 80})
	if err := gw.FlowCache().Install([]dataplane.FlowKey{orphan}, []uint8{0}); err != nil {
		t.Fatal(err)
	}
	if n := gw.ReconcileOnce(); n != 2 { // both directions of the orphan, each found once
		t.Errorf("reconciliation removed %d, want the orphan's 2 directions", n)
	}
	st, _ := gw.FlowCache().Stats()
	if st.Entries != 2 {
		t.Errorf("flow cache after reconciliation: %+v, want the UDP connection's 2 entries only", st)
	}
	if gw.CacheOrphans() == 0 {
		t.Error("orphans not counted")
	}
}

// TestFastPathTrimsPadding: a frame longer than its IP packet (Ethernet
// padding, or trailing bytes a sender left) leaves the node as long as its
// IP packet, on the fast path as on the slow path, through the veth's
// default (generic) XDP: bpf_xdp_adjust_tail trims the skb there. The
// datagrams go to a port nothing listens on, so that the only packets the
// fast path forwards are theirs (the server's ICMP errors are never
// cached).
func TestFastPathTrimsPadding(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-pad", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1})
	nodes := startNodes(t, cl)
	a := cl.Clients4[0]
	// With bridge netfilter on, the switch trims IPv4 frames itself
	// (br_validate_ipv4), on the way to the node and on the way out: as a
	// hardware switch, it must hand them over as they come.
	if _, err := cl.Switch.Run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"); err != nil {
		t.Logf("bridge netfilter: %v (not loaded: nothing to turn off)", err)
	}
	stop := nstest.Capture(t, cl.Switch, "swb1", "udp and port 5399")
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: a.AsSlice(), DstIP: cl.ServerFor(a).AsSlice()}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 5399}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: nstest.MAC(t, cl.Client, "eth0"), DstMAC: cl.FrontMAC, EthernetType: layers.EthernetTypeIPv4},
		ip, udp, gopacket.Payload("padded"))
	if err != nil {
		t.Fatal(err)
	}
	// gopacket pads to the 60-byte minimum already; 16 more bytes.
	frame := append(buf.Bytes(), bytes.Repeat([]byte{0xee}, 16)...)
	iplen := int(binary.BigEndian.Uint16(frame[16:18]))
	in := nstest.NewInjector(t, cl.Client, "eth0")
	before := fastTotals(t, nodes[0].gw).Forwarded
	sent := 0
	for deadline := time.Now().Add(10 * time.Second); fastTotals(t, nodes[0].gw).Forwarded == before; sent++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d frames the fast path forwarded none", sent)
		}
		in.Send(frame)
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	var got []int
	nstest.Frames(t, stop(), func(data []byte) {
		if len(data) >= 14+20 && netip.AddrFrom4([4]byte(data[26:30])) == a {
			got = append(got, len(data))
		}
	})
	if len(got) < sent {
		t.Fatalf("the switch saw %d of the %d frames sent leave the node", len(got), sent)
	}
	for i, n := range got {
		if n != 14+iplen {
			t.Errorf("frame %d left the node with %d bytes, want %d (the IP packet's %d, no padding)", i, n, 14+iplen, iplen)
		}
	}
	if !t.Failed() {
		t.Logf("%d frames of %d bytes sent, the last by the fast path; all left the node with %d", len(got), len(frame), 14+iplen)
	}
}
