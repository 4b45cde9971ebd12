// Package metrics exports a gateway's counters to Prometheus. Everything
// is read at scrape time from the per-worker counters and the ports,
// tracker and responders: nothing is done per packet. Metric names and
// labels are the public contract documented in the README.
package metrics

import (
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/dataplane/xsk"
	"github.com/xdpcluster/xdpcluster/node"
	"github.com/xdpcluster/xdpcluster/node/gateway"
	"github.com/xdpcluster/xdpcluster/packet"
)

const ns = "xdpcluster"

// modeLabels are xdpcluster_interface_info's labels, modeValues their
// values for one interface.
var modeLabels = []string{"interface", "role", "xdp_mode", "io", "copy", "queues"}

func modeValues(name string, m node.Mode) []string {
	return []string{name, m.Role, m.XDP, m.IO, m.Copy, strconv.Itoa(m.Queues)}
}

// batchHistogram builds xdpcluster_batch_size from the workers' summed
// counters: sizes[i] batches of up to 2^i frames (the last bucket also
// holds any larger), frames the frames received in them, the exact sum.
// The count is the buckets' total, so that it is never below a bucket's
// cumulative count even when a batch lands between the counters' reads.
func batchHistogram(sizes [8]uint64, frames uint64) (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(sizes)-1)
	for b := range sizes {
		count += sizes[b]
		if b < len(sizes)-1 {
			buckets[float64(uint64(1)<<b)] = count
		}
	}
	return count, float64(frames), buckets
}

// The path label of xdpcluster_packets_total, bytes_total and
// owner_packets_total: where a packet was decided. Sum over it (sum
// without(path)) for the totals the families had before the label.
const (
	PathXDP      = "xdp"      // by an XDP program: the gateway's flow cache, or a back-end node
	PathAFXDP    = "afxdp"    // by a gateway worker reading an AF_XDP socket
	PathAFPacket = "afpacket" // by a gateway worker reading a raw (AF_PACKET) socket
	PathTC       = "tc"       // by the gateway's tc program: the flow cache with raw sockets
)

// workerPath returns the path label of the workers' counters of one
// interface: the kind of its ports (dataplane.Port.Mode, "afxdp copy",
// "afxdp zero-copy", "afpacket"), the first word of their mode.
func workerPath(ifc dataplane.Iface) string {
	if len(ifc.Ports) == 0 {
		return ""
	}
	kind, _, _ := strings.Cut(ifc.Ports[0].Mode(), " ")
	return kind
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
}

var (
	packetsDesc   = desc("packets_total", "Frames received by the dataplane, by ingress interface, path (xdp: decided by an XDP program; tc: by the gateway's tc program; afxdp, afpacket: by the workers) and verdict.", "interface", "path", "verdict")
	bytesDesc     = desc("bytes_total", "Bytes received by the dataplane, by ingress interface, path (xdp, tc, afxdp, afpacket) and verdict.", "interface", "path", "verdict")
	ownerDesc     = desc("owner_packets_total", "Packets with a connection, by path (xdp, tc, afxdp, afpacket) and the node (1-based) that owns them; every node sees every packet, so each node reports the whole cluster's split.", "interface", "path", "node")
	invalidDesc   = desc("invalid_packets_total", "Packets without a connection (conntrack INVALID), by reason.", "interface", "reason")
	malformedDesc = desc("malformed_packets_total", "Frames that could not be parsed, by reason.", "interface", "reason")
	batchDesc     = desc("batch_size", "Frames per receive batch (the sum is the frames received in batches, exact).", "interface")

	connsDesc      = desc("connections_total", "New connections, by the node (1-based) that owns them; every node tracks every connection.", "node")
	ctEntriesDesc  = desc("conntrack_entries", "Connections tracked now.")
	ctMaxDesc      = desc("conntrack_max_entries", "The connection table's limit.")
	ctInsertsDesc  = desc("conntrack_inserts_total", "Connections created.")
	ctExpiredDesc  = desc("conntrack_expired_total", "Connections removed by timeout.")
	ctEvictedDesc  = desc("conntrack_evictions_total", "Connections evicted early to make room.")
	ctFullDesc     = desc("conntrack_table_full_total", "New connections refused: table full of assured connections.")
	ctReopenedDesc = desc("conntrack_reopened_total", "TCP connections reopened by a SYN.")
	ctResetDesc    = desc("conntrack_reset_total", "TCP connections deleted by a RST before any reply (a refused SYN), as the kernel does.")
	ctPickedUpDesc = desc("conntrack_picked_up_total", "TCP connections recorded from a SYN/ACK seen before their SYN (reordering between a node's interfaces); confirmed when the client speaks.")
	ctFragEvDesc   = desc("conntrack_fragment_evictions_total", "First-fragment records dropped to make room (their later fragments become INVALID).")

	ringDesc = desc("ring_events_total", "Ring health events per port (interface and receive queue): rx_dropped, rx_invalid_descs, tx_invalid_descs, tx_errors, tx_ring_full, fill_ring_empty.", "interface", "queue", "event")
	xdpDesc  = desc("xdp_packets_total", "Verdicts of the XDP program: to_xsk, no_socket, passed (to the kernel).", "interface", "verdict")
	tcDesc   = desc("tc_packets_total", "Verdicts of the tc program (raw sockets with the fast path), besides those of the fast path: to_socket (a cluster-MAC IP frame left to the workers' sockets), passed (anything else, left to the kernel).", "interface", "verdict")
	arpDesc  = desc("neighbour_messages_total", "ARP/ND responder: requests for cluster addresses, replies, announcements, rate_limited, ignored, errors, socket_drops (frames the kernel dropped before the responder read them: its socket buffer was full).", "interface", "protocol", "event")

	maskDesc  = desc("node_mask", "The node mask in force (bit n-1 set: this node serves node n's share).")
	totalDesc = desc("total_nodes", "Nodes in the cluster.")
	localDesc = desc("local_node", "1 for each node number whose share this node serves.", "node")
	infoDesc  = desc("build_info", "Build information.", "version", "goversion", "hash")
	modeDesc  = desc("interface_info", "Data interfaces and how they run: role (gateway, backend), xdp_mode (native, generic; none: no XDP program), io (afxdp, afpacket; none: the XDP program decides alone), copy (zerocopy, copy; none), queues (receive queues the workers read).", modeLabels...)

	fastOnDesc        = desc("fast_path_enabled", "1 when the fast path (the flow cache, in XDP, or in tc with raw sockets) is on; 0 when it is off (the daemon logs why at start).")
	fastSlowDesc      = desc("fast_path_slow_total", "Cluster-MAC IP frames the fast path (XDP or tc) handed to the workers, by reason: miss (not cached), tcp_control (SYN/FIN/RST), fragment, not_fast (tagged, IPv6 extension headers, ICMP, other protocols, malformed), ttl, no_egress, fib_* (the kernel's route lookup result, e.g. fib_no_neighbour while a next hop resolves).", "interface", "reason")
	cacheEntriesDesc  = desc("flow_cache_entries", "Entries in the XDP flow cache now (two per connection: one per direction).")
	cacheMaxDesc      = desc("flow_cache_max_connections", "Connections the XDP flow cache holds (dataplane.fast_path_entries); beyond, the least recently used are evicted and take the slow path until installed again.")
	cacheInstallsDesc = desc("flow_cache_installs_total", "Connections installed into the XDP flow cache (or installed again after an eviction).")
	cacheRemovalsDesc = desc("flow_cache_removals_total", "Connections removed from the XDP flow cache (closed by FIN/RST, or expired).")
	cacheLostDesc     = desc("flow_cache_evictions_total", "Installed connections the expiry found evicted from the XDP flow cache (it was full).")
	cacheOrphansDesc  = desc("flow_cache_orphans_total", "XDP flow cache entries the periodic reconciliation removed because the tracker had not installed them (a race between workers, or a failed removal).")
	cacheErrorsDesc   = desc("flow_cache_errors_total", "Failed flow cache updates (their connections stay on the slow path until installed again).")

	ioFallbackDesc     = desc("io_fallback", "1 when dataplane.io auto could not use AF_XDP and fell back to raw sockets (slower; the log and ctl status say why: a missing capability, the kernel, the driver); 0 otherwise.")
	followRestartsDesc = desc("kernel_follow_restarts_total", "Kernel route/neighbour subscriptions that ended unexpectedly (e.g. ENOBUFS) and were made again.")
)

// Collector is a prometheus.Collector over one gateway.
type Collector struct {
	gw      *gateway.Gateway
	version string
}

// New returns a collector for gw.
func New(gw *gateway.Gateway, version string) *Collector { return &Collector{gw: gw, version: version} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packetsDesc, bytesDesc, ownerDesc, invalidDesc, malformedDesc, batchDesc,
		connsDesc, ctEntriesDesc, ctMaxDesc, ctInsertsDesc, ctExpiredDesc, ctEvictedDesc, ctFullDesc, ctReopenedDesc, ctResetDesc, ctPickedUpDesc, ctFragEvDesc,
		ringDesc, xdpDesc, tcDesc, arpDesc, maskDesc, totalDesc, localDesc, infoDesc, modeDesc, followRestartsDesc, ioFallbackDesc,
		fastOnDesc, fastSlowDesc, cacheEntriesDesc, cacheMaxDesc, cacheInstallsDesc, cacheRemovalsDesc, cacheLostDesc, cacheErrorsDesc, cacheOrphansDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	dp := c.gw.Dataplane()
	m := dp.Match()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for i, ifc := range dp.Ifaces() {
		path := workerPath(ifc)
		var pkts, bytes [dataplane.NumVerdicts]uint64
		var owner [cluster.MaxNodes]uint64
		var inv [conntrack.NumReasons]uint64
		var mal [packet.NumReasons]uint64
		var batches [8]uint64
		var batchFrames uint64
		for q := 0; q < dp.Queues(); q++ {
			w := dp.Counters(q, i)
			for v := range pkts {
				pkts[v] += w.Packets[v].Load()
				bytes[v] += w.Bytes[v].Load()
			}
			for b := range owner {
				owner[b] += w.Owner[b].Load()
			}
			for r := range inv {
				inv[r] += w.Invalid[r].Load()
			}
			for r := range mal {
				mal[r] += w.Malformed[r].Load()
			}
			for b := range batches {
				batches[b] += w.BatchSizes[b].Load()
			}
			batchFrames += w.BatchFrames.Load()
		}
		for v := dataplane.Verdict(0); v < dataplane.NumVerdicts; v++ {
			counter(packetsDesc, pkts[v], ifc.Name, path, v.String())
			counter(bytesDesc, bytes[v], ifc.Name, path, v.String())
		}
		for b := 0; b < int(m.TotalNodes); b++ {
			counter(ownerDesc, owner[b], ifc.Name, path, strconv.Itoa(b+1))
		}
		for r := conntrack.Reason(1); r < conntrack.NumReasons; r++ {
			counter(invalidDesc, inv[r], ifc.Name, r.String())
		}
		for r := packet.Reason(2); r < packet.NumReasons; r++ {
			counter(malformedDesc, mal[r], ifc.Name, r.String())
		}
		count, sum, buckets := batchHistogram(batches, batchFrames)
		ch <- prometheus.MustNewConstHistogram(batchDesc, count, sum, buckets, ifc.Name)
	}
	for n := 0; n < int(m.TotalNodes); n++ {
		counter(connsDesc, c.gw.NewConns(n), strconv.Itoa(n+1))
	}
	counter(followRestartsDesc, c.gw.KernelFollowRestarts())
	fellBack := 0.0
	if c.gw.IOFallback() != "" {
		fellBack = 1
	}
	gauge(ioFallbackDesc, fellBack)
	st := c.gw.Tracker().Stats()
	gauge(ctEntriesDesc, float64(st.Entries))
	gauge(ctMaxDesc, float64(c.gw.Tracker().Config().MaxEntries))
	counter(ctInsertsDesc, st.Inserts)
	counter(ctExpiredDesc, st.Expired)
	counter(ctEvictedDesc, st.Evicted)
	counter(ctFullDesc, st.TableFull)
	counter(ctReopenedDesc, st.Reopened)
	counter(ctResetDesc, st.Reset)
	counter(ctPickedUpDesc, st.PickedUp)
	counter(ctFragEvDesc, st.FragEvicted)
	for _, ifc := range dp.Ifaces() {
		for q, p := range ifc.Ports { // port q reads receive queue q
			s := p.Stats()
			queue := strconv.Itoa(q)
			for _, e := range []struct {
				name string
				v    uint64
			}{{"rx_dropped", s.RxDropped}, {"rx_invalid_descs", s.RxInvalid}, {"tx_invalid_descs", s.TxInvalid},
				{"tx_errors", s.TxErrors}, {"tx_ring_full", s.TxRingFull}, {"fill_ring_empty", s.FillRingEmpty + s.RxFillEmpty}} {
				counter(ringDesc, e.v, ifc.Name, queue, e.name)
			}
		}
	}
	c.collectFastPath(m, counter, gauge)
	for i, prog := range c.gw.Programs() {
		if st, err := prog.Stats(); err == nil {
			for v := 0; v < xsk.NumStats; v++ {
				counter(xdpDesc, st[v], dp.Ifaces()[i].Name, xsk.StatNames[v])
			}
		}
	}
	for i, prog := range c.gw.TCPrograms() {
		if st, err := prog.Stats(); err == nil {
			for v := 0; v < xsk.NumTCStats; v++ {
				counter(tcDesc, st[v], dp.Ifaces()[i].Name, xsk.TCStatNames[v])
			}
		}
	}
	for _, r := range c.gw.Responders() {
		s := r.Stats()
		name := r.Interface()
		counter(arpDesc, s.ARPRequests, name, "arp", "requests")
		counter(arpDesc, s.ARPReplies, name, "arp", "replies")
		counter(arpDesc, s.NSRequests, name, "nd", "requests")
		counter(arpDesc, s.NAReplies, name, "nd", "replies")
		counter(arpDesc, s.Announcements, name, "any", "announcements")
		counter(arpDesc, s.RateLimited, name, "any", "rate_limited")
		counter(arpDesc, s.Ignored, name, "any", "ignored")
		counter(arpDesc, s.Errors, name, "any", "errors")
		counter(arpDesc, s.SocketDrops, name, "any", "socket_drops")
	}
	gauge(maskDesc, float64(m.NodeMask))
	gauge(totalDesc, float64(m.TotalNodes))
	for n := 0; n < int(m.TotalNodes); n++ {
		v := 0.0
		if m.OwnsNode(n) {
			v = 1
		}
		gauge(localDesc, v, strconv.Itoa(n+1))
	}
	gover := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		gover = bi.GoVersion
	}
	gauge(infoDesc, 1, c.version, gover, m.Hash.String())
	modes := c.gw.InterfaceModes()
	for i, ifc := range dp.Ifaces() {
		if i < len(modes) {
			gauge(modeDesc, 1, modeValues(ifc.Name, modes[i])...)
		}
	}
}

// collectFastPath adds the XDP fast path's counters to the workers':
// per interface, its verdicts as packets_total and bytes_total{path="xdp"}
// (forwarded, foreign: the workers' verdict names) and its packets by
// owner as owner_packets_total{path="xdp"}, why it handed frames to the
// slow path, and the flow cache's size and changes. It emits only
// path="xdp" series (path="tc" where the fast path runs as a tc program,
// with raw sockets), so that none repeats one of the workers'.
func (c *Collector) collectFastPath(m cluster.Match, counter func(*prometheus.Desc, uint64, ...string), gauge func(*prometheus.Desc, float64, ...string)) {
	fc := c.gw.FlowCache()
	on := 0.0
	if fc != nil {
		on = 1
	}
	gauge(fastOnDesc, on)
	if fc == nil {
		return
	}
	ifaces := c.gw.Dataplane().Ifaces()
	path := PathXDP
	if c.gw.FastPathHook() == "tc" {
		path = PathTC
	}
	for i, prog := range c.gw.FastPrograms() {
		st, err := prog.FastStats()
		if err != nil || i >= len(ifaces) {
			continue
		}
		name := ifaces[i].Name
		counter(packetsDesc, st.Forwarded, name, path, dataplane.Forwarded.String())
		counter(bytesDesc, st.ForwardedBytes, name, path, dataplane.Forwarded.String())
		counter(packetsDesc, st.Foreign, name, path, dataplane.Foreign.String())
		counter(bytesDesc, st.ForeignBytes, name, path, dataplane.Foreign.String())
		for b := 0; b < int(m.TotalNodes); b++ {
			counter(ownerDesc, st.Owner[b], name, path, strconv.Itoa(b+1))
		}
		for r, v := range st.Slow {
			counter(fastSlowDesc, v, name, xsk.SlowReasonNames[r])
		}
	}
	dp := c.gw.Dataplane()
	var errs uint64
	for q := 0; q < dp.Queues(); q++ {
		for i := range ifaces {
			errs += dp.Counters(q, i).CacheErrors.Load()
		}
	}
	counter(cacheErrorsDesc, errs)
	counter(cacheOrphansDesc, c.gw.CacheOrphans())
	gauge(cacheMaxDesc, float64(fc.Conns()))
	st, err := fc.Stats()
	if err != nil {
		return
	}
	gauge(cacheEntriesDesc, float64(st.Entries))
	counter(cacheInstallsDesc, st.Installs)
	counter(cacheRemovalsDesc, st.Removals)
	counter(cacheLostDesc, st.Lost)
}

// Check that the collector satisfies the interface.
var _ prometheus.Collector = (*Collector)(nil)

// String is for debugging.
func (c *Collector) String() string {
	return fmt.Sprintf("metrics collector for %d interfaces", len(c.gw.Dataplane().Ifaces()))
}
