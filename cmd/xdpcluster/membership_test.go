package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// The self-managing cluster's proof (issue 16), through the binary: three
// gateway daemons in namespaces with a management bridge for their
// gossip, the client/server topology of the end-to-end tests, long-lived
// TCP connections and UDP flows from every client address (so owned by
// every node), through a kill -9, a restart with a state resync, a
// partition of the management network and a link failure.

const (
	mbTotal   = 6 // buckets: two per node, so a failed node's spread
	mbSeed    = 0xdeadbeef
	mbTCPPort = 5001
	mbUDPPort = 5002
	mbSink    = 5003 // the exactly-once counter's port
)

// mbHome is node i's (0-based) home share: buckets 2i and 2i+1.
func mbHome(i int) uint32 { return 3 << (2 * i) }

// mbNode is one daemon of the cluster.
type mbNode struct {
	i          int
	ns         *netns.NS
	cfg, sock  string
	p          *proc
	bin        string
	secretFile string
	client     *daemon.Client // one, so its connections are reused
}

func (n *mbNode) start(t *testing.T) { n.p = startRun(t, n.ns, n.bin, n.cfg) }

func (n *mbNode) status() (daemon.Status, error) {
	if n.client == nil {
		n.client = daemon.NewClient(n.sock)
	}
	return n.client.Do("GET", "/status")
}

// mbConfig writes node i's configuration: its home share, the
// membership section naming the other nodes.
func mbConfig(t *testing.T, cl *netns.Cluster, dir string, i int, secretFile string) (path, sock string) {
	path, sock = writeGatewayConfig(t, cl, dir,
		fmt.Sprintf("  total_nodes: %d\n  local_nodemask: %#x\n  hash_seed: %#x\n", mbTotal, mbHome(i), mbSeed),
		mbSizes+membershipYAML(cl, i, secretFile, ""))
	// Metrics on the node namespace's own loopback (mbMetrics reads them).
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data = []byte(strings.Replace(string(data), "  listen: \"\"\n", "  listen: \"127.0.0.1:9477\"\n", 1))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, sock
}

// mbMetrics scrapes node n's metrics from inside its namespace and
// returns the value of each series by its text (name and labels).
func mbMetrics(t *testing.T, n *mbNode) map[string]float64 {
	t.Helper()
	lo := netip.MustParseAddr("127.0.0.1")
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return n.ns.Dial("tcp", lo, netip.AddrPortFrom(lo, 9477), 2*time.Second)
		}}}
	resp, err := c.Get("http://127.0.0.1:9477/metrics")
	if err != nil {
		t.Fatalf("node%d: scrape: %v", n.i+1, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = v
			}
		}
	}
	return out
}

// mbSizes is the conntrack and dataplane sizing of the membership and
// keepalived runs' gateway nodes.
const mbSizes = `conntrack:
  max_entries: 65536
dataplane:
  frames: 4096
`

// membershipYAML is node i's (0-based) membership section on cl's
// management network, joining every other node, with the extra keys
// (indented lines).
func membershipYAML(cl *netns.Cluster, i int, secretFile, extra string) string {
	var join []string
	for j, a := range cl.Mgmt4 {
		if j != i {
			join = append(join, fmt.Sprintf("%q", a.String()+":7946"))
		}
	}
	return fmt.Sprintf(`membership:
  bind: %s:7946
  join: [%s]
  secret_file: %s
  name: node%d
`, cl.Mgmt4[i], strings.Join(join, ", "), secretFile, i+1) + extra
}

// writeSecret writes the cluster's membership secret into a temp file and
// returns its path.
func writeSecret(t *testing.T) string {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(secret, []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return secret
}

// mbFlow is a long-lived TCP connection or UDP flow that sends a
// numbered message every interval and checks the echo of each. It
// records the longest time without a good echo and any corruption.
type mbFlow struct {
	name  string
	src   netip.Addr
	proto string
	c     net.Conn

	mu       sync.Mutex
	last     time.Time // the last good echo
	maxGap   time.Duration
	gapAt    time.Time // when the longest gap ended
	echoes   int
	err      error
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func startFlow(t *testing.T, cl *netns.Cluster, proto string, src netip.Addr, name string) *mbFlow {
	t.Helper()
	port := uint16(mbTCPPort)
	if proto == "udp" {
		port = mbUDPPort
	}
	c, err := cl.Client.Dial(proto, src, netip.AddrPortFrom(cl.Server4, port), 3*time.Second)
	if err != nil {
		t.Fatalf("flow %s: %v", name, err)
	}
	f := &mbFlow{name: name, src: src, proto: proto, c: c, last: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { f.halt() })
	go f.run()
	return f
}

func (f *mbFlow) run() {
	defer close(f.done)
	msg := make([]byte, 64)
	got := make([]byte, 64)
	var seq uint64
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-tick.C:
		}
		seq++
		binary.BigEndian.PutUint64(msg, seq)
		copy(msg[8:], f.name)
		if f.proto == "tcp" {
			// TCP: write and read the echo back in order; a write
			// that cannot go is TCP's problem (retransmission), so the
			// read simply waits.
			f.c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := f.c.Write(msg); err != nil {
				f.fail(fmt.Errorf("write %d: %w", seq, err))
				return
			}
			if _, err := io.ReadFull(f.c, got); err != nil {
				f.fail(fmt.Errorf("read echo %d: %w", seq, err))
				return
			}
			if !bytes.Equal(got, msg) {
				f.fail(fmt.Errorf("echo %d corrupted: %x", seq, got[:16]))
				return
			}
			f.good()
			continue
		}
		// UDP: a datagram may be lost; an echo of this or an older
		// datagram counts (never a corrupted one).
		f.c.Write(msg)
		f.c.SetReadDeadline(time.Now().Add(40 * time.Millisecond))
		for {
			n, err := f.c.Read(got)
			if err != nil {
				break
			}
			if n != 64 || binary.BigEndian.Uint64(got) > seq || !bytes.Equal(got[8:], msg[8:]) {
				f.fail(fmt.Errorf("udp echo corrupted: %x", got[:n]))
				return
			}
			f.good()
		}
	}
}

func (f *mbFlow) good() {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if g := now.Sub(f.last); g > f.maxGap {
		f.maxGap, f.gapAt = g, now
	}
	f.last = now
	f.echoes++
}

func (f *mbFlow) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *mbFlow) halt() {
	f.stopOnce.Do(func() { close(f.stop) })
	f.c.Close()
	<-f.done
}

// state returns the flow's error, its longest gap so far and the time
// since its last good echo, and resets the longest gap.
func (f *mbFlow) state() (err error, maxGap, since time.Duration, echoes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	err, maxGap, since, echoes = f.err, f.maxGap, time.Since(f.last), f.echoes
	f.maxGap = 0
	return
}

// checkFlows fails the test for any flow that broke, corrupted data, has
// not echoed within stall, or whose longest gap since the last check
// exceeded maxGap. It returns the longest gap seen.
func checkFlows(t *testing.T, what string, flows []*mbFlow, maxGap, stall time.Duration) time.Duration {
	t.Helper()
	var worst time.Duration
	for _, f := range flows {
		err, gap, since, echoes := f.state()
		worst = max(worst, gap)
		switch {
		case err != nil:
			t.Errorf("%s: %s flow %s (from %s) broke: %v", what, f.proto, f.name, f.src, err)
		case since > stall:
			t.Errorf("%s: %s flow %s (from %s) stalled: no echo for %v (%d echoes in all)", what, f.proto, f.name, f.src, since.Round(time.Millisecond), echoes)
		case gap > maxGap:
			t.Errorf("%s: %s flow %s (from %s) paused for %v (more than %v)", what, f.proto, f.name, f.src, gap.Round(time.Millisecond), maxGap)
		}
	}
	return worst
}

// exactlyOnce sends count numbered datagrams from every client address
// to the sink and checks each arrived exactly once (dupOK: at least once,
// for a partition, where duplicates are the design).
func exactlyOnce(t *testing.T, cl *netns.Cluster, sink *nstest.Sink, what string, count int, dupOK bool) {
	t.Helper()
	lost, dup := sink.Probe(t, cl.Client, cl.Clients4, netip.AddrPortFrom(cl.Server4, mbSink), count)
	if lost != 0 || (!dupOK && dup != 0) {
		t.Errorf("%s: of %d datagrams from %d sources, %d lost and %d duplicated; want every one exactly once%s", what,
			count*len(cl.Clients4), len(cl.Clients4), lost, dup, map[bool]string{true: " or more (partition)"}[dupOK])
	} else {
		t.Logf("%s: %d datagrams from %d sources: %d lost, %d duplicated", what, count*len(cl.Clients4), len(cl.Clients4), lost, dup)
	}
}

func newSink(t *testing.T, cl *netns.Cluster) *nstest.Sink {
	return nstest.NewSink(t, cl.Server, netip.AddrPortFrom(cl.Server4, mbSink))
}

// settled reports whether the running nodes agree that each bucket is
// served by exactly one node, and serve accordingly; want, if not nil,
// names the server (1-based node) each bucket must have.
func settled(nodes []*mbNode, running []bool, want map[int]int) error {
	served := make([]int, mbTotal)
	for i, n := range nodes {
		if !running[i] {
			continue
		}
		st, err := n.status()
		if err != nil {
			return fmt.Errorf("node%d: %w", i+1, err)
		}
		m := st.Membership
		if m == nil || !m.Ready {
			return fmt.Errorf("node%d not ready (%+v)", i+1, m)
		}
		for b, servers := range m.Buckets {
			if len(servers) != 1 {
				return fmt.Errorf("node%d's view: bucket %d served by %v", i+1, b+1, servers)
			}
			if w, ok := want[b]; ok && servers[0] != fmt.Sprintf("node%d", w) {
				return fmt.Errorf("node%d's view: bucket %d served by %v, want node%d", i+1, b+1, servers, w)
			}
		}
		mask, err := cluster.ParseNumber(st.NodeMask)
		if err != nil {
			return fmt.Errorf("node%d: mask %q: %w", i+1, st.NodeMask, err)
		}
		match := cluster.Match{TotalNodes: mbTotal, NodeMask: uint32(mask), Invert: st.Invert}
		for b := 0; b < mbTotal; b++ {
			if match.OwnsNode(b) {
				served[b]++
			}
		}
	}
	for b, n := range served {
		if n != 1 {
			return fmt.Errorf("bucket %d: %d dataplanes serve it", b+1, n)
		}
	}
	return nil
}

// waitSettled waits until settled holds and returns how long it took.
func waitSettled(t *testing.T, what string, nodes []*mbNode, running []bool, want map[int]int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < timeout {
		if err = settled(nodes, running, want); err == nil {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, n := range nodes {
		if running[i] {
			t.Logf("node%d log:\n%s", i+1, n.p.logs())
		}
	}
	t.Fatalf("%s: not settled within %v: %v", what, timeout, err)
	return 0
}

func bitsSet(x uint32) (n int) {
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

// ownedFlows opens a TCP and a UDP flow from every client address node
// (1-based) owns.
func ownedFlows(t *testing.T, cl *netns.Cluster, node int, tag string) []*mbFlow {
	m := cluster.Match{TotalNodes: mbTotal, Seed: mbSeed}
	var out []*mbFlow
	for _, src := range cl.Clients4 {
		if m.Node(src)/2+1 == node {
			out = append(out, startFlow(t, cl, "tcp", src, tag+"-tcp-"+src.String()), startFlow(t, cl, "udp", src, tag+"-udp-"+src.String()))
		}
	}
	if len(out) == 0 {
		t.Fatalf("no client address owned by node %d", node)
	}
	return out
}

// TestMembershipFailoverFailback is issue 16's proof.
func TestMembershipFailoverFailback(t *testing.T) {
	nstest.Require(t)
	bin := buildBinary(t)
	cl := nstest.Cluster(t, "xc-mb", netns.ClusterOptions{Nodes: 3, Clients4: 24, Clients6: 1})
	nstest.Echo(t, cl.Server, fmt.Sprintf("%s:%d", cl.Server4, mbTCPPort), fmt.Sprintf("%s:%d", cl.Server4, mbUDPPort))
	sink := newSink(t, cl)
	secret := writeSecret(t)
	var nodes []*mbNode
	for i := range cl.Nodes {
		cfg, sock := mbConfig(t, cl, t.TempDir(), i, secret)
		nodes = append(nodes, &mbNode{i: i, ns: cl.Nodes[i], cfg: cfg, sock: sock, bin: bin, secretFile: secret})
	}
	for _, n := range nodes {
		n.start(t)
	}
	running := []bool{true, true, true}
	home := map[int]int{}
	for b := 0; b < mbTotal; b++ {
		home[b] = b/2 + 1
	}
	took := waitSettled(t, "start", nodes, running, home, 20*time.Second)
	t.Logf("cold start: settled %v after the daemons were started", took.Round(time.Millisecond))

	m := cluster.Match{TotalNodes: mbTotal, Seed: mbSeed}
	owned := map[int]int{}
	var flows []*mbFlow
	for _, src := range cl.Clients4 {
		owned[m.Node(src)/2+1]++
		flows = append(flows, startFlow(t, cl, "tcp", src, "old-tcp-"+src.String()), startFlow(t, cl, "udp", src, "old-udp-"+src.String()))
	}
	if owned[1] == 0 || owned[2] == 0 || owned[3] == 0 {
		t.Fatalf("client addresses by owner node %v: want every node to own some", owned)
	}
	time.Sleep(time.Second)
	checkFlows(t, "before the failure", flows, time.Second, time.Second)
	exactlyOnce(t, cl, sink, "before the failure", 50, false)

	// Kill -9 node 2: its buckets fall to the survivors, spread.
	killed := time.Now()
	nodes[1].p.cmd.Process.Kill()
	nodes[1].p.wait(t, 5*time.Second)
	running[1] = false
	waitSettled(t, "after node 2 was killed", nodes, running, nil, 10*time.Second)
	takeover := time.Since(killed)
	t.Logf("kill -9 node 2: its buckets served by the survivors %v after the kill (detection + takeover)", takeover.Round(time.Millisecond))
	// Spread: each survivor took one of node 2's two buckets.
	for _, i := range []int{0, 2} {
		st, err := nodes[i].status()
		if err != nil {
			t.Fatal(err)
		}
		mask, _ := cluster.ParseNumber(st.NodeMask)
		if st.Invert || uint32(mask)&mbHome(i) != mbHome(i) || bitsSet(uint32(mask)&mbHome(1)) != 1 {
			t.Errorf("node%d after node 2's failure serves mask %s (invert %v): want its home %#x and one of node 2's buckets %#x", i+1, st.NodeMask, st.Invert, mbHome(i), mbHome(1))
		}
	}
	// Under membership the mask is the assignment's: manual changes are refused.
	if _, err := daemon.NewClient(nodes[0].sock).Do("POST", "/takeover?node=3"); err == nil || !strings.Contains(err.Error(), "membership section manages") {
		t.Errorf("ctl takeover under membership: %v", err)
	}
	out, errOut, code := runCmd("", "ctl", "--socket", nodes[0].sock, "status")
	for _, want := range []string{"membership:  node1 (ready)", "MEMBER", "node2", "dead", "BUCKET", "SERVED BY"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("ctl status lacks %q (exit %d):\n%s%s", want, code, out, errOut)
		}
	}
	// The same for scripts: ctl status --json is the daemon's status.
	out, errOut, code = runCmd("", "ctl", "--socket", nodes[0].sock, "status", "--json")
	var js daemon.Status
	if err := json.Unmarshal([]byte(out), &js); code != 0 || err != nil || js.Membership == nil || js.Membership.Name != "node1" ||
		len(js.Membership.Buckets) != mbTotal || len(js.Membership.Members) != 3 {
		t.Errorf("ctl status --json (exit %d, %v): %+v\n%s%s", code, err, js.Membership, out, errOut)
	}
	time.Sleep(3 * time.Second)
	gap := checkFlows(t, "after the kill", flows, 3*time.Second, 2*time.Second)
	t.Logf("kill -9 node 2: longest pause of any flow %v", gap.Round(time.Millisecond))
	exactlyOnce(t, cl, sink, "node 2 down", 50, false)

	// During the outage, new long-lived connections, to node 2's share too.
	var during []*mbFlow
	for _, src := range cl.Clients4 {
		during = append(during, startFlow(t, cl, "tcp", src, "new-tcp-"+src.String()), startFlow(t, cl, "udp", src, "new-udp-"+src.String()))
	}
	time.Sleep(time.Second)
	flows = append(flows, during...)
	checkFlows(t, "opened during the outage", during, time.Second, time.Second)

	// Node 2 comes back: it resyncs, becomes ready, takes its buckets back;
	// every connection, old and new, goes on.
	nodes[1].start(t)
	running[1] = true
	back := waitSettled(t, "after node 2 restarted", nodes, running, home, 30*time.Second)
	t.Logf("restart of node 2: home buckets back %v after the start (start, join, resync, ready, hand-back)", back.Round(time.Millisecond))
	nodes[1].p.waitLog(t, "state resync done", time.Second)
	time.Sleep(3 * time.Second)
	gap = checkFlows(t, "after node 2 took its buckets back", flows, 3*time.Second, 2*time.Second)
	t.Logf("failback: longest pause of any flow %v (restart at +0, settled at +%v)", gap.Round(time.Millisecond), back.Round(time.Millisecond))
	exactlyOnce(t, cl, sink, "after failback", 50, false)
	// The membership's metrics, as Prometheus reads them from node 2.
	m2 := mbMetrics(t, nodes[1])
	for series, want := range map[string]float64{
		"xdpcluster_ready":                           1,
		`xdpcluster_members{state="alive"}`:          3,
		`xdpcluster_members{state="dead"}`:           0,
		"xdpcluster_members_ready":                   3,
		`xdpcluster_bucket_served{bucket="3"}`:       1,
		`xdpcluster_bucket_served{bucket="1"}`:       0,
		`xdpcluster_bucket_servers{bucket="1"}`:      1,
		`xdpcluster_resync_pulls_total{result="ok"}`: 1,
	} {
		if got, ok := m2[series]; !ok || got != want {
			t.Errorf("node 2's metrics: %s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	for _, series := range []string{"xdpcluster_resync_last_connections", "xdpcluster_resync_last_bytes", "xdpcluster_resync_last_duration_seconds"} {
		if m2[series] <= 0 {
			t.Errorf("node 2's metrics: %s = %v, want the last pull's (> 0)", series, m2[series])
		}
	}
	if _, ok := m2["xdpcluster_conntrack_picked_up_total"]; !ok {
		t.Error("node 2's metrics lack xdpcluster_conntrack_picked_up_total")
	}
	st2, err := nodes[1].status()
	if err != nil || st2.Membership == nil || st2.Membership.Resync.LastRecords == 0 {
		t.Errorf("node 2's status after its resync: %+v, %v", st2.Membership, err)
	} else {
		r := st2.Membership.Resync
		t.Logf("node 2's resync: %d connections, %d bytes in %v from %s", r.LastRecords, r.LastBytes, r.LastDuration, r.LastPeer)
	}

	// A partition of the management network: node 3 alone. Each side
	// serves what it cannot see served: duplicates, no losses.
	nstest.Run(t, cl.Switch, "ip", "link", "set", cl.MgmtPort(2), "down")
	time.Sleep(3 * time.Second)
	exactlyOnce(t, cl, sink, "during the partition", 50, true)
	checkFlows(t, "during the partition", flows, 3*time.Second, 2*time.Second)
	nstest.Run(t, cl.Switch, "ip", "link", "set", cl.MgmtPort(2), "up")
	healed := waitSettled(t, "after the partition healed", nodes, running, home, 30*time.Second)
	t.Logf("partition healed: settled %v after the link came back", healed.Round(time.Millisecond))
	time.Sleep(time.Second)
	exactlyOnce(t, cl, sink, "after the partition", 50, false)
	checkFlows(t, "after the partition", flows, 3*time.Second, 2*time.Second)

	// A node that restarts while its management network is down sees
	// nobody: like a first node it is ready alone (serving everything:
	// duplicates). When it meets its ready peers it resyncs before it
	// takes its share back, so the connections opened while it was gone
	// go on.
	nodes[2].p.cmd.Process.Kill()
	nodes[2].p.wait(t, 5*time.Second)
	running[2] = false
	waitSettled(t, "after node 3 was killed", nodes, running, nil, 10*time.Second)
	outage3 := ownedFlows(t, cl, 3, "outage3")
	nstest.Run(t, cl.Switch, "ip", "link", "set", cl.MgmtPort(2), "down")
	nodes[2].start(t)
	running[2] = true
	nodes[2].p.waitLog(t, "ready without a resync", 15*time.Second)
	time.Sleep(time.Second)
	nstest.Run(t, cl.Switch, "ip", "link", "set", cl.MgmtPort(2), "up")
	waitSettled(t, "node 3 back on the management network", nodes, running, home, 30*time.Second)
	nodes[2].p.waitLog(t, "state resync done", time.Second)
	flows = append(flows, outage3...)
	time.Sleep(3 * time.Second)
	checkFlows(t, "node 3 restarted alone, then resynced", flows, 3*time.Second, 2*time.Second)
	exactlyOnce(t, cl, sink, "after node 3's lonely restart", 50, false)

	// Health: node 1's front link goes down; it announces itself not
	// ready and its buckets are served by the others. Flows opened
	// meanwhile (node 1 sees only their replies, on back, and UDP ones it
	// tracks reversed) go on after it comes back: it resyncs before it is
	// ready again.
	nstest.Run(t, cl.Nodes[0], "ip", "link", "set", "front", "down")
	waitSettled(t, "node 1's link down", nodes, []bool{false, true, true}, nil, 10*time.Second)
	st, err := nodes[0].status()
	if err != nil || st.Membership == nil || st.Membership.Ready || !strings.Contains(st.Membership.Reason, "front") {
		t.Errorf("node 1 with its front link down: %+v, %v", st.Membership, err)
	}
	resyncsBefore := strings.Count(nodes[0].p.logs(), "state resync done")
	linkDown := ownedFlows(t, cl, 1, "linkdown")
	time.Sleep(time.Second)
	nstest.Run(t, cl.Nodes[0], "ip", "link", "set", "front", "up")
	waitSettled(t, "node 1's link up", nodes, running, home, 10*time.Second)
	flows = append(flows, linkDown...)
	time.Sleep(3 * time.Second)
	checkFlows(t, "node 1's link came back", flows, 3*time.Second, 2*time.Second)
	if n := strings.Count(nodes[0].p.logs(), "state resync done") - resyncsBefore; n != 1 {
		t.Errorf("node 1 resynced %d times after its link came back, want 1", n)
	}
	exactlyOnce(t, cl, sink, "after node 1's link came back", 50, false)

	for _, f := range flows {
		f.halt()
	}
	for _, f := range flows {
		if err, _, _, echoes := f.state(); err != nil && !errors.Is(err, net.ErrClosed) || echoes == 0 {
			if err != nil && strings.Contains(err.Error(), "use of closed") {
				continue
			}
			t.Errorf("%s flow %s: %v, %d echoes", f.proto, f.name, err, echoes)
		}
	}
	if t.Failed() {
		for i, n := range nodes {
			t.Logf("node%d log:\n%s", i+1, n.p.logs())
		}
	}
}
