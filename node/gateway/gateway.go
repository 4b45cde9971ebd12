// Package gateway assembles a gateway node's dataplane: our XDP program on
// every data interface, one AF_XDP port per queue, the connection tracker,
// the netlink route resolver and the workers. Start must be called with
// the calling thread in the node's network namespace (the daemon's own, or
// a test's via netns.NS.Do); everything it opens stays bound there.
package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/arp"
	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/dataplane/afpacket"
	"github.com/xdpcluster/xdpcluster/dataplane/xsk"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/node"
	"github.com/xdpcluster/xdpcluster/packet"
)

// Config configures Start.
type Config struct {
	Interfaces []node.Interface
	Match      cluster.Match
	Conntrack  conntrack.Config
	// IO is the packet I/O (zero: dataplane.IOAuto: raw sockets with the
	// fast path in tc on veth (autoTC), else AF_XDP, else raw sockets with
	// a warning saying why).
	IO     dataplane.IO
	Port   xsk.PortOptions  // zero: xsk.DefaultPortOptions
	Packet afpacket.Options // zero: afpacket.DefaultOptions
	// XDPMode is how our program attaches (zero: bpfutil.ModeAuto).
	XDPMode bpfutil.AttachMode
	// FastPath: the XDP flow cache (zero: dataplane.FastPathAuto, on with
	// AF_XDP where the kernel allows it, else off with the reason logged).
	FastPath dataplane.FastPath
	// FastPathEntries bounds the flow cache in connections (0: the
	// connection table's MaxEntries).
	FastPathEntries int
	// Queues limits the RX queues used (0: every one the interfaces have).
	Queues int
	// BatchSize bounds a receive batch (0: 64).
	BatchSize int
	Logger    *slog.Logger
	// Snapshot, if set, is the file the connection table is restored from
	// at Start (before the workers run) and saved to at Close (after they
	// stop), so that connections survive a restart. It is restored only
	// if younger than SnapshotMaxAge (0: conntrack.DefaultSnapshotMaxAge)
	// and taken with the same total nodes, seed and hash mode; otherwise
	// the table starts empty and the reason is logged.
	Snapshot       string
	SnapshotMaxAge time.Duration
	// GROState, if set, is the file where the gateway records the
	// interfaces whose GRO it turned off (raw sockets), before it does,
	// so that the next start turns them back on after a run that did not
	// stop cleanly; a clean Close removes it.
	GROState string
}

// Gateway is a running gateway dataplane. Its accessors may be called
// concurrently, with each other and with Close, once Start has returned
// it: what they return is set by Start and never replaced (Close stops
// and frees it but leaves the values).
type Gateway struct {
	dp       *dataplane.Dataplane
	tracker  *conntrack.Table
	resolver *NetlinkResolver
	// responders answer ARP/ND for the cluster addresses, per interface
	// that has any.
	responders []*arp.Responder
	programs   []*xsk.Program // per interface, with AF_XDP only
	// tcPrograms are the fast path's tc programs, per interface, with
	// raw sockets and the fast path on only.
	tcPrograms []*xsk.TCProgram
	// flows is the fast path's flow cache, shared by the programs (XDP
	// or tc); nil when the fast path is off (see FastPath).
	flows      *xsk.FlowCache
	fastReason string // why the fast path is off, "" when on
	// groRestore are the interfaces whose GRO openPacket turned off,
	// for Close to turn back on.
	groRestore []string
	// ethtool is the socket GRO is read and set through, opened in the
	// node's namespace (-1 until needed).
	ethtool int
	// ioFallback says why IOAuto fell back to raw sockets ("" when not).
	ioFallback string
	// cacheOrphans counts the connections reconcileCache removed.
	cacheOrphans atomic.Uint64
	// local4 are the node's IPv4 addresses refreshLocal last saw (only
	// the kernel-following goroutine uses it after Start).
	local4 map[netip.Addr]bool
	// newConns counts new connections by the 0-based node that owns them
	// (every node tracks every connection).
	newConns [cluster.MaxNodes]atomic.Uint64
	modes    []node.Mode // per interface
	// clock is the dataplane's one time origin: the workers, the sweeper
	// and the snapshots read it.
	clock    conntrack.Clock
	sweeper  *conntrack.Sweeper
	cfg      Config
	running  bool // Start completed: Close saves the snapshot
	handle   *netlink.Handle
	links    []int
	ports    []dataplane.Port
	log      *slog.Logger
	once     sync.Once
	closeErr error
	done     chan struct{}
	// followed is closed when following the kernel stopped (after done).
	followed       chan struct{}
	ns             netns.NsHandle // the node's namespace (followKernel)
	nsUnnamed      bool           // subscribe where the thread is: ns cannot be entered by name
	followRestarts atomic.Uint64
	sender         *kernelSender
	// clusterAddrs are the cluster addresses of every interface: the
	// node's own, like its kernel's (see refreshLocal).
	clusterAddrs []netip.Addr
}

// Start sets everything up and starts the workers. On error it undoes
// what it did.
func Start(cfg Config) (g *Gateway, err error) {
	if err := node.Validate(cfg.Interfaces); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if err := cfg.Match.Validate(); err != nil {
		return nil, err
	}
	if cfg.Port == (xsk.PortOptions{}) {
		cfg.Port = xsk.DefaultPortOptions()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	g = &Gateway{handle: h, log: log, cfg: cfg, ns: netns.None(), ethtool: -1}
	defer func() {
		if err != nil {
			g.Close()
			g = nil
		}
	}()
	m := cfg.Match
	ct := cfg.Conntrack
	// Tag runs once per new connection (not per packet): store its bucket
	// and count it for the node that owns it.
	ct.Tag = func(fam packet.Family, orig [16]byte) uint8 {
		var b uint32
		if fam == packet.IPv4 {
			b = m.Bucket4((*[4]byte)(orig[:4]))
		} else {
			b = m.Bucket16(&orig)
		}
		g.newConns[b].Add(1)
		return uint8(b)
	}
	if g.tracker, err = conntrack.NewTable(ct); err != nil {
		return g, err
	}
	g.clock = conntrack.NewClock()
	for _, ic := range cfg.Interfaces {
		link, err := h.LinkByName(ic.Name)
		if err != nil {
			return g, fmt.Errorf("interface %s: %w", ic.Name, err)
		}
		g.links = append(g.links, link.Attrs().Index)
	}
	if cfg.GROState != "" {
		g.restoreGRO()
	}
	if err := g.newFlowCache(cfg); err != nil {
		return g, err
	}
	var ifaces []dataplane.Iface
	switch cfg.IO {
	case dataplane.IOAFXDP:
		if ifaces, err = g.openXDP(h, cfg); err != nil {
			err = fmt.Errorf("dataplane.io afxdp: AF_XDP cannot be set up (no fallback to raw sockets with afxdp; auto would fall back): %w%s", err, capsHint())
		}
	case dataplane.IOAFPacket:
		ifaces, err = g.openPacket(h, cfg)
	case "", dataplane.IOAuto:
		if ifaces = g.autoTC(h, cfg); ifaces != nil {
			break
		}
		if ifaces, err = g.openXDP(h, cfg); err != nil {
			g.ioFallback = err.Error() + capsHint()
			log.Warn("AF_XDP cannot be set up; falling back to the raw-socket (AF_PACKET) backend, which is slower", "error", g.ioFallback)
			g.closePorts()
			ifaces, err = g.openPacket(h, cfg)
		}
	default:
		return g, fmt.Errorf("dataplane io %w", cfg.IO.Validate())
	}
	if err != nil {
		return g, err
	}
	if g.flows != nil {
		for i, ifindex := range g.links {
			if err := g.flows.AddEgress(ifindex); err != nil {
				return g, fmt.Errorf("interface %s: fast path: %w", cfg.Interfaces[i].Name, err)
			}
		}
		g.tracker.SetOffloader(g.flows)
		where := "XDP"
		if len(g.tcPrograms) > 0 {
			where = "tc"
		}
		log.Info("fast path on: established flows are forwarded in "+where, "entries", g.flows.Conns())
	} else if g.fastReason != "" {
		log.Info("fast path off: every packet goes through the workers", "reason", g.fastReason)
	}
	g.resolver = NewNetlinkResolver(h, g.links)
	if g.sender, err = newKernelSender(); err != nil {
		return g, err
	}
	dcfg := dataplane.Config{Ifaces: ifaces, Match: cfg.Match, Tracker: g.tracker, Resolver: g.resolver, SlowPath: g.sender.send,
		BatchSize: cfg.BatchSize, Clock: g.clock}
	if g.flows != nil {
		dcfg.FlowCache = g.flows
	}
	g.dp, err = dataplane.New(dcfg)
	if err != nil {
		return g, err
	}
	for _, ic := range cfg.Interfaces {
		g.clusterAddrs = append(g.clusterAddrs, ic.Addrs()...)
	}
	if err := g.refreshLocal(); err != nil {
		return g, err
	}
	for _, ic := range cfg.Interfaces {
		if len(ic.IPv4)+len(ic.IPv6) == 0 {
			continue
		}
		r, err := arp.Start(arp.Config{Interface: ic.Name, ClusterMAC: ic.ClusterMAC, NDMAC: ic.NDMAC,
			IPv4: ic.IPv4, IPv6: ic.IPv6, Router: true, Logger: log})
		if err != nil {
			return g, err
		}
		g.responders = append(g.responders, r)
	}
	if cfg.Snapshot != "" {
		g.restoreSnapshot(cfg.Snapshot, cfg.Match, cfg.SnapshotMaxAge)
	}
	g.dp.Start()
	// Timed-out connections are removed in the background, a few shards
	// at a time, the whole table every conntrack.DefaultSweepPeriod.
	g.sweeper = g.tracker.StartSweeper(g.clock.Now, 0)
	if err := g.followKernel(); err != nil {
		return g, err
	}
	go g.watchPorts(time.Second)
	if g.flows != nil {
		go g.reconcileCache(reconcileEvery)
	}
	g.running = true
	for i, ic := range cfg.Interfaces {
		log.Debug("dataplane started", "interface", ic.Name, "cluster_mac", ic.ClusterMAC.String(), "mode", g.modes[i].String(), "match", cfg.Match.String())
	}
	return g, nil
}

// Dataplane returns the workers' dataplane: its counters, match, route
// cache generation and clock. Its methods other than Start and Stop (which
// belong to Start and Close) may be called concurrently.
func (g *Gateway) Dataplane() *dataplane.Dataplane { return g.dp }

// Tracker returns the connection table (safe for concurrent use).
func (g *Gateway) Tracker() *conntrack.Table { return g.tracker }

// Resolver returns the netlink route resolver the workers ask on a route
// cache miss (safe for concurrent use).
func (g *Gateway) Resolver() *NetlinkResolver { return g.resolver }

// Responders returns the ARP/ND responders, one per interface that has
// cluster addresses. The slice is the caller's; a Responder is safe for
// concurrent use.
func (g *Gateway) Responders() []*arp.Responder { return slices.Clone(g.responders) }

// FlowCache returns the XDP fast path's flow cache, nil when the fast
// path is off (FastPathReason says why). It is safe for concurrent use.
func (g *Gateway) FlowCache() *xsk.FlowCache { return g.flows }

// IOFallback says why dataplane.io auto fell back to raw sockets (AF_XDP
// could not be set up: a missing capability, the kernel, the driver), ""
// when it did not.
func (g *Gateway) IOFallback() string { return g.ioFallback }

// FastPathReason says why the fast path is off ("" when it is on).
func (g *Gateway) FastPathReason() string { return g.fastReason }

// Programs returns the XDP program of each interface, in the order of
// Config.Interfaces; none with the raw-socket backend. The slice is the
// caller's; a Program is safe for concurrent use.
func (g *Gateway) Programs() []*xsk.Program { return slices.Clone(g.programs) }

// FastPrograms returns the programs that carry the fast path, one per
// interface in the order of Config.Interfaces: the XDP programs with
// AF_XDP, the tc programs with raw sockets; none when the fast path is off.
// FastPathHook says which.
func (g *Gateway) FastPrograms() []xsk.FastCounters {
	var out []xsk.FastCounters
	switch {
	case g.flows == nil:
	case len(g.tcPrograms) > 0:
		for _, p := range g.tcPrograms {
			out = append(out, p)
		}
	default:
		for _, p := range g.programs {
			out = append(out, p)
		}
	}
	return out
}

// FastPathHook is where the fast path runs: "xdp", "tc", or "" when it is
// off.
func (g *Gateway) FastPathHook() string {
	switch {
	case g.flows == nil:
		return ""
	case len(g.tcPrograms) > 0:
		return "tc"
	}
	return "xdp"
}

// TCPrograms returns the fast path's tc program of each interface, in the
// order of Config.Interfaces, with the raw-socket backend and the fast path
// on; none otherwise. The slice is the caller's; a TCProgram is safe for
// concurrent use.
func (g *Gateway) TCPrograms() []*xsk.TCProgram { return slices.Clone(g.tcPrograms) }

// NewConns returns the number of new connections owned by node (0-based,
// below cluster.MaxNodes) since Start. Every node tracks every connection,
// so each gateway counts the whole cluster's.
func (g *Gateway) NewConns(node int) uint64 { return g.newConns[node].Load() }

// Modes describes how each interface runs (e.g. "xdp native, afxdp
// copy, 2 queue(s)" or "afpacket, 1 queue"), in the order of
// Config.Interfaces. The slice is the caller's.
func (g *Gateway) Modes() []string { return node.Strings(g.modes) }

// InterfaceModes is Modes as structured values.
func (g *Gateway) InterfaceModes() []node.Mode { return slices.Clone(g.modes) }

// followKernel flushes the workers' route caches when the kernel's routes
// or neighbours change, at most every 100 ms (neighbour states change
// often), and keeps the node's own addresses and the resolver's neighbour
// map fresh. The netlink sockets belong to the calling thread's namespace,
// which is kept (g.ns) so that a subscription that ends unexpectedly (the
// library closes it on any receive error, e.g. ENOBUFS under neighbour
// churn) is logged, counted (KernelFollowRestarts) and made again in the
// same namespace after a short back-off, with everything it feeds dumped
// again.
func (g *Gateway) followKernel() error {
	g.done = make(chan struct{})
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("follow the kernel: the node's network namespace: %w", err)
	}
	g.ns = ns
	s, err := g.subscribeKernel()
	if err != nil {
		// Entering a namespace by name takes CAP_SYS_ADMIN, which the
		// daemon does not have; it runs, whole, in the namespace it
		// follows, so subscribing where the thread is is the same.
		g.nsUnnamed = true
		s, err = g.subscribeKernel()
	}
	if err != nil {
		return err
	}
	g.resolver.followNeighbours()
	g.followed = make(chan struct{})
	go g.follow(s)
	return nil
}

// followBuffer is the receive buffer of each kernel subscription
// (SO_RCVBUFFORCE: above net.core.rmem_max, the daemon has CAP_NET_ADMIN),
// large enough for bursts of neighbour events.
const followBuffer = 4 << 20

// followBackoff bounds the wait before a subscription is made again: it
// starts at the minimum and doubles while subscriptions keep failing
// quickly, so that a persistent failure cannot spin.
const (
	followBackoffMin = 100 * time.Millisecond
	followBackoffMax = 5 * time.Second
)

// subscribeRoutes and subscribeNeighs make the kernel subscriptions (tests
// replace them to end one).
var (
	subscribeRoutes = netlink.RouteSubscribeWithOptions
	subscribeNeighs = netlink.NeighSubscribeWithOptions
)

// kernelSub is one pair of subscriptions, routes and neighbours, ended
// together by closing done.
type kernelSub struct {
	done   chan struct{}
	routes chan netlink.RouteUpdate
	neighs chan netlink.NeighUpdate
	// which subscriptions were made (their channels close once done is).
	routesOn, neighsOn bool
	mu                 sync.Mutex
	err                error // the last error the library reported
}

func (s *kernelSub) setErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *kernelSub) lastErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		return errors.New("no error reported")
	}
	return s.err
}

// stop ends both subscriptions and waits until the library's goroutines
// have closed their channels (they may be blocked sending to them).
func (s *kernelSub) stop() {
	close(s.done)
	if s.routesOn {
		for range s.routes {
		}
	}
	if s.neighsOn {
		for range s.neighs {
		}
	}
}

// subscribeKernel subscribes to route and neighbour events in g.ns.
func (g *Gateway) subscribeKernel() (*kernelSub, error) {
	s := &kernelSub{done: make(chan struct{}), routes: make(chan netlink.RouteUpdate, 256), neighs: make(chan netlink.NeighUpdate, 256)}
	cb := func(err error) {
		s.setErr(err)
		g.log.Debug("kernel subscription error", "error", err)
	}
	var in *netns.NsHandle
	if !g.nsUnnamed {
		in = &g.ns
	}
	if err := subscribeRoutes(s.routes, s.done, netlink.RouteSubscribeOptions{Namespace: in, ErrorCallback: cb,
		ReceiveBufferSize: followBuffer, ReceiveBufferForceSize: true}); err != nil {
		s.stop()
		return nil, fmt.Errorf("subscribe to route changes: %w", err)
	}
	s.routesOn = true
	if err := subscribeNeighs(s.neighs, s.done, netlink.NeighSubscribeOptions{Namespace: in, ErrorCallback: cb,
		ReceiveBufferSize: followBuffer, ReceiveBufferForceSize: true}); err != nil {
		s.stop()
		return nil, fmt.Errorf("subscribe to neighbour changes: %w", err)
	}
	s.neighsOn = true
	return s, nil
}

// follow handles the events of s, and of the subscriptions that replace it,
// until Close.
func (g *Gateway) follow(s *kernelSub) {
	defer close(g.followed)
	defer func() {
		g.resolver.unfollowNeighbours() // the events stop here
		if s != nil {
			s.stop()
		}
	}()
	// A change is applied 100 ms after the first event of a burst (neighbour
	// states change often); the timer runs only while a change waits, so
	// an idle gateway is not woken ten times a second for nothing.
	tick := time.NewTimer(time.Hour)
	tick.Stop()
	defer tick.Stop()
	dirty := false
	changed := func() {
		if !dirty {
			dirty = true
			tick.Reset(100 * time.Millisecond)
		}
	}
	backoff := followBackoffMin
	since := time.Now()
	for {
		ended := ""
		select {
		case _, ok := <-s.routes:
			if !ok {
				ended = "route"
				break
			}
			changed()
		case u, ok := <-s.neighs:
			if !ok {
				ended = "neighbour"
				break
			}
			g.resolver.neighbourEvent(u)
			changed()
		case <-tick.C:
			if dirty {
				g.kernelChanged()
				dirty = false
			}
		case <-g.done:
			return
		}
		if ended == "" {
			continue
		}
		// The subscription ended without Close: the events are lost from
		// here until a new one is made, so the resolver dumps on every
		// miss meanwhile, and what the events fed is read again after.
		g.followRestarts.Add(1)
		g.resolver.unfollowNeighbours()
		g.log.Warn("kernel following stopped, subscribing again", "subscription", ended, "error", s.lastErr(), "after", time.Since(since).Round(time.Millisecond))
		s.stop()
		s = nil
		if time.Since(since) > 10*followBackoffMax {
			backoff = followBackoffMin
		}
		for s == nil {
			select {
			case <-g.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, followBackoffMax)
			var err error
			if s, err = g.subscribeKernel(); err != nil {
				g.log.Warn("kernel following: subscribe again", "error", err, "retry_in", backoff)
			}
		}
		since = time.Now()
		g.resolver.followNeighbours()
		g.kernelChanged()
		dirty = false
	}
}

// kernelChanged flushes the workers' route caches and reads the node's own
// addresses again.
func (g *Gateway) kernelChanged() {
	g.dp.FlushRoutes()
	if err := g.refreshLocal(); err != nil {
		g.log.Warn("dataplane: the node's own addresses are not updated", "error", err)
	}
}

// KernelFollowRestarts counts the kernel subscriptions (route and
// neighbour events) that ended unexpectedly and were made again.
func (g *Gateway) KernelFollowRestarts() uint64 { return g.followRestarts.Load() }

// watchPorts logs, with the port (interface and queue), every increase of
// a port's error counters: TX failures (e.g. the link went down), frames
// the kernel dropped, a full TX ring. The workers only count.
func (g *Gateway) watchPorts(every time.Duration) {
	last := make([]dataplane.PortStats, len(g.ports))
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-g.done:
			return
		case <-tick.C:
		}
		for i, p := range g.ports {
			st := p.Stats()
			prev := last[i]
			last[i] = st
			if st.TxErrors > prev.TxErrors || st.RxDropped > prev.RxDropped || st.TxRingFull > prev.TxRingFull || st.RxFillEmpty > prev.RxFillEmpty {
				g.log.Warn("dataplane port errors", "port", p.Name(),
					"tx_errors", st.TxErrors-prev.TxErrors, "rx_dropped", st.RxDropped-prev.RxDropped,
					"tx_ring_full", st.TxRingFull-prev.TxRingFull, "fill_ring_empty", st.RxFillEmpty-prev.RxFillEmpty)
			}
		}
	}
}

// openXDP opens one AF_XDP port per usable RX queue of every interface
// and attaches our program. The kernel's allocated queue count can exceed
// the real one (veth), so it binds until the kernel refuses, then keeps the
// count every interface has.
func (g *Gateway) openXDP(h *netlink.Handle, cfg Config) ([]dataplane.Iface, error) {
	perIface := make([][]*xsk.Port, len(cfg.Interfaces))
	queues := -1
	for i, ic := range cfg.Interfaces {
		link, err := h.LinkByIndex(g.links[i])
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", ic.Name, err)
		}
		n := max(link.Attrs().NumRxQueues, 1)
		for q := 0; q < n; q++ {
			p, err := xsk.OpenPort(ic.Name, g.links[i], q, cfg.Port)
			if err != nil {
				if q == 0 {
					return nil, err
				}
				break
			}
			perIface[i] = append(perIface[i], p)
			g.ports = append(g.ports, p)
		}
		if queues < 0 || len(perIface[i]) < queues {
			queues = len(perIface[i])
		}
	}
	if cfg.Queues > 0 && cfg.Queues < queues {
		queues = cfg.Queues
	}
	var ifaces []dataplane.Iface
	for i, ic := range cfg.Interfaces {
		link, _ := h.LinkByIndex(g.links[i])
		prog, err := xsk.NewProgram(ic.ClusterMAC, g.flows)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", ic.Name, err)
		}
		g.programs = append(g.programs, prog)
		ifc := dataplane.Iface{Name: ic.Name, NoNewConnections: ic.NoNewConnections}
		copy(ifc.MAC[:], link.Attrs().HardwareAddr)
		for q, p := range perIface[i][:queues] {
			if err := prog.Register(q, p.FD()); err != nil {
				return nil, fmt.Errorf("interface %s: %w", ic.Name, err)
			}
			ifc.Ports = append(ifc.Ports, p)
		}
		mode := cfg.XDPMode
		if mode == bpfutil.ModeAuto && bpfutil.AutoGeneric(link) && queues > 1 {
			// Generic XDP sees every frame of a veth on queue 0: one
			// socket would get them all.
			mode = bpfutil.ModeNative
			g.log.Info("xdp_mode auto: native on a veth with several queues (generic XDP would see every frame on queue 0)", "interface", ic.Name, "queues", queues)
		}
		xm, err := prog.Attach(g.links[i], mode)
		if err != nil {
			return nil, err
		}
		if mode == bpfutil.ModeAuto && xm == bpfutil.ModeGeneric && bpfutil.AutoGeneric(link) {
			g.log.Info("xdp_mode auto: generic on veth (xdp_mode: native overrides)", "interface", ic.Name, "why", bpfutil.VethGenericReason)
		}
		cp := node.Copy
		if perIface[i][0].ZeroCopy() {
			cp = node.CopyZero
		}
		g.modes = append(g.modes, node.Mode{Role: node.RoleGateway, XDP: xm.String(), IO: node.IOAFXDP, Copy: cp, Queues: queues})
		ifaces = append(ifaces, ifc)
	}
	return ifaces, nil
}

// openPacket opens the raw-socket ports: with the fast path on, it
// attaches the tc program to every interface and opens two ports on each,
// bound to ETH_P_IP and ETH_P_IPV6 (they see only what the program leaves
// to the stack; the workers' queue 0 reads IPv4, queue 1 IPv6); else one
// port per interface bound to every frame. If the tc program cannot be
// loaded or attached, the fast path goes off (the reason is logged).
func (g *Gateway) openPacket(h *netlink.Handle, cfg Config) ([]dataplane.Iface, error) {
	opts := cfg.Packet
	if opts == (afpacket.Options{}) {
		opts = afpacket.DefaultOptions()
	}
	if g.flows != nil && len(g.tcPrograms) == 0 {
		if port := bridgePort(h, cfg, g.links); port != "" {
			g.fastPathOff(port + ": raw sockets bound per family, which the tc fast path needs, are served after the bridge or bond takes its frames")
		} else if err := g.attachTC(cfg); err != nil {
			g.fastPathOff(fmt.Sprintf("the tc fast path for the raw-socket backend cannot be set up: %v", err))
		}
	}
	protos := []uint16{0}
	if len(g.tcPrograms) > 0 {
		protos = []uint16{unix.ETH_P_IP, unix.ETH_P_IPV6}
	}
	var ifaces []dataplane.Iface
	for i, ic := range cfg.Interfaces {
		link, err := h.LinkByIndex(g.links[i])
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", ic.Name, err)
		}
		g.groOff(ic.Name)
		ifc := dataplane.Iface{Name: ic.Name, NoNewConnections: ic.NoNewConnections}
		for _, proto := range protos {
			o := opts
			o.Protocol = proto
			p, err := afpacket.Open(ic.Name, g.links[i], ic.ClusterMAC, o)
			if err != nil {
				return nil, err
			}
			g.ports = append(g.ports, p)
			ifc.Ports = append(ifc.Ports, p)
		}
		copy(ifc.MAC[:], link.Attrs().HardwareAddr)
		g.modes = append(g.modes, node.Mode{Role: node.RoleGateway, XDP: node.None, IO: node.IOAFPacket, Copy: node.Copy,
			Queues: len(protos), TC: len(g.tcPrograms) > 0})
		ifaces = append(ifaces, ifc)
	}
	return ifaces, nil
}

// groBackOn turns GRO back on where groOff turned it off and, if all
// went back, removes the record of it; those that did not stay in
// groRestore, so that a later groOff's record keeps them.
func (g *Gateway) groBackOn() []error {
	var errs []error
	var failed []string
	for _, name := range g.groRestore {
		if err := setGRO(g.ethtool, name, true); err != nil {
			errs = append(errs, fmt.Errorf("turn GRO back on: %w", err))
			failed = append(failed, name)
		}
	}
	if len(g.groRestore) > 0 && len(failed) == 0 && g.cfg.GROState != "" {
		if err := os.Remove(g.cfg.GROState); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove the GRO record: %w", err))
		}
	}
	g.groRestore = failed
	return errs
}

// groOff turns generic receive offload off on a raw-socket interface,
// remembering to turn it back on at Close: GRO merges a TCP flow's
// segments before the stack's packet sockets see them, and a merged packet
// is longer than a ring slot, so the workers would get it truncated and
// drop it as malformed (a connection whose data reached the workers would
// stall). XDP runs before GRO, so AF_XDP never needs this.
func (g *Gateway) groOff(name string) {
	if !g.openEthtool(name) {
		return
	}
	on, err := groOn(g.ethtool, name)
	if err != nil || !on {
		return
	}
	if err := writeGROState(g.cfg.GROState, append(g.groRestore, name)); err != nil {
		g.log.Warn("raw sockets: GRO is on and left on: the change could not be recorded for the next start; "+
			"the workers will drop the merged TCP packets they get as malformed; turn it off: ethtool -K "+name+" gro off",
			"interface", name, "error", err)
		return
	}
	if err := setGRO(g.ethtool, name, false); err != nil {
		g.log.Warn("raw sockets: GRO is on and cannot be turned off: the workers will drop the merged TCP packets they get as malformed; "+
			"turn it off: ethtool -K "+name+" gro off", "interface", name, "error", err)
		return
	}
	g.groRestore = append(g.groRestore, name)
	g.log.Info("raw sockets: turned GRO off (merged packets are longer than a ring slot); it is turned back on at exit", "interface", name)
}

// takingMasters are the link types whose ports' frames their master
// takes (its rx_handler) before the stack's per-protocol handlers run: a
// VRF's members keep theirs.
var takingMasters = map[string]bool{"bridge": true, "bond": true, "team": true, "openvswitch": true}

// bridgePort names the first data interface that is a port of a bridge, a
// bond, a team or Open vSwitch, "" when none is.
func bridgePort(h *netlink.Handle, cfg Config, links []int) string {
	for i, ifindex := range links {
		l, err := h.LinkByIndex(ifindex)
		if err != nil || l.Attrs().MasterIndex == 0 {
			continue
		}
		m, err := h.LinkByIndex(l.Attrs().MasterIndex)
		if err != nil {
			return fmt.Sprintf("interface %s is a port of interface %d", cfg.Interfaces[i].Name, l.Attrs().MasterIndex)
		}
		if takingMasters[m.Type()] {
			return fmt.Sprintf("interface %s is a port of %s %s", cfg.Interfaces[i].Name, m.Type(), m.Attrs().Name)
		}
	}
	return ""
}

// openEthtool opens the socket GRO is read and set through, once, in the
// calling thread's (the node's) namespace; false if it cannot.
func (g *Gateway) openEthtool(name string) bool {
	if g.ethtool >= 0 {
		return true
	}
	fd, err := ethtoolSocket()
	if err != nil {
		g.log.Warn("raw sockets: cannot check GRO", "interface", name, "error", err)
		return false
	}
	g.ethtool = fd
	return true
}

// restoreGRO turns GRO back on where an earlier run recorded turning it
// off (cfg.GROState) and did not stop cleanly, then removes the record.
func (g *Gateway) restoreGRO() {
	names, err := readGROState(g.cfg.GROState)
	if err != nil {
		g.log.Warn("an earlier run's GRO record cannot be read: check the data interfaces' GRO (ethtool -k)", "path", g.cfg.GROState, "error", err)
		return
	}
	if len(names) == 0 || !g.openEthtool(names[0]) {
		return
	}
	var failed []string
	for _, name := range names {
		if err := setGRO(g.ethtool, name, true); err != nil {
			if errors.Is(err, unix.ENODEV) {
				continue // the interface is gone, and its GRO with it
			}
			g.log.Warn("an earlier run turned GRO off and it cannot be turned back on; kept in the record, tried again at exit", "interface", name, "error", err)
			failed = append(failed, name)
			continue
		}
		g.log.Info("turned GRO back on: an earlier run turned it off and did not stop cleanly", "interface", name)
	}
	if len(failed) > 0 {
		// Close tries them again; the record keeps them meanwhile.
		g.groRestore = failed
		if err := writeGROState(g.cfg.GROState, failed); err != nil {
			g.log.Warn("rewrite the GRO record", "path", g.cfg.GROState, "error", err)
		}
		return
	}
	if err := os.Remove(g.cfg.GROState); err != nil && !errors.Is(err, os.ErrNotExist) {
		g.log.Warn("remove the GRO record", "path", g.cfg.GROState, "error", err)
	}
}

// attachTC loads the fast path's tc program for each interface and
// attaches it at tc ingress; on error it undoes what it did.
func (g *Gateway) attachTC(cfg Config) (err error) {
	defer func() {
		if err != nil {
			for _, p := range g.tcPrograms {
				p.Close()
			}
			g.tcPrograms = nil
		}
	}()
	for i, ic := range cfg.Interfaces {
		p, err := xsk.NewTCProgram(ic.ClusterMAC, g.flows)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ic.Name, err)
		}
		g.tcPrograms = append(g.tcPrograms, p)
		if err := p.Attach(g.links[i]); err != nil {
			return fmt.Errorf("interface %s: %w", ic.Name, err)
		}
	}
	return nil
}

// closePorts releases the ports and programs opened so far.
func (g *Gateway) closePorts() {
	for _, p := range g.programs {
		p.Close()
	}
	for _, p := range g.tcPrograms {
		p.Close()
	}
	g.tcPrograms = nil
	for _, p := range g.ports {
		p.Close()
	}
	g.programs, g.ports, g.modes = nil, nil, nil
}

// Close stops the workers, detaches the programs and frees the rings. It
// may be called more than once.
func (g *Gateway) Close() error {
	g.once.Do(func() { g.closeErr = g.close() })
	return g.closeErr
}

func (g *Gateway) close() error {
	var errs []error
	if g.done != nil {
		close(g.done)
	}
	if g.followed != nil {
		<-g.followed
	}
	if g.ns.IsOpen() {
		g.ns.Close()
	}
	for _, r := range g.responders {
		errs = append(errs, r.Close())
	}
	if g.dp != nil {
		g.dp.Stop()
	}
	if g.sweeper != nil {
		g.sweeper.Stop()
	}
	if g.running && g.cfg.Snapshot != "" {
		errs = append(errs, g.saveSnapshot(g.cfg.Snapshot, g.dp.Match()))
	}
	for _, p := range g.programs {
		errs = append(errs, p.Detach())
	}
	for _, p := range g.tcPrograms {
		errs = append(errs, p.Detach())
	}
	for _, p := range g.ports {
		errs = append(errs, p.Close())
	}
	for _, p := range g.programs {
		errs = append(errs, p.Close())
	}
	for _, p := range g.tcPrograms {
		errs = append(errs, p.Close())
	}
	errs = append(errs, g.groBackOn()...)
	if g.ethtool >= 0 {
		unix.Close(g.ethtool)
		g.ethtool = -1
	}
	if g.flows != nil {
		errs = append(errs, g.flows.Close())
	}
	if g.handle != nil {
		g.handle.Close()
	}
	if g.sender != nil {
		errs = append(errs, g.sender.Close())
	}
	return errors.Join(errs...)
}

// Health reports whether the dataplane can serve: nil when every data
// interface is up and still runs our XDP program (with AF_XDP) or our tc
// program (with raw sockets and the fast path), else an
// error saying what is wrong. It asks the kernel each time.
func (g *Gateway) Health() error {
	select {
	case <-g.done:
		return errors.New("the dataplane is stopped")
	default:
	}
	for i, ifindex := range g.links {
		var prog *ebpf.Program
		if i < len(g.programs) && g.programs[i] != nil {
			prog = g.programs[i].Prog
		}
		if err := bpfutil.CheckAttached(g.handle, ifindex, prog); err != nil {
			return err
		}
		if i < len(g.tcPrograms) {
			if err := g.tcPrograms[i].Attached(); err != nil {
				return fmt.Errorf("interface %s: %w", g.cfg.Interfaces[i].Name, err)
			}
		}
	}
	return nil
}
