package backend_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/node"
	"github.com/xdpcluster/xdpcluster/node/backend"
)

const seed = 0xdeadbeef

// dump, if set, logs the nodes' state when a request fails.
var dump func()

// serve runs, in ns, a TCP service on :8080 and a UDP service on :5353
// that answer with "node N" (and, for UDP, the size of what they got).
func serve(t *testing.T, ns *netns.NS, node int, udpAddr netip.Addr) {
	var ln net.Listener
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		if ln, err = net.Listen("tcp", ":8080"); err != nil {
			return err
		}
		// A UDP service on a shared address binds it, or its replies would
		// come from the interface's own address.
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(udpAddr, 5353).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "node %d\n", node)
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(fmt.Sprintf("node %d got %d", node, n)), a)
		}
	}()
}

// ask connects from client address a to the cluster IP and returns which
// node answered.
func ask(t *testing.T, cl *netns.Cluster, a netip.Addr) string {
	dst := netip.AddrPortFrom(cl.ClusterFront4, 8080)
	if a.Is6() {
		dst = netip.AddrPortFrom(cl.ClusterFront6, 8080)
	}
	var line string
	c, err := cl.Client.Dial("tcp", a, dst, 3*time.Second)
	if err == nil {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		c.Close()
	}
	if err != nil {
		if dump != nil {
			dump()
		}
		t.Fatalf("from %s: %v", a, err)
	}
	return strings.TrimSpace(line)
}

func startNode(t *testing.T, cl *netns.Cluster, i int, m cluster.Match) *backend.Node {
	var n *backend.Node
	ns := cl.Nodes[i]
	if err := ns.Do(func() (err error) {
		n, err = backend.Start(backend.Config{Match: m, Interfaces: []node.Interface{{Name: "front", ClusterMAC: cl.FrontMAC,
			IPv4: []netip.Addr{cl.ClusterFront4}, IPv6: []netip.Addr{cl.ClusterFront6}}}})
		return err
	}); err != nil {
		t.Fatalf("node %d: %v", i+1, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestBackendEndToEnd: three servers share the cluster IPs; every client
// connection is served by exactly the server cluster.Match names; a
// fragmented datagram reaches its owner whole; a takeover at run time
// moves node 2's clients to node 1.
func TestBackendEndToEnd(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-be", netns.ClusterOptions{Nodes: 3, Clients4: 30, Clients6: 3})
	var nodes []*backend.Node
	dump = func() {
		for i, n := range nodes {
			st, _ := n.Programs()[0].Stats()
			t.Logf("node %d: %v responder %+v", i+1, st, n.Responders()[0].Stats())
			out, _ := cl.Nodes[i].Run("ip", "addr", "show", "lo")
			t.Logf("node %d lo: %s", i+1, out)
		}
		out, _ := cl.Client.Run("ip", "neigh")
		t.Logf("client neighbours:\n%s", out)
	}
	defer func() { dump = nil }()
	for i := range cl.Nodes {
		nodes = append(nodes, startNode(t, cl, i, cluster.LocalNode(3, uint32(i+1), seed)))
		serve(t, cl.Nodes[i], i+1, cl.ClusterFront4)
	}
	m := cluster.LocalNode(3, 1, seed)
	clients := append(append([]netip.Addr(nil), cl.Clients4...), cl.Clients6...)
	for _, a := range clients {
		if got, want := ask(t, cl, a), fmt.Sprintf("node %d", m.Node(a)+1); got != want {
			t.Errorf("client %s served by %s, want %s", a, got, want)
		}
	}
	// A datagram larger than the MTU: its fragments all go to the owner.
	a := cl.Clients4[0]
	reply, err := cl.Client.Exchange("udp", a, netip.AddrPortFrom(cl.ClusterFront4, 5353), make([]byte, 3000), 3*time.Second)
	if err != nil {
		t.Fatalf("fragmented datagram: %v", err)
	}
	if want := fmt.Sprintf("node %d got 3000", m.Node(a)+1); string(reply) != want {
		t.Errorf("fragmented datagram: %q, want %q", reply, want)
	}
	var total [backend.NumStats]uint64
	for _, n := range nodes {
		st, _ := n.Programs()[0].Stats()
		for i := range st {
			total[i] += st[i]
		}
	}
	if total[backend.StatMalformed] != 0 {
		t.Errorf("malformed frames: %v", total)
	}
	// Node 2 fails; node 1 takes its share over at run time.
	if err := nodes[1].Close(); err != nil {
		t.Fatal(err)
	}
	m1 := cluster.LocalNode(3, 1, seed)
	m1.NodeMask = 0b011
	if err := nodes[0].SetMatch(m1); err != nil {
		t.Fatal(err)
	}
	for _, a := range clients {
		want := fmt.Sprintf("node %d", m.Node(a)+1)
		if m.Node(a) == 1 {
			want = "node 1"
		}
		if got := ask(t, cl, a); got != want {
			t.Errorf("after the takeover client %s served by %s, want %s", a, got, want)
		}
	}
}

// TestBackendCloseRestores: Close, called from outside the namespace,
// removes the cluster addresses from lo and restores the sysctls there.
func TestBackendCloseRestores(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-bec", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1})
	ns := cl.Nodes[0]
	before := nstest.Run(t, ns, "sysctl", "-n", "net.ipv4.conf.front.arp_ignore")
	n := startNode(t, cl, 0, cluster.LocalNode(1, 1, 1))
	if out := nstest.Run(t, ns, "ip", "addr", "show", "lo"); !strings.Contains(out, cl.ClusterFront4.String()+"/32") || !strings.Contains(out, cl.ClusterFront6.String()+"/128") {
		t.Fatalf("cluster addresses not on lo:\n%s", out)
	}
	if v := nstest.Run(t, ns, "sysctl", "-n", "net.ipv4.conf.front.arp_ignore"); strings.TrimSpace(v) != "1" {
		t.Fatalf("arp_ignore %q", v)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if out := nstest.Run(t, ns, "ip", "addr", "show", "lo"); strings.Contains(out, cl.ClusterFront4.String()) {
		t.Fatalf("cluster address left on lo:\n%s", out)
	}
	if v := nstest.Run(t, ns, "sysctl", "-n", "net.ipv4.conf.front.arp_ignore"); v != before {
		t.Fatalf("arp_ignore %q, want %q restored", v, before)
	}
}

// kernelServer configures a server as the classic recipe does: the cluster
// addresses on lo, no ARP for them, the cluster MAC joined, and -m cluster
// marking its share of the traffic to the cluster addresses, the rest
// dropped (xt_cluster also turns the multicast packet type into host).
func kernelServer(t *testing.T, cl *netns.Cluster, ns *netns.NS, local int) {
	for _, c := range [][]string{
		{"ip", "addr", "add", cl.ClusterFront4.String() + "/32", "dev", "lo"},
		{"ip", "addr", "add", cl.ClusterFront6.String() + "/128", "dev", "lo", "nodad"},
		{"sysctl", "-qw", "net.ipv4.conf.front.arp_ignore=1"},
		{"sysctl", "-qw", "net.ipv4.conf.front.arp_announce=2"},
		{"ip", "maddr", "add", cl.FrontMAC.String(), "dev", "front"},
	} {
		nstest.Run(t, ns, c[0], c[1:]...)
	}
	opts := fmt.Sprintf("-m cluster --cluster-total-nodes 3 --cluster-local-node %d --cluster-hash-seed %#x", local, seed)
	for _, f := range []struct{ tool, dst string }{{"iptables", cl.ClusterFront4.String()}, {"ip6tables", cl.ClusterFront6.String()}} {
		rules := fmt.Sprintf("*mangle\n-A PREROUTING -i front -d %s %s -j MARK --set-mark 0xffff\n-A PREROUTING -i front -d %s -m mark ! --mark 0xffff -j DROP\nCOMMIT\n", f.dst, opts, f.dst)
		if _, err := ns.RunStdin(rules, f.tool+"-restore"); err != nil {
			t.Fatal(err)
		}
	}
	nstest.Run(t, ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0")
}

// TestBackendMixedWithKernelServer: node 3 runs the kernel recipe instead
// of xdpcluster; every client is still served by the node cluster.Match
// names, exactly once.
func TestBackendMixedWithKernelServer(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-bemix", netns.ClusterOptions{Nodes: 3, Clients4: 30, Clients6: 3})
	for i := range cl.Nodes {
		if i == 2 {
			kernelServer(t, cl, cl.Nodes[i], 3)
		} else {
			startNode(t, cl, i, cluster.LocalNode(3, uint32(i+1), seed))
		}
		serve(t, cl.Nodes[i], i+1, cl.ClusterFront4)
	}
	m := cluster.LocalNode(3, 1, seed)
	served := map[string]int{}
	for _, a := range append(append([]netip.Addr(nil), cl.Clients4...), cl.Clients6...) {
		got, want := ask(t, cl, a), fmt.Sprintf("node %d", m.Node(a)+1)
		if got != want {
			t.Errorf("client %s served by %s, want %s", a, got, want)
		}
		served[got]++
	}
	if served["node 3"] == 0 {
		t.Errorf("the kernel server served nobody: %v", served)
	}
}
