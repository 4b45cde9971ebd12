// Command tcp is the real-traffic benchmark (make bench-tcp, root): TCP
// through a 3-node cluster in network namespaces (internal/netns.Cluster),
// measured with iperf3 as a user would. 1,500-byte frames (MTU 1500
// everywhere), TSO, GSO and GRO off on the client's and the server's
// interfaces (checksum offload off too, as the Cluster sets it), GRO on
// the switch-side peers of the node veths (the fast path's XDP_REDIRECT
// into a veth needs its peer to run NAPI).
//
// Traffic per run: 6 client source addresses, 2 streams each, to 6 iperf3
// servers in the server namespace (iperf3 -c -B <src> -P 2 -t 10 --json,
// all at once), then one 50 MB download (server -> client, one stream,
// iperf3 -R -n 50M). The sources are picked so each node owns two.
//
// Scenarios, each run --runs times (medians): the kernel with the
// iptables man page's `-m cluster` recipe on all 3 nodes; xdpcluster
// gateways with the defaults (on these veths io auto takes raw sockets,
// with the fast path as a tc program; default rings); with fast_path off
// (AF_XDP); and with dataplane.io afxdp, where the fast path runs in XDP
// and AF_XDP is the slow path. The nodes' neighbour tables start cold in every run (no
// static entries; flushed before it), so the first packets to a client
// and to the server meet an unresolved neighbour.
//
// It reports the receiver-side Gb/s (sum of the streams), iperf3's
// retransmits, the download's Gb/s and, per node, what each path did with
// the packets: AF_XDP ring drops, the workers' verdicts (no_neighbour,
// forwarded_kernel...), the XDP fast path's forwarded/foreign and the
// reasons it handed frames to the slow path; for the kernel, its FORWARD
// counter and the recipe's DROP rule.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	harness "github.com/xdpcluster/xdpcluster/bench"
	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/dataplane/xsk"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/node"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

const (
	seed     = 0xdeadbeef
	nodes    = 3
	sources  = 6 // client source addresses
	streams  = 2 // TCP streams per source
	basePort = 5201
	mtu      = 1500
)

// scenario is one way of running the three nodes.
type scenario struct {
	key, name string
	kernel    bool
	fast      dataplane.FastPath
	io        dataplane.IO // "": the default (auto)
	// mode is a part of the gateways' mode (ctl status) its name promises
	// with xdp_mode auto; a run that gets another fails.
	mode string
}

var scenarios = []scenario{
	{key: "kernel", name: "kernel, man-page -m cluster recipe", kernel: true},
	// The default: on these veths, raw sockets with the fast path in tc.
	{key: "auto", name: "xdpcluster, defaults (fast path in tc)", fast: dataplane.FastPathAuto, mode: "fast path in tc"},
	{key: "off", name: "xdpcluster, fast_path off (AF_XDP)", fast: dataplane.FastPathOff, mode: "afxdp"},
	{key: "afxdp", name: "xdpcluster, io afxdp (fast path in XDP)", fast: dataplane.FastPathAuto, io: dataplane.IOAFXDP, mode: "afxdp"},
}

// must and run are the harnesses' shared helpers: a failure is a
// harness.Fatal, which main recovers after cleaning up.
var (
	must = harness.Must
	run  = harness.Run
)

// iperfResult is the part of iperf3's --json output the harness reads.
type iperfResult struct {
	End struct {
		SumSent struct {
			Bytes       uint64  `json:"bytes"`
			Retransmits uint64  `json:"retransmits"`
			Seconds     float64 `json:"seconds"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         uint64  `json:"bytes"`
			Seconds       float64 `json:"seconds"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// parseIperf reads one iperf3 --json report; a report that says it
// failed, or measured nothing, is an error.
func parseIperf(b []byte) (iperfResult, error) {
	var r iperfResult
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("iperf3 --json output: %w", err)
	}
	if r.Error != "" {
		return r, fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived.Seconds <= 0 || r.End.SumReceived.Bytes == 0 {
		return r, errors.New("iperf3: the report has no received bytes (end.sum_received)")
	}
	return r, nil
}

// pickSources returns perNode addresses owned by each of the total nodes
// (in the order of addrs), so the load is spread evenly; an error if addrs
// does not have enough for some node.
func pickSources(addrs []netip.Addr, total, perNode int) ([]netip.Addr, error) {
	m := cluster.LocalNode(uint32(total), 1, seed)
	count := make([]int, total)
	var out []netip.Addr
	for _, a := range addrs {
		n := m.Node(a)
		if n < total && count[n] < perNode {
			count[n]++
			out = append(out, a)
		}
	}
	if len(out) != total*perNode {
		return nil, fmt.Errorf("%d client addresses hold only %v sources per node, want %d each", len(addrs), count, perNode)
	}
	return out, nil
}

// nodeCounters are one node's counters at one moment (xdpcluster: the
// gateway's; kernel: its iptables counters).
type nodeCounters struct {
	workers                               [dataplane.NumVerdicts]uint64
	rxDropped, rxFillEmpty, fillRingEmpty uint64
	fast                                  xsk.FastStats
	fastOn                                bool
	kForwarded, kDropped                  uint64
	// vethDrops are the frames the switch could not hand to the node: its
	// ports' (swfN, swbN) tx_dropped, the node's veth receive ring full
	// (256 frames when the node's veth runs NAPI, as it does with an XDP
	// program attached; the CPU's backlog otherwise).
	vethDrops uint64
}

func (c nodeCounters) sub(o nodeCounters) nodeCounters {
	d := c
	for v := range d.workers {
		d.workers[v] -= o.workers[v]
	}
	d.rxDropped -= o.rxDropped
	d.rxFillEmpty -= o.rxFillEmpty
	d.fillRingEmpty -= o.fillRingEmpty
	d.fast.Forwarded -= o.fast.Forwarded
	d.fast.Foreign -= o.fast.Foreign
	for r := range d.fast.Slow {
		d.fast.Slow[r] -= o.fast.Slow[r]
	}
	d.kForwarded -= o.kForwarded
	d.kDropped -= o.kDropped
	d.vethDrops -= o.vethDrops
	return d
}

// ringDrops are the frames lost at the receive rings (AF_XDP, or raw
// sockets: their PACKET_STATISTICS drops); for AF_XDP the kernel's
// rx_dropped (RX ring full or fill ring empty; a frame lost to an empty
// fill ring is also counted in rx_fill_ring_empty, so that one is not
// added).
func (c nodeCounters) ringDrops() uint64 { return c.rxDropped }

func (c nodeCounters) String(kernel bool) string {
	if kernel {
		return fmt.Sprintf("veth ring drops %d; kernel forwarded %d, dropped by the recipe (another node's) %d", c.vethDrops, c.kForwarded, c.kDropped)
	}
	var ws []string
	for v, n := range c.workers {
		if n != 0 {
			ws = append(ws, fmt.Sprintf("%s=%d", dataplane.Verdict(v), n))
		}
	}
	s := fmt.Sprintf("veth ring drops %d; socket ring rx_dropped %d (AF_XDP or raw), rx_fill_ring_empty %d (our fill ring found full/empty %d); workers: no_neighbour %d, forwarded_kernel %d [%s]",
		c.vethDrops, c.rxDropped, c.rxFillEmpty, c.fillRingEmpty, c.workers[dataplane.NoNeighbour], c.workers[dataplane.ForwardedKernel], strings.Join(ws, " "))
	if c.fastOn {
		var rs []string
		for r, n := range c.fast.Slow {
			if n != 0 {
				rs = append(rs, fmt.Sprintf("%s=%d", xsk.SlowReasonNames[r], n))
			}
		}
		s += fmt.Sprintf("; fast path forwarded %d, foreign %d, to the slow path [%s]", c.fast.Forwarded, c.fast.Foreign, strings.Join(rs, " "))
	}
	return s
}

// bench is the topology of one scenario and what runs on it.
type bench struct {
	ctx      context.Context
	sc       scenario
	cl       *netns.Cluster
	sources  []netip.Addr
	servers  []*exec.Cmd
	gws      []*gateway.Gateway
	log      *slog.Logger
	duration time.Duration
	download string
	xdpMode  bpfutil.AttachMode
}

// setup builds the cluster and starts the iperf3 servers; on a failure
// (a panic with fatal) b holds what to clean up.
func (b *bench) setup() {
	cl, err := netns.NewCluster("xcbt", netns.ClusterOptions{Nodes: nodes, Clients4: 20, Clients6: 1})
	b.cl = cl
	must(err)
	sc := b.sc
	b.sources, err = pickSources(cl.Clients4, nodes, sources/nodes)
	must(err)
	for _, end := range []*netns.NS{cl.Client, cl.Server} {
		// Segments of one MTU on the wire, none merged on receive: what a
		// router sees from hosts without offloads. tx (checksum) stays
		// off, as the Cluster sets it.
		run(end, "ethtool", "-K", "eth0", "tso", "off", "gso", "off", "gro", "off")
	}
	b.checkMTU()
	if sc.kernel {
		for i, ns := range cl.Nodes {
			kernelRecipe(ns, cl, i+1)
		}
		// The man page answers ARP for the cluster address with the
		// cluster MAC (arptables); here the two ends know it statically.
		// The nodes' own tables stay cold.
		run(cl.Client, "ip", "neigh", "replace", cl.ClusterFront4.String(), "lladdr", cl.FrontMAC.String(), "dev", "eth0", "nud", "permanent")
		run(cl.Server, "ip", "neigh", "replace", cl.ClusterBack4.String(), "lladdr", cl.BackMAC.String(), "dev", "eth0", "nud", "permanent")
	}
	for i := range b.sources {
		cmd := exec.Command("ip", "netns", "exec", cl.Server.Name, "iperf3", "-s", "-p", strconv.Itoa(basePort+i))
		must(cmd.Start())
		b.servers = append(b.servers, cmd)
	}
	// Wait until every server listens.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := run(cl.Server, "ss", "-ltnH")
		n := 0
		for i := range b.sources {
			if strings.Contains(out, ":"+strconv.Itoa(basePort+i)+" ") {
				n++
			}
		}
		if n == len(b.sources) {
			break
		}
		if time.Now().After(deadline) {
			must(fmt.Errorf("iperf3 servers in %s: %d of %d listening after 5 s", cl.Server.Name, n, len(b.sources)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkMTU refuses to measure with another MTU than 1500 anywhere.
func (b *bench) checkMTU() {
	for _, ns := range append([]*netns.NS{b.cl.Client, b.cl.Server, b.cl.Switch}, b.cl.Nodes...) {
		for _, l := range strings.Split(run(ns, "ip", "-o", "link", "show"), "\n") {
			f := strings.Fields(l)
			for i := 0; i+1 < len(f); i++ {
				if f[i] == "mtu" && f[i+1] != strconv.Itoa(mtu) && !strings.HasPrefix(f[1], "lo:") {
					must(fmt.Errorf("%s in %s: mtu %s, want %d", strings.TrimSuffix(f[1], ":"), ns.Name, f[i+1], mtu))
				}
			}
		}
	}
}

func (b *bench) close() {
	b.stopGateways()
	for _, s := range b.servers {
		s.Process.Kill()
		s.Wait()
	}
	if b.cl != nil {
		if err := b.cl.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench-tcp: cleanup:", err)
		}
	}
}

// kernelRecipe configures node local (1-based) as the iptables man page
// does: the kernel forwards (the Cluster turned it on), the node listens
// to the cluster MACs, -m cluster marks its share, the rest is dropped.
// IPv4 only: the benchmark sends nothing else.
func kernelRecipe(ns *netns.NS, cl *netns.Cluster, local int) {
	run(ns, "ip", "maddr", "add", cl.FrontMAC.String(), "dev", "front")
	run(ns, "ip", "maddr", "add", cl.BackMAC.String(), "dev", "back")
	opts := fmt.Sprintf("--cluster-total-nodes %d --cluster-local-node %d --cluster-hash-seed %#x", nodes, local, seed)
	rules := "*mangle\n"
	for _, dev := range []string{"front", "back"} {
		rules += fmt.Sprintf("-A PREROUTING -i %s -m cluster %s -j MARK --set-mark 0xffff\n", dev, opts)
		rules += fmt.Sprintf("-A PREROUTING -i %s -m mark ! --mark 0xffff -j DROP\n", dev)
	}
	rules += "COMMIT\n*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"
	_, err := ns.RunStdin(rules, "iptables-restore")
	must(err)
	run(ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0")
}

// startGateways starts xdpcluster on every node (default configuration
// but the fast path setting; the cluster addresses answered by the
// gateways' ARP responders).
func (b *bench) startGateways() {
	cl := b.cl
	for i, ns := range cl.Nodes {
		ifs := []node.Interface{
			{Name: "front", ClusterMAC: cl.FrontMAC, IPv4: []netip.Addr{cl.ClusterFront4}, IPv6: []netip.Addr{cl.ClusterFront6}},
			{Name: "back", ClusterMAC: cl.BackMAC, IPv4: []netip.Addr{cl.ClusterBack4}, IPv6: []netip.Addr{cl.ClusterBack6}},
		}
		var g *gateway.Gateway
		must(ns.Do(func() (err error) {
			g, err = gateway.Start(gateway.Config{
				Interfaces: ifs,
				Match:      cluster.LocalNode(nodes, uint32(i+1), seed),
				FastPath:   b.sc.fast,
				XDPMode:    b.xdpMode,
				IO:         b.sc.io,
				Logger:     b.log,
			})
			if err != nil {
				return fmt.Errorf("node %d: %w", i+1, err)
			}
			return nil
		}))
		b.gws = append(b.gws, g)
		if m := g.Modes(); b.sc.mode != "" && b.xdpMode == bpfutil.ModeAuto && !strings.Contains(m[0], b.sc.mode) {
			must(fmt.Errorf("node %d: %q runs %q, not what its name says", i+1, b.sc.name, m[0]))
		}
		if on, want := g.FlowCache() != nil, b.sc.fast != dataplane.FastPathOff; on != want {
			must(fmt.Errorf("node %d: fast path on = %v, want %v (%s)", i+1, on, want, g.FastPathReason()))
		}
	}
}

func (b *bench) stopGateways() {
	for _, g := range b.gws {
		if err := g.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench-tcp: stop gateway:", err)
		}
	}
	b.gws = nil
}

// counters reads every node's counters.
func (b *bench) counters() []nodeCounters {
	out := make([]nodeCounters, nodes)
	for i := range out {
		for _, port := range []string{"swf", "swb"} {
			v, err := strconv.ParseUint(run(b.cl.Switch, "cat", fmt.Sprintf("/sys/class/net/%s%d/statistics/tx_dropped", port, i+1)), 10, 64)
			must(err)
			out[i].vethDrops += v
		}
	}
	if b.sc.kernel {
		for i, ns := range b.cl.Nodes {
			out[i].kForwarded, out[i].kDropped = kernelCounters(ns)
		}
		return out
	}
	for i, g := range b.gws {
		c := &out[i]
		c.workers, _, _ = g.Dataplane().Totals(-1)
		for _, ifc := range g.Dataplane().Ifaces() {
			for _, p := range ifc.Ports {
				st := p.Stats()
				c.rxDropped += st.RxDropped
				c.rxFillEmpty += st.RxFillEmpty
				c.fillRingEmpty += st.FillRingEmpty
			}
		}
		c.fastOn = g.FlowCache() != nil
		for _, p := range g.FastPrograms() {
			st, err := p.FastStats()
			must(err)
			c.fast.Forwarded += st.Forwarded
			c.fast.Foreign += st.Foreign
			for r := range st.Slow {
				c.fast.Slow[r] += st.Slow[r]
			}
		}
	}
	return out
}

// kernelCounters reads what the recipe's node forwarded (the FORWARD
// chain's policy counter) and dropped (the mangle DROP rules).
func kernelCounters(ns *netns.NS) (fwd, dropped uint64) {
	out := run(ns, "iptables", "-L", "FORWARD", "-v", "-x", "-n")
	i := strings.Index(out, "policy ACCEPT")
	if i < 0 {
		must(fmt.Errorf("iptables FORWARD in %s: no policy counter in %q", ns.Name, out))
	}
	if _, err := fmt.Sscanf(out[i:], "policy ACCEPT %d packets", &fwd); err != nil {
		must(fmt.Errorf("iptables FORWARD in %s: %w in %q", ns.Name, err, out))
	}
	for _, l := range strings.Split(run(ns, "iptables", "-t", "mangle", "-L", "PREROUTING", "-v", "-x", "-n"), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[2] == "DROP" {
			n, err := strconv.ParseUint(f[0], 10, 64)
			must(err)
			dropped += n
		}
	}
	return fwd, dropped
}

// backlogDrops sums the second column of /proc/net/softnet_stat: packets
// the kernel dropped because a CPU's input backlog (netdev_max_backlog)
// was full, machine-wide.
func backlogDrops() uint64 {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	must(err)
	var n uint64
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			v, err := strconv.ParseUint(f[1], 16, 64)
			must(err)
			n += v
		}
	}
	return n
}

// sample is one run's measurement.
type sample struct {
	gbps        float64 // receiver side, sum of the streams
	retransmits uint64
	download    float64 // Gb/s of the single download, receiver side
	dlRetrans   uint64
	backlog     uint64         // the machine's backlog drops (softnet_stat) during the streams
	perNode     []nodeCounters // during the streams
	dlNode      []nodeCounters // during the download
}

// iperf runs one iperf3 client in the client namespace and parses its
// report.
func (b *bench) iperf(args ...string) (iperfResult, error) {
	cmd := exec.CommandContext(b.ctx, "ip", append([]string{"netns", "exec", b.cl.Client.Name, "iperf3", "--json"}, args...)...)
	out, err := cmd.Output()
	r, perr := parseIperf(out)
	if perr != nil {
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return r, fmt.Errorf("iperf3 %s: %w (%v) %s", strings.Join(args, " "), perr, err, strings.TrimSpace(string(ee.Stderr)))
			}
			return r, fmt.Errorf("iperf3 %s: %w (%v)", strings.Join(args, " "), perr, err)
		}
		return r, fmt.Errorf("iperf3 %s: %w", strings.Join(args, " "), perr)
	}
	return r, nil
}

// once is one run: cold neighbour tables, the nodes started (or their
// counters and connections reset), the streams, then the download.
func (b *bench) once() sample {
	cl := b.cl
	for _, ns := range append([]*netns.NS{cl.Client, cl.Server}, cl.Nodes...) {
		run(ns, "ip", "neigh", "flush", "all") // permanent entries stay
	}
	if b.sc.kernel {
		for _, ns := range cl.Nodes {
			run(ns, "conntrack", "-F")
			run(ns, "iptables", "-Z")
			run(ns, "iptables", "-t", "mangle", "-Z")
		}
	} else {
		b.startGateways()
		defer b.stopGateways()
	}
	srv := cl.Server4.String()
	c0 := b.counters()
	bl0 := backlogDrops()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		s       sample
		errs    []error
		secs    = strconv.Itoa(int(b.duration / time.Second))
		results = make([]iperfResult, len(b.sources))
	)
	for i, src := range b.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := b.iperf("-c", srv, "-p", strconv.Itoa(basePort+i), "-B", src.String(), "-P", strconv.Itoa(streams), "-t", secs)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("source %s: %w", src, err))
			}
			results[i] = r
		}()
	}
	wg.Wait()
	must(errors.Join(errs...))
	for _, r := range results {
		s.gbps += r.End.SumReceived.BitsPerSecond / 1e9
		s.retransmits += r.End.SumSent.Retransmits
	}
	c1 := b.counters()
	s.backlog = backlogDrops() - bl0
	dl, err := b.iperf("-c", srv, "-p", strconv.Itoa(basePort), "-B", b.sources[0].String(), "-R", "-n", b.download)
	must(err)
	s.download, s.dlRetrans = dl.End.SumReceived.BitsPerSecond/1e9, dl.End.SumSent.Retransmits
	c2 := b.counters()
	for i := range c0 {
		s.perNode = append(s.perNode, c1[i].sub(c0[i]))
		s.dlNode = append(s.dlNode, c2[i].sub(c1[i]))
	}
	return s
}

// result is a scenario's runs.
type result struct {
	sc      scenario
	samples []sample
	owners  []int // 0-based owner of each source
}

func (r result) stat(f func(sample) float64) (lo, mid, hi float64) {
	return harness.Spread(r.samples, f)
}

// installIperf installs iperf3 with apt-get when it is missing.
func installIperf() error {
	if _, err := exec.LookPath("iperf3"); err == nil {
		return nil
	}
	fmt.Fprintln(os.Stderr, "bench-tcp: iperf3 is not installed; installing the Debian package iperf3 with apt-get")
	install := func() error {
		cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "iperf3")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install iperf3: %w: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := install(); err != nil {
		if out, uerr := exec.Command("apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
			return fmt.Errorf("%w; apt-get update: %v: %s", err, uerr, strings.TrimSpace(string(out)))
		}
		if err := install(); err != nil {
			return err
		}
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		return fmt.Errorf("iperf3 still not found after apt-get install: %w", err)
	}
	return nil
}

func main() { os.Exit(realMain()) }

func realMain() (code int) {
	runs := flag.Int("runs", 3, "runs per scenario (medians)")
	dur := flag.Duration("duration", 10*time.Second, "length of the streams of each run (whole seconds)")
	download := flag.String("download", "50M", "size of the single download of each run (iperf3 -n)")
	smoke := flag.Bool("smoke", false, "one short run per scenario (1 run, 2 s), to check the harness works")
	only := flag.String("only", "", "run only the scenarios with these keys, comma-separated: kernel, auto, off, afxdp")
	xdpMode := flag.String("xdp-mode", "auto", "an experiment: the gateways' dataplane.xdp_mode (auto: the default, generic on veth; native; generic)")
	flag.Parse()
	mode, err := bpfutil.ParseAttachMode(*xdpMode)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-tcp: --xdp-mode %q: %v\n", *xdpMode, err)
		return 2
	}
	if *smoke {
		*runs, *dur = 1, 2*time.Second
	}
	if *runs < 1 || *dur < time.Second || *dur%time.Second != 0 {
		fmt.Fprintf(os.Stderr, "bench-tcp: --runs %d --duration %v: want at least 1 run of whole seconds (at least 1 s)\n", *runs, *dur)
		return 2
	}
	var todo []scenario
	for _, sc := range scenarios {
		if *only == "" || strings.Contains(","+*only+",", ","+sc.key+",") {
			todo = append(todo, sc)
		}
	}
	if len(todo) == 0 {
		fmt.Fprintf(os.Stderr, "bench-tcp: --only %q: want a comma-separated list of kernel, auto, off, afxdp\n", *only)
		return 2
	}
	if err := netns.Available(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-tcp needs root: it builds network namespaces and loads XDP programs:", err)
		return 1
	}
	for _, tool := range []string{"iptables-restore", "conntrack", "ethtool", "ss"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintln(os.Stderr, "bench-tcp needs", tool, "(make deps installs it)")
			return 1
		}
	}
	if err := installIperf(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-tcp needs iperf3 and could not install it:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var b *bench
	defer harness.Recover("bench-tcp", &code, func() {
		if b != nil {
			b.close()
		}
	})
	var results []result
	for _, sc := range todo {
		b = &bench{ctx: ctx, sc: sc, duration: *dur, download: *download, xdpMode: mode, log: log}
		b.setup()
		r := result{sc: sc}
		m := cluster.LocalNode(nodes, 1, seed)
		for _, a := range b.sources {
			r.owners = append(r.owners, m.Node(a))
		}
		for i := 0; i < *runs; i++ {
			if ctx.Err() != nil {
				must(fmt.Errorf("interrupted"))
			}
			s := b.once()
			r.samples = append(r.samples, s)
			fmt.Fprintf(os.Stderr, "%-40s run %d: %.2f Gb/s, %d retransmits; download %.2f Gb/s\n", sc.name, i+1, s.gbps, s.retransmits, s.download)
		}
		results = append(results, r)
		b.close()
		b = nil
	}
	report(results, *runs, *dur, *download)
	if err := check(results); err != nil {
		fmt.Fprintln(os.Stderr, "bench-tcp:", err)
		return 1
	}
	return 0
}

// check fails what never depends on the machine's load: a packet dropped
// for want of a resolved neighbour (the workers hand those to the
// kernel), or a fast path that carried nothing.
func check(results []result) error {
	var errs []error
	for _, r := range results {
		for k, s := range r.samples {
			for i := range s.perNode {
				for _, c := range []nodeCounters{s.perNode[i], s.dlNode[i]} {
					if n := c.workers[dataplane.NoNeighbour]; n != 0 {
						errs = append(errs, fmt.Errorf("%s, run %d, node %d: %d packets dropped as no_neighbour, want 0 (handed to the kernel)", r.sc.name, k+1, i+1, n))
					}
				}
			}
			if r.sc.kernel || r.sc.fast == dataplane.FastPathOff {
				continue
			}
			var fwd uint64
			for i := range s.perNode {
				fwd += s.perNode[i].fast.Forwarded
			}
			if fwd == 0 {
				errs = append(errs, fmt.Errorf("%s, run %d: the fast path forwarded nothing", r.sc.name, k+1))
			}
		}
	}
	return errors.Join(errs...)
}

// report prints the summary table, the per-node counters of every run
// and the ratios.
func report(results []result, runs int, dur time.Duration, download string) {
	fmt.Printf("\nTCP through a %d-node cluster: %d sources × %d streams, %v, MTU %d, TSO/GSO/GRO off at the ends; %d run(s) per scenario\n",
		nodes, sources, streams, dur, mtu, runs)
	if len(results) > 0 {
		var ss []string
		for i, o := range results[0].owners {
			ss = append(ss, fmt.Sprintf("source %d -> node %d", i+1, o+1))
		}
		fmt.Println("owners:", strings.Join(ss, ", "))
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "scenario\tGb/s min\tmedian\tmax\tretransmits (median)\t%s download Gb/s (median)\tveth ring drops (median)\tbacklog drops (median)\tAF_XDP ring drops (max per run)\tno_neighbour (max)\tforwarded_kernel (median)\t\n", download)
	med := map[string]float64{}
	dlMed := map[string]float64{}
	for _, r := range results {
		lo, mid, hi := r.stat(func(s sample) float64 { return s.gbps })
		_, rt, _ := r.stat(func(s sample) float64 { return float64(s.retransmits) })
		_, dl, _ := r.stat(func(s sample) float64 { return s.download })
		_, fk, _ := r.stat(func(s sample) float64 {
			var n uint64
			for i := range s.perNode {
				n += s.perNode[i].workers[dataplane.ForwardedKernel] + s.dlNode[i].workers[dataplane.ForwardedKernel]
			}
			return float64(n)
		})
		_, vd, _ := r.stat(func(s sample) float64 {
			var n uint64
			for i := range s.perNode {
				n += s.perNode[i].vethDrops
			}
			return float64(n)
		})
		_, bl, _ := r.stat(func(s sample) float64 { return float64(s.backlog) })
		var drops, nn uint64
		for _, s := range r.samples {
			var d, n uint64
			for i := range s.perNode {
				d += s.perNode[i].ringDrops() + s.dlNode[i].ringDrops()
				n += s.perNode[i].workers[dataplane.NoNeighbour] + s.dlNode[i].workers[dataplane.NoNeighbour]
			}
			drops, nn = max(drops, d), max(nn, n)
		}
		med[r.sc.key], dlMed[r.sc.key] = mid, dl
		dash := func(v float64) string {
			if r.sc.kernel {
				return "-"
			}
			return fmt.Sprintf("%.0f", v)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.0f\t%.2f\t%.0f\t%.0f\t%s\t%s\t%s\t\n", r.sc.name, lo, mid, hi, rt, dl, vd, bl, dash(float64(drops)), dash(float64(nn)), dash(fk))
	}
	tw.Flush()
	for _, r := range results {
		fmt.Printf("\n%s, per node and run (streams | download):\n", r.sc.name)
		for k, s := range r.samples {
			for i := range s.perNode {
				fmt.Printf("  run %d node %d: %s | %s\n", k+1, i+1, s.perNode[i].String(r.sc.kernel), s.dlNode[i].String(r.sc.kernel))
			}
		}
	}
	if k := med["kernel"]; k > 0 {
		fmt.Println()
		for _, sc := range scenarios {
			x, ok := med[sc.key]
			if !ok || sc.kernel {
				continue
			}
			verdict := "NOT met"
			if x >= k {
				verdict = "met"
			}
			fmt.Printf("%s / kernel: %.2f× streams (must ≥ 1: %s; target 1.5), %.2f× download\n", sc.name, x/k, verdict, dlMed[sc.key]/dlMed["kernel"])
		}
	}
}
