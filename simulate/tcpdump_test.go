package simulate

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestTcpdumpCapture records real kernel traffic (TCP from 20 client
// addresses, UDP, ICMP echo, IPv4 and IPv6) with tcpdump between two
// namespaces, replays the capture and checks every connection lands on the
// node cluster.Match names, each packet owned by exactly one node.
func TestTcpdumpCapture(t *testing.T) {
	nstest.Require(t)
	for _, tool := range []string{"tcpdump", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install tcpdump and iputils-ping (the README's test command does): %v", tool, err)
		}
	}
	cli := nstest.New(t, "xc-sim-c")
	srv := nstest.New(t, "xc-sim-s")
	nstest.Run(t, cli, "ip", "link", "add", "c0", "type", "veth", "peer", "name", "s0", "netns", srv.Name)
	var clients []netip.Addr
	for i := 10; i < 30; i++ {
		clients = append(clients, netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}))
		nstest.Run(t, cli, "ip", "addr", "add", fmt.Sprintf("203.0.113.%d/24", i), "dev", "c0")
	}
	nstest.Run(t, cli, "ip", "addr", "add", "2001:db8::10/64", "dev", "c0", "nodad")
	nstest.Run(t, cli, "ip", "link", "set", "c0", "up")
	nstest.Run(t, srv, "ip", "addr", "add", "203.0.113.80/24", "dev", "s0")
	nstest.Run(t, srv, "ip", "addr", "add", "2001:db8::80/64", "dev", "s0", "nodad")
	nstest.Run(t, srv, "ip", "link", "set", "s0", "up")

	stopCapture := nstest.Capture(t, srv, "s0", "")
	nstest.Echo(t, srv, ":8080", ":5353")
	// Clients.
	talk := func(network, local, remote string) {
		t.Helper()
		if _, err := cli.Exchange(network, netip.MustParseAddr(local), netip.MustParseAddrPort(remote), []byte("hello from "+local), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range clients {
		talk("tcp", a.String(), "203.0.113.80:8080")
	}
	talk("tcp", "2001:db8::10", "[2001:db8::80]:8080")
	for _, a := range clients[:5] {
		talk("udp", a.String(), "203.0.113.80:5353")
	}
	nstest.Run(t, cli, "ping", "-c", "2", "-i", "0.2", "-I", "203.0.113.10", "203.0.113.80")
	nstest.Run(t, cli, "ping", "-c", "2", "-i", "0.2", "2001:db8::80")
	f, err := os.Open(stopCapture())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := Run(f, Options{TotalNodes: 3, Seed: 0xdeadbeef, Top: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d frames, %d connections, unowned %v, not IP %d", rep.Frames, rep.Connections, rep.Unowned, rep.NotIP)
	if o := rep.Normal.Ownership; o.None != 0 || o.Several != 0 || o.ExactlyOne != rep.Tracked || rep.Tracked == 0 {
		t.Fatalf("ownership %+v, tracked %d", o, rep.Tracked)
	}
	// 21 TCP + 5 UDP + 2 echo sessions; ND/MLD packets are untracked.
	if rep.Connections < 28 {
		t.Fatalf("%d connections, want at least 28", rep.Connections)
	}
	for reason := range rep.Unowned {
		if reason != "untracked" {
			t.Errorf("packets owned by no node: %v", rep.Unowned)
		}
	}
	if len(rep.Malformed) != 0 {
		t.Errorf("malformed: %v", rep.Malformed)
	}
	m := cluster.LocalNode(3, 1, 0xdeadbeef)
	bySource := map[string]Source{}
	for _, s := range rep.TopSources {
		bySource[s.Source] = s
	}
	for _, a := range append(clients, netip.MustParseAddr("2001:db8::10")) {
		s, ok := bySource[a.String()]
		if !ok {
			t.Errorf("client %s missing from the sources", a)
			continue
		}
		if s.Node != m.Node(a)+1 || s.Connections == 0 {
			t.Errorf("client %s: node %d with %d connections; cluster.Match says node %d", a, s.Node, s.Connections, m.Node(a)+1)
		}
	}
	if _, ok := bySource["203.0.113.80"]; ok {
		t.Error("the server appears as an original source: replies started connections")
	}
}
