package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/config"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
)

const demoDescription = `
Build a cluster in network namespaces on this machine and run it: a client
namespace and a server namespace, each behind its own Linux bridge, and
N node namespaces, each running a real xdpcluster (dataplane, ARP/ND
responder, metrics, control API; on these veths raw sockets with the
fast path in tc, or AF_XDP with the fast path in XDP with --io afxdp).
No static neighbour entries: the client and the server find the cluster
IPs through the nodes' ARP/ND answers. Real kernel TCP, UDP and ping traffic flows from many client
addresses (IPv4 and IPv6); a live table shows each node's share and rates,
and the cluster-wide duplicates and losses, which must be zero.

Everything is removed on Ctrl-C or after --duration. Needs root.`

// demoNode is one node of the demo.
type demoNode struct {
	ns      *netns.NS
	d       *daemon.Daemon
	metrics string
	sock    string
	flows   atomic.Uint64
}

func runDemo(e env, o *demoOptions) int {
	nodes, clients, duration, seedFlag, port := &o.nodes, &o.clients, &o.duration, &o.seed, &o.port
	if err := dataplane.IO(o.io).Validate(); err != nil || o.io == "" {
		fmt.Fprintf(e.stderr, "xdpcluster demo: --io %q: must be auto, afxdp or afpacket\n", o.io)
		return exitUsage
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(e.stderr, "xdpcluster demo builds network namespaces and attaches XDP programs, which needs root: run `sudo xdpcluster demo` (or `sudo make demo`).")
		return exitFail
	}
	for _, tool := range []string{"ip", "ethtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(e.stderr, "xdpcluster demo needs %s (apt-get install iproute2 ethtool)\n", tool)
			return exitFail
		}
	}
	if *nodes < 1 || *nodes > 8 || *clients < 1 || *clients > 200 {
		fmt.Fprintln(e.stderr, "xdpcluster demo: --nodes must be 1..8 and --clients 1..200")
		return exitUsage
	}
	seed, err := cluster.ParseNumber(*seedFlag)
	if err != nil || seed > 0xffffffff {
		fmt.Fprintf(e.stderr, "xdpcluster demo: --seed %q: must be a number 0..0xffffffff\n", *seedFlag)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// One random run name for all of this run's namespaces, so that
	// several demos (and their tests) on one host never mistake each
	// other's namespaces for their own.
	prefix := demoPrefix + netns.Suffix(6)
	fmt.Fprintf(e.stdout, "building %d nodes, a client and a server in network namespaces...\n", *nodes)
	fmt.Fprintf(e.stdout, "namespaces: %s-* (removed on exit)\n", prefix)
	cl, err := netns.NewCluster(prefix, netns.ClusterOptions{Nodes: *nodes, Clients4: *clients, Clients6: 4})
	if err != nil {
		fmt.Fprintf(e.stderr, "xdpcluster demo: %v\n", err)
		return exitFail
	}
	defer cl.Close()
	dir, err := os.MkdirTemp("", "xdpcluster-demo")
	if err != nil {
		fmt.Fprintf(e.stderr, "xdpcluster demo: %v\n", err)
		return exitFail
	}
	defer os.RemoveAll(dir)

	var ns []*demoNode
	defer func() {
		for _, n := range ns {
			n.d.Stop()
		}
	}()
	for i, nsn := range cl.Nodes {
		cfg := config.Defaults()
		cfg.Cluster = config.Cluster{TotalNodes: config.Number(*nodes), LocalNode: config.Number(i + 1), HashSeed: config.Number(seed), Hash: "xt_cluster"}
		// The servers never open connections: back refuses new ones, so a
		// node that drains back before front (and sees a UDP reply before
		// its request) cannot take the reply for a connection of its own.
		refuse := false
		cfg.Interfaces = []config.Interface{
			{Name: "front", ClusterMAC: cl.FrontMAC.String(), ClusterAddresses: []string{cl.ClusterFront4.String(), cl.ClusterFront6.String()}},
			{Name: "back", ClusterMAC: cl.BackMAC.String(), ClusterAddresses: []string{cl.ClusterBack4.String(), cl.ClusterBack6.String()}, NewConnections: &refuse},
		}
		cfg.Dataplane.IO = o.io
		cfg.Metrics.Listen = fmt.Sprintf("127.0.0.1:%d", *port+i)
		cfg.Control.Socket = fmt.Sprintf("%s/node%d.sock", dir, i+1)
		cfg.StateDir = fmt.Sprintf("%s/node%d.state", dir, i+1) // each node's own snapshot
		set, err := cfg.Settings()
		if err != nil {
			fmt.Fprintf(e.stderr, "xdpcluster demo: node %d: %v\n", i+1, err)
			return exitFail
		}
		n := &demoNode{ns: nsn, d: daemon.New("", set, log.With("node", i+1)), metrics: "http://" + cfg.Metrics.Listen + "/metrics", sock: cfg.Control.Socket}
		n.d.Version = version
		if err := n.d.ListenControl(); err != nil { // before the dataplane: a bad path changes nothing
			fmt.Fprintf(e.stderr, "xdpcluster demo: node %d: %v\n", i+1, err)
			return exitFail
		}
		ns = append(ns, n) // stopped on the way out, whatever happens next
		if err := nsn.Do(n.d.StartDataplane); err != nil {
			fmt.Fprintf(e.stderr, "xdpcluster demo: node %d: %v\n", i+1, err)
			return exitFail
		}
		if err := n.d.Serve(); err != nil { // metrics on the host's loopback
			fmt.Fprintf(e.stderr, "xdpcluster demo: node %d: %v\n", i+1, err)
			return exitFail
		}
		gw := n.d.Gateway()
		m, modes := gw.Dataplane().Match(), gw.Modes()
		fast := "fast path on"
		if gw.FlowCache() == nil {
			fast = "fast path off: " + gw.FastPathReason()
		}
		fmt.Fprintf(e.stdout, "node %d (netns %s): %s | front: %s | back: %s | %s | metrics %s | ctl --socket %s\n",
			i+1, nsn.Name, m, modes[0], modes[1], fast, n.metrics, n.sock)
	}
	stopServers, err := cl.Server.EchoServers(":8080", ":5353")
	if err != nil {
		fmt.Fprintf(e.stderr, "xdpcluster demo: server: %v\n", err)
		return exitFail
	}
	defer stopServers()
	match := cluster.LocalNode(uint32(*nodes), 1, uint32(seed))
	var clientErrs atomic.Uint64
	var wg sync.WaitGroup
	if *duration > 0 { // of traffic: building the namespaces does not count
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	traffic, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	addrs := append(append([]netip.Addr(nil), cl.Clients4...), cl.Clients6...)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; traffic.Err() == nil; i += 4 {
				a := addrs[i%len(addrs)]
				if err := demoFlow(cl, a, i); err != nil {
					if traffic.Err() == nil {
						clientErrs.Add(1)
					}
					continue
				}
				ns[match.Node(a)].flows.Add(1)
			}
		}(w)
	}
	fmt.Fprintf(e.stdout, "\ntraffic: TCP echo and UDP from %d client addresses to %s and %s; Ctrl-C to stop\n\n", len(addrs), cl.Server4, cl.Server6)
	tty := false
	if f, ok := e.stdout.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		tty = err == nil
	}
	prev := make([][dataplane.NumVerdicts]uint64, len(ns))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := time.Now()
	lines := 0
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			now := time.Now()
			if tty && lines > 0 {
				fmt.Fprintf(e.stdout, "\033[%dA\033[J", lines)
			}
			cur := demoSnapshot(ns)
			lines, _ = demoTable(e.stdout, ns, cur, prev, now.Sub(last), clientErrs.Load(), false)
			prev, last = cur, now
		}
	}
	stopTraffic()
	wg.Wait()
	// Let the last packets drain: the final counts are read once they
	// stop changing, so that every node's count covers the same frames.
	cur, settled := demoSettle(ns, 200*time.Millisecond, 5*time.Second)
	fmt.Fprintf(e.stdout, "\nfinal (traffic stopped):\n")
	if !settled {
		fmt.Fprintln(e.stdout, "(the counters were still moving 5 s after the traffic stopped)")
	}
	_, sum := demoTable(e.stdout, ns, cur, prev, time.Since(last), clientErrs.Load(), true)
	if !sum.exact() {
		return exitFail
	}
	return exitOK
}

// demoPrefix begins the names of every demo namespace; each run adds its
// own random name.
const demoPrefix = "xcdemo-"

// demoSnapshot reads every node's verdict counters, one read per node:
// its workers' and its XDP fast path's (the packets of cached connections,
// forwarded or dropped as foreign there).
func demoSnapshot(ns []*demoNode) [][dataplane.NumVerdicts]uint64 {
	cur := make([][dataplane.NumVerdicts]uint64, len(ns))
	for i, n := range ns {
		gw := n.d.Gateway()
		cur[i], _, _ = gw.Dataplane().Totals(-1)
		if gw.FlowCache() == nil {
			continue
		}
		for _, p := range gw.FastPrograms() {
			if st, err := p.FastStats(); err == nil {
				cur[i][dataplane.Forwarded] += st.Forwarded
				cur[i][dataplane.Foreign] += st.Foreign
			}
		}
	}
	return cur
}

// demoSettle reads snapshots every interval until two in a row are equal
// (nothing in flight), or until limit; it returns the last and whether it
// settled.
func demoSettle(ns []*demoNode, interval, limit time.Duration) ([][dataplane.NumVerdicts]uint64, bool) {
	cur := demoSnapshot(ns)
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); {
		time.Sleep(interval)
		next := demoSnapshot(ns)
		same := true
		for i := range next {
			same = same && next[i] == cur[i]
		}
		cur = next
		if same {
			return cur, true
		}
	}
	return cur, false
}

// demoCount is one node's frames, from one snapshot.
type demoCount struct {
	seen      uint64 // every verdict: each node sees every frame
	forwarded uint64
}

// demoSummary is the cluster-wide arithmetic over one snapshot. Every node
// sees every frame and exactly one forwards it, so the forwarded counts
// must add up to what each node saw.
type demoSummary struct {
	seenMin, seenMax uint64 // equal unless a node missed frames
	forwarded        uint64 // in all
	// duplicates = forwarded - seen and losses = seen - forwarded (one of
	// them 0) when every node saw the same count; otherwise lower bounds
	// against the most and the fewest seen.
	duplicates, losses uint64
	clientErrors       uint64
}

func summarize(counts []demoCount, clientErrs uint64) demoSummary {
	s := demoSummary{clientErrors: clientErrs}
	for i, c := range counts {
		s.forwarded += c.forwarded
		if i == 0 || c.seen < s.seenMin {
			s.seenMin = c.seen
		}
		s.seenMax = max(s.seenMax, c.seen)
	}
	if s.forwarded > s.seenMax {
		s.duplicates = s.forwarded - s.seenMax
	}
	if s.seenMin > s.forwarded {
		s.losses = s.seenMin - s.forwarded
	}
	return s
}

// exact: every frame forwarded once, and every exchange answered.
func (s demoSummary) exact() bool {
	return s.seenMin == s.seenMax && s.forwarded == s.seenMin && s.clientErrors == 0
}

// line is the cluster line. While traffic flows the nodes' counters are
// read one after another, with frames in flight between them, so the live
// line shows the counts only; the final one (on settled counters) does
// the arithmetic.
func (s demoSummary) line(final bool) string {
	seen := fmt.Sprintf("each node saw %d frames", s.seenMin)
	if s.seenMin != s.seenMax {
		seen = fmt.Sprintf("the nodes saw %d to %d frames", s.seenMin, s.seenMax)
	}
	if !final {
		return fmt.Sprintf("cluster (live, frames in flight): %s so far; %d forwarded in all; client errors %d", seen, s.forwarded, s.clientErrors)
	}
	if s.seenMin != s.seenMax {
		return fmt.Sprintf("cluster: %s; %d forwarded in all: duplicates at least %d, losses at least %d; client errors %d",
			seen, s.forwarded, s.duplicates, s.losses, s.clientErrors)
	}
	return fmt.Sprintf("cluster: %s; %d forwarded in all: duplicates %d, losses %d; client errors %d",
		seen, s.forwarded, s.duplicates, s.losses, s.clientErrors)
}

// verdict is the demo's last line.
func (s demoSummary) verdict() string {
	if s.exact() {
		return "every packet was forwarded exactly once"
	}
	var why []string
	if s.duplicates > 0 {
		why = append(why, fmt.Sprintf("%d duplicates", s.duplicates))
	}
	if s.losses > 0 {
		why = append(why, fmt.Sprintf("%d losses", s.losses))
	}
	if s.seenMin != s.seenMax {
		why = append(why, fmt.Sprintf("a node missed %d frames", s.seenMax-s.seenMin))
	}
	if s.clientErrors > 0 {
		why = append(why, fmt.Sprintf("%d client errors", s.clientErrors))
	}
	return "NOT exactly once: " + strings.Join(why, ", ")
}

// demoTable prints one table from snapshot cur (prev: the one before, for
// rates) and returns how many lines it printed and the cluster summary.
func demoTable(w io.Writer, ns []*demoNode, cur, prev [][dataplane.NumVerdicts]uint64, dt time.Duration, clientErrs uint64, final bool) (int, demoSummary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "node\tflows\tshare\tseen\tforwarded\tforwarded/s\tdropped (not ours)/s\tinvalid\t\n")
	counts := make([]demoCount, len(ns))
	var flows uint64
	for i, n := range ns {
		flows += n.flows.Load()
		counts[i].forwarded = cur[i][dataplane.Forwarded] + cur[i][dataplane.ForwardedKernel]
		for _, v := range cur[i] {
			counts[i].seen += v
		}
	}
	sec := max(dt.Seconds(), 0.001)
	for i, n := range ns {
		share := 0.0
		if flows > 0 {
			share = float64(n.flows.Load()) / float64(flows)
		}
		fmt.Fprintf(tw, "%d\t%d\t%.1f%%\t%d\t%d\t%.0f\t%.0f\t%d\t\n", i+1, n.flows.Load(), 100*share, counts[i].seen, counts[i].forwarded,
			float64(cur[i][dataplane.Forwarded]+cur[i][dataplane.ForwardedKernel]-prev[i][dataplane.Forwarded]-prev[i][dataplane.ForwardedKernel])/sec,
			float64(cur[i][dataplane.Foreign]-prev[i][dataplane.Foreign])/sec, cur[i][dataplane.Invalid])
	}
	tw.Flush()
	sum := summarize(counts, clientErrs)
	fmt.Fprintln(w, sum.line(final))
	lines := len(ns) + 2
	if final {
		fmt.Fprintln(w, sum.verdict())
		lines++
	}
	return lines, sum
}

// demoFlow runs one exchange from client address a: mostly TCP echoes,
// every 5th a UDP request/reply.
func demoFlow(cl *netns.Cluster, a netip.Addr, i int) error {
	srv := cl.ServerFor(a)
	if i%5 == 4 {
		_, err := cl.Client.Exchange("udp", a, netip.AddrPortFrom(srv, 5353), []byte("ping "+a.String()), 2*time.Second)
		return err
	}
	_, err := cl.Client.Exchange("tcp", a, netip.AddrPortFrom(srv, 8080), []byte(strings.Repeat(a.String()+" ", 200)), 3*time.Second)
	return err
}
