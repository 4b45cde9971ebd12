package simulate

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// simPair builds a client and a server namespace joined by a veth (c0 with
// 20 IPv4 client addresses and 2001:db8::10, s0 with 203.0.113.80 and
// 2001:db8::80).
func simPair(t *testing.T) (cli, srv *netns.NS, clients []netip.Addr) {
	nstest.Require(t)
	for _, tool := range []string{"tcpdump", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install tcpdump and iputils-ping (the README's test command does): %v", tool, err)
		}
	}
	cli = nstest.New(t, "xc-sim-c")
	srv = nstest.New(t, "xc-sim-s")
	nstest.Run(t, cli, "ip", "link", "add", "c0", "type", "veth", "peer", "name", "s0", "netns", srv.Name)
	for i := 10; i < 30; i++ {
		clients = append(clients, netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}))
		nstest.Run(t, cli, "ip", "addr", "add", fmt.Sprintf("203.0.113.%d/24", i), "dev", "c0")
	}
	nstest.Run(t, cli, "ip", "addr", "add", "2001:db8::10/64", "dev", "c0", "nodad")
	nstest.Run(t, cli, "ip", "link", "set", "c0", "up")
	nstest.Run(t, srv, "ip", "addr", "add", "203.0.113.80/24", "dev", "s0")
	nstest.Run(t, srv, "ip", "addr", "add", "2001:db8::80/64", "dev", "s0", "nodad")
	nstest.Run(t, srv, "ip", "link", "set", "s0", "up")
	nstest.Run(t, srv, "ip", "link", "set", "lo", "up")
	return cli, srv, clients
}

// tcpdump runs tcpdump with args in ns until stop, which returns the
// capture file (like nstest.Capture, with options: snap length, link type).
func tcpdump(t *testing.T, ns *netns.NS, args ...string) (stop func() string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "capture.pcap")
	args = append([]string{"netns", "exec", ns.Name, "tcpdump", "-n", "-U", "--immediate-mode", "-B", "65536", "-w", file}, args...)
	cmd := exec.Command("ip", args...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	ready, done := make(chan struct{}), make(chan struct{})
	var lines []string
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.Contains(sc.Text(), "listening on") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-done:
		cmd.Wait()
		t.Fatalf("tcpdump %v exited: %s", args, strings.Join(lines, "; "))
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("tcpdump did not start")
	}
	var once sync.Once
	stop = func() string {
		once.Do(func() {
			time.Sleep(200 * time.Millisecond)
			cmd.Process.Signal(syscall.SIGINT)
			<-done
			cmd.Wait()
			for _, l := range lines {
				if strings.Contains(l, "dropped by kernel") && !strings.HasPrefix(l, "0 ") {
					t.Errorf("tcpdump lost frames (%s)", l)
				}
			}
		})
		return file
	}
	t.Cleanup(func() { stop() })
	return stop
}

// replay runs the capture file through Run.
func replay(t *testing.T, file string) *Report {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := Run(f, Options{TotalNodes: 3, Seed: 0xdeadbeef, Top: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %v: %d frames, %d connections, payload not captured %d, malformed %v, unowned %v, not IP %d",
		rep.Format, rep.LinkTypes, rep.Frames, rep.Connections, rep.PayloadNotCaptured, rep.Malformed, rep.Unowned, rep.NotIP)
	if o := rep.Normal.Ownership; o.None != 0 || o.Several != 0 || o.ExactlyOne != rep.Tracked || rep.Tracked == 0 {
		t.Errorf("ownership %+v, tracked %d", o, rep.Tracked)
	}
	for reason := range rep.Unowned {
		if reason != "untracked" {
			t.Errorf("packets owned by no node: %v", rep.Unowned)
		}
	}
	if len(rep.Malformed) != 0 || rep.HeadersNotCaptured != 0 {
		t.Errorf("malformed: %v, headers not captured %d", rep.Malformed, rep.HeadersNotCaptured)
	}
	return rep
}

// TestTcpdumpSnapLength: real traffic captured with tcpdump -s 96 (headers
// only, as captures on busy links are taken) replays like a whole capture:
// every frame decoded from its headers, those with payload beyond 96 bytes
// counted as such, bytes from the original lengths. Before, each such
// frame was malformed (bad_ipv4_length / bad_ipv6_length).
func TestTcpdumpSnapLength(t *testing.T) {
	cli, srv, clients := simPair(t)
	stop := tcpdump(t, srv, "-i", "s0", "-s", "96")
	nstest.Echo(t, srv, ":8080", ":5353")
	big := []byte(strings.Repeat("0123456789", 150)) // 1500 bytes: several segments, each over 96 bytes
	for _, a := range clients[:10] {
		if _, err := cli.Exchange("tcp", a, netip.MustParseAddrPort("203.0.113.80:8080"), big, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Exchange("udp", a, netip.MustParseAddrPort("203.0.113.80:5353"), big[:500], 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Exchange("tcp", netip.MustParseAddr("2001:db8::10"), netip.MustParseAddrPort("[2001:db8::80]:8080"), big, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	nstest.Run(t, cli, "ping", "-c", "2", "-i", "0.2", "-s", "300", "-I", "203.0.113.10", "203.0.113.80")
	rep := replay(t, stop())
	// Per TCP connection at least the request and the echo carry payload;
	// per UDP flow both datagrams; the pings' 4 packets.
	if want := uint64(11*2 + 10*2 + 4); rep.PayloadNotCaptured < want {
		t.Errorf("payload not captured in %d frames, want at least %d", rep.PayloadNotCaptured, want)
	}
	if rep.Connections < 11+10+1 {
		t.Errorf("%d connections, want at least 22", rep.Connections)
	}
	if min := uint64(11*2*1500 + 10*2*500); rep.Bytes < min {
		t.Errorf("%d bytes: the original lengths were not counted (want over %d)", rep.Bytes, min)
	}
}

// TestTcpdumpCookedAndLoopback: captures on Linux's "any" pseudo-interface
// (cooked SLL2 by default, SLL with -y) and on the loopback interface
// replay with every frame decoded.
func TestTcpdumpCookedAndLoopback(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		link string
	}{
		{"any", []string{"-i", "any"}, ""},
		{"any-sll", []string{"-i", "any", "-y", "LINUX_SLL"}, "Linux SLL"},
		{"lo", []string{"-i", "lo"}, "Ethernet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, srv, clients := simPair(t)
			stop := tcpdump(t, srv, tc.args...)
			nstest.Echo(t, srv, ":8080", ":5353")
			conns := 0
			for _, a := range clients[:5] {
				remote, local := netip.MustParseAddrPort("203.0.113.80:8080"), a
				ns := cli
				if tc.name == "lo" {
					remote, local, ns = netip.MustParseAddrPort("127.0.0.1:8080"), netip.MustParseAddr("127.0.0.1"), srv
				}
				if _, err := ns.Exchange("tcp", local, remote, []byte("hello"), 5*time.Second); err != nil {
					t.Fatal(err)
				}
				conns++
			}
			rep := replay(t, stop())
			if tc.link != "" && (len(rep.LinkTypes) != 1 || rep.LinkTypes[0] != tc.link) {
				t.Errorf("link types %v, want %s", rep.LinkTypes, tc.link)
			}
			if rep.Connections < uint64(conns) {
				t.Errorf("%d connections, want at least %d", rep.Connections, conns)
			}
		})
	}
}

// TestTcpdumpCapture records real kernel traffic (TCP from 20 client
// addresses, UDP, ICMP echo, IPv4 and IPv6) with tcpdump between two
// namespaces, replays the capture and checks every connection lands on the
// node cluster.Match names, each packet owned by exactly one node.
func TestTcpdumpCapture(t *testing.T) {
	cli, srv, clients := simPair(t)
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
