// Package dataplane is the gateway's packet path: a pool of workers, one
// per queue, each owning that queue's Port on every data interface (so
// every TX ring has one producer). A worker receives a batch, parses it,
// tracks every packet's connection, decides with the cluster match whether
// this node owns it, and forwards owned packets out of the egress
// interface the kernel's routing table names, to the next hop's MAC from
// the kernel's neighbour table; foreign and invalid frames go back to the
// fill ring.
//
// No allocation, lock or log call happens per packet. Counters are
// per-worker and published once per batch; the node mask is read through
// one atomic load per batch, so SetMatch takes effect at once without
// touching connection state.
package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/packet"
)

// Verdict is what happened to a received frame. Its String (generated:
// verdict_string.go) is the metric label, the line comment of its constant.
type Verdict uint8

//go:generate go run golang.org/x/tools/cmd/stringer@v0.52.0 -type=Verdict -linecomment -output=verdict_string.go

// Verdicts.
const (
	// Owned and sent
	Forwarded Verdict = iota // forwarded
	// Another node's share, dropped
	Foreign // foreign
	// No connection (conntrack INVALID/UNTRACKED), dropped
	Invalid // invalid
	// Could not be parsed, dropped
	Malformed // malformed
	// Not IPv4/IPv6 (should not reach the dataplane), dropped
	NotIP // not_ip
	// No route out of a data interface, dropped
	NoRoute // no_route
	// Next hop's MAC not known yet (resolution triggered), dropped
	NoNeighbour // no_neighbour
	// TTL / hop limit would reach 0, dropped
	TTLExpired // ttl_expired
	// No TX buffer or ring slot, dropped
	TxFull // tx_full
	// Addressed to the node itself, dropped
	Local // local
	// Owned; handed to the kernel to send while it resolves the next hop
	ForwardedKernel // forwarded_kernel

	// What a Linux router does not forward (see packet.Classify and
	// Resolver). The address checks run on every node before tracking;
	// the route-type ones on the owner.

	// Loopback, 0.0.0.0, multicast or broadcast source, IPv6 ::, ::1 or multicast, or one of the node's own IPv4 addresses
	MartianSource // martian_source
	// 0.0.0.0, loopback, IPv6 :: or ::1, or a route type a router does not forward to (anycast...)
	MartianDestination // martian_destination
	// Limited broadcast, or a broadcast route (a directed broadcast)
	Broadcast // broadcast
	// A multicast destination (no multicast routing), or a multicast route
	Multicast // multicast
	// IPv4 169.254/16 or IPv6 fe80::/10 source or destination
	LinkLocal // link_local
	// A blackhole route
	RouteBlackhole // route_blackhole
	// An unreachable route
	RouteUnreachable // route_unreachable
	// A prohibit route
	RouteProhibit // route_prohibit

	// NumVerdicts is the number of verdicts (untyped: not a verdict).
	NumVerdicts = iota
)

// Sent reports whether a verdict means the packet went out.
func (v Verdict) Sent() bool { return v == Forwarded || v == ForwardedKernel }

// Counters are one worker's counts for one ingress interface. Each field
// is written by its worker only (once per batch) and may be read at any
// time by others.
type Counters struct {
	Packets   [NumVerdicts]atomic.Uint64
	Bytes     [NumVerdicts]atomic.Uint64
	Malformed [packet.NumReasons]atomic.Uint64
	Invalid   [conntrack.NumReasons]atomic.Uint64
	// Owner counts packets with a connection by the node (0-based bucket)
	// that owns them, whichever node this is: every node sees every packet.
	Owner [cluster.MaxNodes]atomic.Uint64
	// Connections installed into and removed from the flow cache (both
	// directions each), and cache calls that failed (their connections
	// stay on the slow path, which re-installs them later).
	Installs, Removals, CacheErrors atomic.Uint64
	Batches                         atomic.Uint64
	// BatchFrames is the sum of the receive batches' sizes: the frames
	// received in the batches Batches counts (the histogram's exact sum).
	BatchFrames atomic.Uint64
	// BatchSizes is a histogram of receive batch sizes: bucket i counts
	// batches of up to 2^i frames.
	BatchSizes [8]atomic.Uint64
}

// Route is where a destination goes.
type Route struct {
	Iface   int     // index into the dataplane's interfaces
	NextHop [6]byte // next hop's MAC
	// Verdict is Forwarded when usable, else why not: NoRoute,
	// NoNeighbour, or the route's type when it is not unicast (Local,
	// Broadcast, Multicast, RouteBlackhole, RouteUnreachable,
	// RouteProhibit, MartianDestination for any other).
	Verdict Verdict
}

// Resolver finds routes; it is called off the per-packet path (workers
// cache its answers per destination) and must be safe for concurrent
// use. It sees only the destination: the checks that need the source run
// in the worker (packet.Classify and the node's own addresses, see
// SetLocalAddrs), so the cache stays per destination.
//
// A unicast route back out of the ingress interface is followed, as the
// kernel does for a unicast route (it also sends an ICMP redirect; we
// send none). Everything else the kernel would never send back out of
// its ingress interface (broadcast, multicast, link-local) is dropped
// before the route is looked at.
type Resolver interface {
	Resolve(family packet.Family, dst [16]byte) Route
}

// IO is the packet I/O a gateway's ports use.
type IO string

// Packet I/O kinds, as the configuration (dataplane.io) spells them.
const (
	IOAuto     IO = "auto"     // on veth with the fast path raw sockets and tc; else AF_XDP, else raw sockets with a warning saying why ("" too)
	IOAFXDP    IO = "afxdp"    // AF_XDP or fail
	IOAFPacket IO = "afpacket" // raw sockets (TPACKET_V2 rings)
)

// Validate reports an IO that is none of the kinds.
func (io IO) Validate() error {
	switch io {
	case "", IOAuto, IOAFXDP, IOAFPacket:
		return nil
	}
	return fmt.Errorf("%q: must be one of auto, afxdp, afpacket", string(io))
}

// Iface is one data interface.
type Iface struct {
	Name  string
	MAC   [6]byte // own MAC: the source of forwarded frames
	Ports []Port  // by queue
	// NoNewConnections: packets arriving here never open a connection
	// (conntrack.Table.TrackBatchExisting); only those of connections
	// opened on another interface, or RELATED to one, pass.
	NoNewConnections bool
}

// Config are the dataplane's parts.
type Config struct {
	Ifaces   []Iface
	Match    cluster.Match
	Tracker  *conntrack.Table
	Resolver Resolver
	// BatchSize bounds a receive batch (default and maximum 64).
	BatchSize int
	// SlowPath, if set, sends an owned IP packet (TTL already
	// decremented) through the kernel when the next hop's MAC is not known
	// yet, as a kernel router queues it while resolving. It is called from
	// a control goroutine, never from a worker.
	SlowPath func(family packet.Family, ip []byte)
	// FlowCache, if set, is the kernel fast path the workers install
	// connections into and remove them from, as the tracker's
	// Result.Offload says (the tracker needs the matching Offloader:
	// conntrack.Table.SetOffloader). Nil: every packet through the
	// workers.
	FlowCache FlowCache
	// Clock is the time origin of every worker's Track calls; whatever
	// else uses the tracker (its sweeper, snapshots) must use the same
	// one. Zero: New makes one.
	Clock conntrack.Clock
}

// Dataplane runs the workers.
type Dataplane struct {
	cfg      Config
	match    atomic.Pointer[cluster.Match]
	local    atomic.Pointer[localSet]
	workers  []*worker
	stop     chan struct{}
	wg       sync.WaitGroup
	routeGen atomic.Uint64
}

// New checks the configuration and prepares one worker per queue.
func New(cfg Config) (*Dataplane, error) {
	if len(cfg.Ifaces) == 0 {
		return nil, errors.New("dataplane: no interfaces")
	}
	if cfg.Tracker == nil || cfg.Resolver == nil {
		return nil, errors.New("dataplane: tracker and resolver are required")
	}
	if err := cfg.Match.Validate(); err != nil {
		return nil, fmt.Errorf("dataplane: %w", err)
	}
	if cfg.BatchSize <= 0 || cfg.BatchSize > conntrack.BatchSize {
		cfg.BatchSize = conntrack.BatchSize
	}
	queues := len(cfg.Ifaces[0].Ports)
	for _, ifc := range cfg.Ifaces {
		if len(ifc.Ports) != queues {
			return nil, fmt.Errorf("dataplane: interface %s has %d queues, %s has %d: every data interface needs the same number",
				ifc.Name, len(ifc.Ports), cfg.Ifaces[0].Name, queues)
		}
	}
	if cfg.Clock.IsZero() {
		cfg.Clock = conntrack.NewClock()
	}
	d := &Dataplane{cfg: cfg, stop: make(chan struct{})}
	m := cfg.Match
	d.match.Store(&m)
	if cfg.FlowCache != nil {
		if err := cfg.FlowCache.SetMatch(m.NodeMask, m.Invert); err != nil {
			return nil, fmt.Errorf("dataplane: flow cache: %w", err)
		}
	}
	for q := 0; q < queues; q++ {
		d.workers = append(d.workers, newWorker(d, q))
	}
	return d, nil
}

// Start runs the workers (and the slow path's drainer).
func (d *Dataplane) Start() {
	if d.cfg.SlowPath != nil {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.drainSlow()
		}()
	}
	for _, w := range d.workers {
		d.wg.Add(1)
		go func(w *worker) {
			defer d.wg.Done()
			w.run()
		}(w)
	}
}

// Stop stops the workers and waits for them.
func (d *Dataplane) Stop() {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	d.wg.Wait()
}

// Clock returns the workers' clock: the origin of the tracker's times.
func (d *Dataplane) Clock() conntrack.Clock { return d.cfg.Clock }

// Match returns the match in force.
func (d *Dataplane) Match() cluster.Match { return *d.match.Load() }

// SetMatch swaps the match (e.g. a wider node mask to take over a failed
// peer's share); workers see it at their next batch. Only the node mask and
// invert flag may change at run time: connections remember their bucket,
// which depends on the seed and node count.
func (d *Dataplane) SetMatch(m cluster.Match) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if err := d.match.Load().CanChangeTo(m); err != nil {
		return err
	}
	if c := d.cfg.FlowCache; c != nil {
		// The fast path first: a failure leaves both on the old match.
		if err := c.SetMatch(m.NodeMask, m.Invert); err != nil {
			return fmt.Errorf("flow cache: %w", err)
		}
	}
	d.match.Store(&m)
	return nil
}

// SetLocalAddrs replaces the node's own addresses (its kernel's addresses
// and the cluster addresses it answers for). Workers drop an IPv4 packet
// from one of them as a martian source (the kernel's fib_validate_source
// does; IPv6 forwarding does not check, nor do we) and count one to one
// of them as local; they see the new set at their next batch.
func (d *Dataplane) SetLocalAddrs(addrs []netip.Addr) { d.local.Store(newLocalSet(addrs)) }

// FlushRoutes makes every worker forget its cached routes at its next
// batch (call on route or neighbour changes).
func (d *Dataplane) FlushRoutes() { d.routeGen.Add(1) }

// RouteGeneration counts FlushRoutes calls.
func (d *Dataplane) RouteGeneration() uint64 { return d.routeGen.Load() }

// Counters returns the counters of worker q for ingress interface i.
func (d *Dataplane) Counters(q, i int) *Counters { return &d.workers[q].counters[i] }

// Queues is the number of workers.
func (d *Dataplane) Queues() int { return len(d.workers) }

// Ifaces returns the interfaces.
func (d *Dataplane) Ifaces() []Iface { return d.cfg.Ifaces }

// Totals sums every worker's counters for one ingress interface (-1: all).
func (d *Dataplane) Totals(iface int) (pkts, bytes [NumVerdicts]uint64, owner [cluster.MaxNodes]uint64) {
	for _, w := range d.workers {
		for i := range w.counters {
			if iface >= 0 && i != iface {
				continue
			}
			c := &w.counters[i]
			for v := range pkts {
				pkts[v] += c.Packets[v].Load()
				bytes[v] += c.Bytes[v].Load()
			}
			for b := range owner {
				owner[b] += c.Owner[b].Load()
			}
		}
	}
	return pkts, bytes, owner
}
