package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/simulate"
)

const simulateDescription = `
Replay a capture (pcap or pcapng, optionally gzipped; Ethernet, VLAN-tagged,
Linux cooked SLL/SLL2, raw IP, BSD loopback NULL/LOOP, PPP, Cisco HDLC,
PFLOG, FDDI or 802.11; in pcapng every interface's own link type) through
xdpcluster's real parser,
connection tracker and cluster match for all nodes at once, and print each
node's share of connections, packets and bytes, the imbalance (max / mean),
the sources that drive it, the packets no node would own and why, and a
check that every tracked packet is owned by exactly one node.

--takeover FAILED:BY (several separated by commas) adds the shares after a
failover; --seed-search K tries K seeds and prints the best, with the rule
to use. Memory is bounded by --max-entries and --max-sources, not by the
capture's size: at most 65,535 bytes of a record are read, the rest of a
longer one is skipped (and counted). A capture taken with a short snap
length (tcpdump -s 96) is decoded from the headers it holds, with lengths
from the IP header; the report says how many frames lacked their payload.
Frames that cannot be decoded (link types that carry no IP, headers cut by
the snap length) are counted as malformed, never skipped silently. An empty
capture is 0 frames. A truncated or corrupt capture is reported with the
frame number and byte offset; the results so far are still printed, and the
exit status is 1.`

const simulateExamples = `  xdpcluster simulate --pcap gw.pcap --cluster-total-nodes 3 --cluster-hash-seed 0xdeadbeef
  xdpcluster simulate --pcap gw.pcapng --cluster-total-nodes 3 --cluster-hash-seed 1 --takeover 2:1 --seed-search 1000
  xdpcluster simulate --pcap gw.pcap.gz --cluster-total-nodes 4 --cluster-hash-seed 7 --json | jq .normal.imbalance`

// simulateOptions are simulate's options.
type simulateOptions struct {
	pcap, total, seed, hash, takeover       string
	seedSearch, top, maxEntries, maxSources int
	searchRand                              uint64
	loose, json, noProgress                 bool
}

func simulateCmd(e env) *cobra.Command {
	var o simulateOptions
	c := &cobra.Command{
		Use:     "simulate --pcap FILE --cluster-total-nodes N --cluster-hash-seed S [options]",
		Short:   "replay a capture: each node's share, imbalance, failover, seed choice",
		Long:    strings.TrimSpace(simulateDescription),
		Example: simulateExamples,
		Args:    noArgs,
		RunE:    func(*cobra.Command, []string) error { return status(runSimulate(e, &o)) },
	}
	f := c.Flags()
	f.StringVar(&o.pcap, "pcap", "", "capture `FILE` to replay (pcap or pcapng, optionally gzipped; - for standard input) (required)")
	f.StringVar(&o.total, cluster.OptTotalNodes, "", "number of nodes, `N` = 1..32 (required)")
	f.StringVar(&o.seed, cluster.OptHashSeed, "", "hash seed `S`, 0..0xffffffff (required unless --seed-search)")
	f.StringVar(&o.hash, "hash", "xt_cluster", `hash `+"`MODE`"+`: "xt_cluster" (kernel-exact) or "full" (whole IPv6 address)`)
	f.StringVar(&o.takeover, "takeover", "", "failover to simulate: `FAILED:BY[,FAILED:BY...]`, e.g. 2:1")
	f.IntVar(&o.seedSearch, "seed-search", 0, "try this many seeds and print the best few")
	f.Uint64Var(&o.searchRand, "seed-search-rand", 1, "random source for --seed-search (same value, same candidates)")
	f.IntVar(&o.top, "top", 10, "how many top sources and prefixes to print")
	f.IntVar(&o.maxEntries, "max-entries", 1<<20, "connection tracker limit")
	f.IntVar(&o.maxSources, "max-sources", 1<<20, "per-source table limit (top sources, seed search)")
	f.BoolVar(&o.loose, "tcp-loose", false, "replay with loose TCP pickup, to see what it would change (the cluster match needs it off)")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	f.BoolVar(&o.noProgress, "no-progress", false, "do not report progress on standard error")
	return c
}

func runSimulate(e env, o *simulateOptions) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "xdpcluster simulate: "+format+"\n", a...)
		return exitUsage
	}
	if o.pcap == "" {
		return fail("--pcap is required")
	}
	if o.total == "" {
		return fail("--%s is required (1..32)", cluster.OptTotalNodes)
	}
	if o.seed == "" && o.seedSearch == 0 {
		return fail("--%s is required (or use --seed-search to look for one)", cluster.OptHashSeed)
	}
	if o.seed == "" {
		o.seed = "0"
	}
	m, err := ownerMatch(o.total, o.seed, o.hash, "")
	if err != nil {
		return fail("%v", err)
	}
	tos, err := simulate.ParseTakeovers(o.takeover)
	if err != nil {
		return fail("--takeover: %v", err)
	}
	opts := simulate.Options{TotalNodes: m.TotalNodes, Seed: m.Seed, Hash: m.Hash, Takeovers: tos, SeedSearch: o.seedSearch,
		SearchRand: o.searchRand, Top: o.top, MaxEntries: o.maxEntries, MaxSources: o.maxSources, TCPLoose: o.loose}
	if err := opts.Validate(); err != nil {
		return fail("%v", err)
	}
	in := e.stdin
	var size int64
	if o.pcap != "-" {
		f, err := os.Open(o.pcap)
		if err != nil {
			fmt.Fprintf(e.stderr, "xdpcluster simulate: %v\n", err)
			return exitFail
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil {
			size = st.Size()
		}
		in = f
	}
	var prog *progress
	if !o.noProgress {
		prog = newProgress(e.stderr, size)
		opts.Progress = prog.update
	}
	rep, err := simulate.Run(in, opts)
	prog.done()
	var capErr *simulate.CaptureError
	if err != nil && !errors.As(err, &capErr) {
		fmt.Fprintf(e.stderr, "xdpcluster simulate: %s: %v\n", o.pcap, err)
		return exitFail
	}
	if o.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(e.stderr, "xdpcluster simulate: %v\n", err)
			return exitFail
		}
	} else {
		printReport(e.stdout, o.pcap, rep, opts)
	}
	if capErr != nil {
		fmt.Fprintf(e.stderr, "xdpcluster simulate: warning: %s: %v; the results cover only the frames before it\n", o.pcap, capErr)
		return exitFail
	}
	return exitOK
}

// progress reports on standard error: a bar redrawn in place on a
// terminal, otherwise a line every 10 seconds for long replays.
type progress struct {
	w        io.Writer
	size     int64
	tty      bool
	start    time.Time
	last     time.Time
	printed  bool
	lastLine int
}

func newProgress(w io.Writer, size int64) *progress {
	p := &progress{w: w, size: size, start: time.Now(), last: time.Now()}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			p.tty = true
		}
	}
	return p
}

func (p *progress) update(frames uint64, offset int64) {
	now := time.Now()
	interval := 10 * time.Second
	if p.tty {
		interval = 200 * time.Millisecond
	}
	if now.Sub(p.last) < interval {
		return
	}
	p.last = now
	rate := float64(frames) / now.Sub(p.start).Seconds()
	if p.tty {
		line := fmt.Sprintf("%s frames, %.0f frames/s", thousands(frames), rate)
		if p.size > 0 {
			frac := min(float64(offset)/float64(p.size), 1)
			const width = 30
			n := int(frac * width)
			line = fmt.Sprintf("[%s%s] %3.0f%% %s", strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100, line)
		}
		fmt.Fprintf(p.w, "\r%-*s", p.lastLine, line)
		p.lastLine = len(line)
		p.printed = true
		return
	}
	if p.size > 0 {
		fmt.Fprintf(p.w, "simulate: %s frames (%.0f%%), %.0f frames/s\n", thousands(frames), 100*float64(offset)/float64(p.size), rate)
	} else {
		fmt.Fprintf(p.w, "simulate: %s frames, %.0f frames/s\n", thousands(frames), rate)
	}
}

func (p *progress) done() {
	if p != nil && p.tty && p.printed {
		fmt.Fprintf(p.w, "\r%*s\r", p.lastLine, "")
	}
}

func thousands(v uint64) string {
	s := fmt.Sprint(v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func humanBytes(v uint64) string {
	const unit = 1000
	if v < unit {
		return fmt.Sprintf("%d B", v)
	}
	f, i := float64(v), 0
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %cB", f, "kMGT"[i-1])
}

func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

// reasonHelp explains why no node owns a packet.
var reasonHelp = map[string]string{
	"tcp_no_syn":            "mid-stream TCP of a connection that began before the capture (loose pickup is off, as the cluster match needs)",
	"tcp_bad_flags":         "TCP flag combination the kernel rejects",
	"tcp_bad_transition":    "TCP packet the state machine rejects",
	"icmp_not_new":          "ICMP reply or non-query type without a request",
	"icmp_error_no_conn":    "ICMP error about a connection not in the capture",
	"icmp_error_mismatch":   "ICMP error not addressed to the embedded packet's source",
	"icmp_error_bad_inner":  "ICMP error whose embedded packet is unreadable",
	"fragment_without_head": "non-first fragment whose first fragment was not seen first",
	"table_full":            "connection table full (raise --max-entries)",
	"untracked":             "IPv6 neighbour discovery / MLD (control path, never tracked)",
}

// malformedHelp explains the reasons that are about the capture rather
// than the packet.
func malformedHelp(k string) string {
	switch {
	case strings.HasPrefix(k, "unsupported_link_type_"):
		return "frames of a link type that carries no IP (or unknown): not decoded"
	case k == "truncated_link_header":
		return "link-layer header cut short"
	case k == "no_such_interface":
		return "pcapng packets for an interface the file does not describe"
	}
	return ""
}

func printScenario(w io.Writer, s *simulate.Scenario) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "node\tbuckets\tconnections\t\tpackets\t\tbytes\t\t\n")
	for _, n := range s.Nodes {
		name := fmt.Sprint(n.Node)
		if n.Failed {
			name += " (failed)"
		}
		var bs []string
		for _, b := range n.Buckets {
			bs = append(bs, fmt.Sprint(b))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, strings.Join(bs, ","), thousands(n.Connections), pct(n.ConnShare),
			thousands(n.Packets), pct(n.PacketShare), humanBytes(n.Bytes), pct(n.ByteShare))
	}
	tw.Flush()
	fmt.Fprintf(w, "imbalance (max/mean, 1.00 is perfect): connections %.2f, packets %.2f, bytes %.2f\n",
		s.Imbalance.Connections, s.Imbalance.Packets, s.Imbalance.Bytes)
	o := s.Ownership
	if o.None == 0 && o.Several == 0 {
		fmt.Fprintf(w, "ownership: every tracked packet (%s) is owned by exactly one node\n", thousands(o.ExactlyOne))
	} else {
		fmt.Fprintf(w, "ownership: %s packets owned by exactly one node, %s by NONE, %s by SEVERAL\n",
			thousands(o.ExactlyOne), thousands(o.None), thousands(o.Several))
	}
}

func printSources(w io.Writer, title string, ss []simulate.Source) {
	if len(ss) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "source\tnode\tconnections\tpackets\tbytes\tshare of node\t\n")
	for _, s := range ss {
		node, sh := fmt.Sprint(s.Node), pct(s.ShareOfNode)
		if s.Node == 0 {
			node, sh = "several", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", s.Source, node, thousands(s.Connections), thousands(s.Packets), humanBytes(s.Bytes), sh)
	}
	tw.Flush()
}

func printReport(w io.Writer, name string, r *simulate.Report, opts simulate.Options) {
	dur := r.Last.Sub(r.First).Round(time.Millisecond)
	kind := r.Format
	if len(r.LinkTypes) > 0 {
		kind += ", " + strings.Join(r.LinkTypes, ", ")
	}
	fmt.Fprintf(w, "capture: %s (%s): %s frames, %s", name, kind, thousands(r.Frames), humanBytes(r.Bytes))
	if !r.First.IsZero() {
		fmt.Fprintf(w, ", %s over %s", r.First.Format(time.RFC3339), dur)
	}
	fmt.Fprintln(w)
	mode := "kernel-compatible"
	if opts.Hash != cluster.HashXtCluster {
		mode = "NOT kernel-compatible: never mix with kernel nodes"
	}
	fmt.Fprintf(w, "cluster: %d nodes, seed 0x%08x, hash %s (%s)\n", r.TotalNodes, r.Seed, r.Hash, mode)
	fmt.Fprintf(w, "connections: %s tracked; packets with a connection: %s\n\n", thousands(r.Connections), thousands(r.Tracked))
	printScenario(w, &r.Normal)
	var unowned uint64
	var reasons []string
	for k, v := range r.Unowned {
		unowned += v
		reasons = append(reasons, k)
	}
	sort.Slice(reasons, func(i, j int) bool { return r.Unowned[reasons[i]] > r.Unowned[reasons[j]] })
	fmt.Fprintf(w, "\nowned by no node: %s packets\n", thousands(unowned))
	for _, k := range reasons {
		fmt.Fprintf(w, "  %-22s %12s  %s\n", k, thousands(r.Unowned[k]), reasonHelp[k])
	}
	var malformed uint64
	for _, v := range r.Malformed {
		malformed += v
	}
	fmt.Fprintf(w, "not IP (ARP, LLDP, ...): %s frames; malformed: %s frames\n", thousands(r.NotIP), thousands(malformed))
	var kinds []string
	for k := range r.Malformed {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("  %-22s %12s  %s", k, thousands(r.Malformed[k]), malformedHelp(k)), " "))
	}
	if r.PayloadNotCaptured > 0 {
		fmt.Fprintf(w, "payload not captured (snap length): %s frames, decoded from their headers; lengths from the IP header\n", thousands(r.PayloadNotCaptured))
	}
	if r.HeadersNotCaptured > 0 {
		fmt.Fprintf(w, "headers not captured (snap length): %s frames, counted as malformed above\n", thousands(r.HeadersNotCaptured))
	}
	if r.LongRecords > 0 {
		fmt.Fprintf(w, "records longer than %s bytes: %s, truncated (only their first %s bytes were read)\n",
			thousands(simulate.MaxRecord), thousands(r.LongRecords), thousands(simulate.MaxRecord))
	}
	printSources(w, "top original sources by bytes (the hash input):", r.TopSources)
	title := "top prefixes by bytes (IPv4 /24; IPv6 /32, which lands whole on one node in xt_cluster mode):"
	printSources(w, title, r.TopPrefixes)
	if r.UnsampledBytes > 0 {
		fmt.Fprintf(w, "(%s of traffic from sources beyond --max-sources is not in the lists or the seed search)\n", humanBytes(r.UnsampledBytes))
	}
	if r.Failover != nil {
		fmt.Fprintf(w, "\nafter failover (%s):\n", r.Failover.Name)
		printScenario(w, r.Failover)
	}
	if len(r.Seeds) > 0 {
		fmt.Fprintf(w, "\nseed search (%d seeds tried; the configured seed 0x%08x has byte imbalance %.3f):\n", opts.SeedSearch, opts.Seed, r.Normal.Imbalance.Bytes)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "seed\tbytes\tpackets\tconnections\trule (use --cluster-local-node K on node K)\n")
		for _, s := range r.Seeds {
			fmt.Fprintf(tw, "0x%08x\t%.3f\t%.3f\t%.3f\t%s\n", s.Seed, s.Imbalance.Bytes, s.Imbalance.Packets, s.Imbalance.Connections, s.Rule)
		}
		tw.Flush()
	}
	if r.Warning != "" {
		fmt.Fprintf(w, "\nWARNING: %s\n", r.Warning)
	}
}
