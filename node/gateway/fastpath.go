package gateway

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/dataplane/xsk"
	"github.com/xdpcluster/xdpcluster/node"
	"github.com/xdpcluster/xdpcluster/packet"
)

// newFlowCache creates the fast path's flow cache unless the fast path is
// off: by configuration, where the kernel would not route for it
// (forwarding off on the data interfaces), or where the kernel cannot
// create the cache. With AF_XDP the XDP program reads it, with raw sockets
// a tc program (openPacket), which may still turn it off. FastPathAuto
// means on where possible, so every such case sets g.fastReason, which
// Start logs, and goes on; the error is for a setting it does not know.
func (g *Gateway) newFlowCache(cfg Config) error {
	if err := cfg.FastPath.Validate(); err != nil {
		return fmt.Errorf("dataplane fast_path %w", err)
	}
	switch {
	case cfg.FastPath == dataplane.FastPathOff:
		g.fastReason = "dataplane.fast_path is off"
		return nil
	}
	reason, partly := forwardingOff(cfg.Interfaces)
	if reason != "" {
		g.fastReason = reason
		return nil
	}
	if partly != "" {
		g.log.Warn("fast path: "+partly, "fast_path", "on")
	}
	conns := cfg.FastPathEntries
	if conns <= 0 {
		conns = g.tracker.Config().MaxEntries
	}
	fc, err := xsk.NewFlowCache(conns, g.clock)
	if err != nil {
		g.fastReason = fmt.Sprintf("cannot create the flow cache: %v", err)
		return nil
	}
	if err := xsk.CoarseClock(); err != nil {
		g.log.Info("fast path: the kernel lacks bpf_ktime_get_coarse_ns (Linux 5.11): its programs read the exact clock for each packet", "reason", err)
	}
	if err := fc.CountErr(); err != nil {
		g.log.Info("fast path: the flow cache's entries are counted by walking it at each scrape", "reason", err)
	}
	g.flows = fc
	return nil
}

// fastPathOff turns the fast path off after the flow cache was made
// (before the dataplane uses it).
func (g *Gateway) fastPathOff(reason string) {
	if g.flows != nil {
		g.flows.Close()
		g.flows = nil
		g.fastReason = reason
	}
}

// sysctlRoot is where forwardingOff reads the interfaces' sysctls (tests
// may point it elsewhere).
var sysctlRoot = "/proc/sys/net"

// forwardingOff returns why the kernel's route lookup from XDP
// (bpf_fib_lookup) would refuse to route every packet arriving on the data
// interfaces, "" when it routes at least one family on all of them; and
// then, in partly, which family it refuses where (those packets take the
// slow path, counted as fib_forwarding_disabled). The
// helper returns BPF_FIB_LKUP_RET_FWD_DISABLED where the ingress
// interface does not forward, which would send every packet to the slow
// path; the kernel's own forwarding of the frames the program passes to
// it is not at stake (cluster-MAC frames are multicast: the kernel never
// forwards them), so turning forwarding on for the data interfaces is
// safe. Reading /proc/sys/net names the namespace of the calling thread.
func forwardingOff(ifaces []node.Interface) (reason, partly string) {
	var off4, off6 []string
	for _, ic := range ifaces {
		if !sysctlOn(sysctlRoot + "/ipv4/conf/" + ic.Name + "/forwarding") {
			off4 = append(off4, ic.Name)
		}
		if !sysctlOn(sysctlRoot + "/ipv6/conf/" + ic.Name + "/forwarding") {
			off6 = append(off6, ic.Name)
		}
	}
	const fix = "set net.ipv4.conf.<interface>.forwarding=1 and net.ipv6.conf.<interface>.forwarding=1 on the data interfaces"
	switch {
	case len(off4) == 0 && len(off6) == 0:
		return "", ""
	case len(off4) == 0:
		return "", fmt.Sprintf("IPv6 forwarding is off on %s: IPv6 packets take the slow path; %s", strings.Join(off6, ", "), fix)
	case len(off6) == 0:
		return "", fmt.Sprintf("IPv4 forwarding is off on %s: IPv4 packets take the slow path; %s", strings.Join(off4, ", "), fix)
	}
	return fmt.Sprintf("forwarding is off on %s (IPv4) and %s (IPv6): the kernel's route lookup from XDP routes only what the kernel would forward; "+
		fix+" to use the fast path",
		strings.Join(off4, ", "), strings.Join(off6, ", ")), ""
}

// sysctlOn reports whether a sysctl file reads as a non-zero number.
func sysctlOn(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	v := strings.TrimSpace(string(b))
	return v != "" && v != "0"
}

// reconcileEvery is how often the flow cache is checked against the
// tracker.
const reconcileEvery = time.Minute

// reconcileCache removes, every period until Close, the flow cache's
// connections the tracker does not have installed (see
// xsk.FlowCache.Reconcile): orphans of a race between one worker's
// re-install and another's removal, or of a removal that failed. They
// would otherwise carry a later connection on the same tuple past the
// tracker (its handshake ACK and its data forwarded in XDP, its FIN then
// found without a connection) until the LRU evicted them.
func (g *Gateway) reconcileCache(period time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-g.done:
			return
		case <-tick.C:
		}
		g.reconcileOnce()
	}
}

// reconcileOnce is one pass of reconcileCache; it returns how many
// entries (directions) it removed.
func (g *Gateway) reconcileOnce() int {
	n, err := g.flows.Reconcile(func(orig *packet.Tuple) bool {
		info, ok := g.tracker.Get(*orig, g.clock.Now())
		return ok && info.Offloaded
	})
	if err != nil {
		g.log.Warn("fast path: reconciling the flow cache with the tracker", "error", err)
		return 0
	}
	if n > 0 {
		g.cacheOrphans.Add(uint64(n))
		g.log.Info("fast path: removed flow cache entries the tracker did not have installed", "entries", n)
	}
	return n
}

// CacheOrphans counts the flow cache entries reconciliation removed.
func (g *Gateway) CacheOrphans() uint64 { return g.cacheOrphans.Load() }
