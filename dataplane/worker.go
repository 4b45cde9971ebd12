package dataplane

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/packet"
)

// routeTTL bounds how long a worker trusts a cached route; a failed
// resolution is retried sooner.
const (
	routeTTL         = time.Second
	negativeRouteTTL = 20 * time.Millisecond
	idleSpins        = 64
	pollTimeoutMs    = 10   // without an eventfd to wake it for Stop
	idlePollMs       = 1000 // with one
)

type routeKey [17]byte

type cachedRoute struct {
	Route
	expires int64
}

// worker owns queue q of every interface.
type worker struct {
	d        *Dataplane
	q        int
	ports    []Port
	counters []Counters

	rx      []Frame
	parsed  []packet.Parsed
	tracked []*packet.Parsed
	idx     []int
	results []conntrack.Result
	tx      [][]Frame

	// This batch's flow cache changes (connections by their original
	// direction), applied once per batch.
	installs []FlowKey
	buckets  []uint8
	removes  []FlowKey

	routes map[routeKey]cachedRoute
	gen    uint64
	pfds   []unix.PollFd
	slow   slowRing

	// Deltas of this batch, published to counters once per batch.
	dPkts, dBytes [NumVerdicts]uint64
	dMal          [packet.NumReasons]uint64
	dInv          [conntrack.NumReasons]uint64
	dOwner        [cluster.MaxNodes]uint64
}

func newWorker(d *Dataplane, q int) *worker {
	n := d.cfg.BatchSize
	w := &worker{d: d, q: q, counters: make([]Counters, len(d.cfg.Ifaces)),
		rx: make([]Frame, n), parsed: make([]packet.Parsed, n), tracked: make([]*packet.Parsed, 0, n),
		idx: make([]int, 0, n), results: make([]conntrack.Result, n), tx: make([][]Frame, len(d.cfg.Ifaces)),
		installs: make([]FlowKey, 0, n), buckets: make([]uint8, 0, n), removes: make([]FlowKey, 0, n),
		routes: make(map[routeKey]cachedRoute)}
	w.slow.wake = make(chan struct{}, 1)
	for i, ifc := range d.cfg.Ifaces {
		w.ports = append(w.ports, ifc.Ports[q])
		w.tx[i] = make([]Frame, 0, n*len(d.cfg.Ifaces))
		w.pfds = append(w.pfds, unix.PollFd{Fd: int32(ifc.Ports[q].FD()), Events: unix.POLLIN})
	}
	return w
}

func (w *worker) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// An idle worker sleeps in poll on its ports' descriptors, so that a
	// frame wakes it at once, with an eventfd beside them that Stop
	// writes: no timeout has to wake it to look at the stop channel. Poll
	// still times out now and then (idlePollMs), a cheap backstop for
	// transmissions held back by a failed kick.
	pfds := w.pfds
	if efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err == nil {
		pfds = append(pfds[:len(pfds):len(pfds)], unix.PollFd{Fd: int32(efd), Events: unix.POLLIN})
		exited, gone := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(gone)
			select {
			case <-w.d.stop:
				unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
			case <-exited:
			}
		}()
		// The waker is done with efd before it is closed: a write after
		// the close could land in a descriptor that reused its number.
		defer func() { close(exited); <-gone; unix.Close(efd) }()
	}
	timeout := idlePollMs
	if len(pfds) == len(w.pfds) {
		timeout = pollTimeoutMs // no eventfd: wake to look at the stop channel
	}
	idle := 0
	for {
		select {
		case <-w.d.stop:
			return
		default:
		}
		busy := false
		m := w.d.match.Load() // one atomic load per round of batches
		if g := w.d.routeGen.Load(); g != w.gen {
			clear(w.routes)
			w.gen = g
		}
		for i, p := range w.ports {
			if n := p.Receive(w.rx); n > 0 {
				busy = true
				w.batch(i, p, w.rx[:n], m)
			}
		}
		if w.slow.pending() {
			w.slow.wakeDrainer()
		}
		if inFlight := w.flush(); busy || inFlight > 0 {
			idle = 0
			continue
		}
		if idle++; idle >= idleSpins {
			unix.Poll(pfds, timeout)
			idle = 0
		}
	}
}

// flush transmits every egress interface's queued frames, reaps
// completed transmissions and returns how many are still in flight.
func (w *worker) flush() (inFlight int) {
	for e, p := range w.ports {
		if len(w.tx[e]) > 0 {
			p.Transmit(w.tx[e])
			w.tx[e] = w.tx[e][:0]
		}
		inFlight += p.Reap()
	}
	return inFlight
}

// batch handles one receive batch from ingress interface in.
func (w *worker) batch(in int, p Port, frames []Frame, m *cluster.Match) {
	now := w.d.cfg.Clock.Now() // the dataplane's one origin, shared with the sweeper
	local := w.d.local.Load()  // one atomic load per batch
	w.tracked = w.tracked[:0]
	w.idx = w.idx[:0]
	for k, f := range frames {
		r := w.parsed[k].Decode(p.Bytes(f))
		switch r {
		case packet.OK:
			// What no router forwards is dropped before it is tracked, on
			// every node: it creates no connection.
			if v := screen(&w.parsed[k], local); v != Forwarded {
				w.count(v, f.Len)
				continue
			}
			w.tracked = append(w.tracked, &w.parsed[k])
			w.idx = append(w.idx, k)
		case packet.NotIP:
			w.count(NotIP, f.Len)
		default:
			w.count(Malformed, f.Len)
			w.dMal[r]++
		}
	}
	if w.d.cfg.Ifaces[in].NoNewConnections {
		w.d.cfg.Tracker.TrackBatchExisting(w.tracked, now, w.results)
	} else {
		w.d.cfg.Tracker.TrackBatch(w.tracked, now, w.results)
	}
	for j, pp := range w.tracked {
		f := frames[w.idx[j]]
		res := &w.results[j]
		if res.Offload != conntrack.OffloadNone {
			w.offload(in, pp, res)
		}
		if res.State == conntrack.Invalid || res.State == conntrack.Untracked {
			w.count(Invalid, f.Len)
			w.dInv[res.Reason]++
			continue
		}
		w.dOwner[res.Tag]++
		if !m.OwnsNode(int(res.Tag)) {
			w.count(Foreign, f.Len)
			continue
		}
		w.count(w.forward(p.Bytes(f), pp, now), f.Len)
	}
	p.Recycle(frames)
	w.applyCache(in)
	w.publish(in, len(frames))
}

// offload queues a connection's flow cache change, keyed by its original
// direction. Changes are applied in runs of one kind, in the batch's
// order: a connection installed and removed in one batch (its last ACK
// and its FIN) ends removed.
func (w *worker) offload(in int, pp *packet.Parsed, res *conntrack.Result) {
	if w.d.cfg.FlowCache == nil {
		return
	}
	k := KeyOf(&pp.Tuple)
	if res.Dir == conntrack.Reply {
		k = k.Reverse()
	}
	if res.Offload == conntrack.OffloadInstall {
		if len(w.removes) > 0 {
			w.applyRemoves(in)
		}
		w.installs = append(w.installs, k)
		w.buckets = append(w.buckets, res.Tag)
		return
	}
	if len(w.installs) > 0 {
		w.applyInstalls(in)
	}
	w.removes = append(w.removes, k)
}

// applyCache makes the batch's remaining flow cache changes.
func (w *worker) applyCache(in int) {
	if len(w.removes) > 0 {
		w.applyRemoves(in)
	}
	if len(w.installs) > 0 {
		w.applyInstalls(in)
	}
}

func (w *worker) applyInstalls(in int) {
	c := &w.counters[in]
	if err := w.d.cfg.FlowCache.Install(w.installs, w.buckets); err != nil {
		c.CacheErrors.Add(1)
	} else {
		c.Installs.Add(uint64(len(w.installs)))
	}
	w.installs, w.buckets = w.installs[:0], w.buckets[:0]
}

func (w *worker) applyRemoves(in int) {
	c := &w.counters[in]
	if err := w.d.cfg.FlowCache.Remove(w.removes); err != nil {
		c.CacheErrors.Add(1)
	} else {
		c.Removals.Add(uint64(len(w.removes)))
	}
	w.removes = w.removes[:0]
}

// forward copies an owned packet into a TX buffer of its egress interface
// with a fresh Ethernet header (untagged) and the TTL decremented.
func (w *worker) forward(frame []byte, pp *packet.Parsed, now int64) Verdict {
	rt := w.route(pp.Family, pp.Dst, now)
	if rt.Verdict == NoNeighbour && w.d.cfg.SlowPath != nil {
		if pp.TTL <= 1 {
			return TTLExpired
		}
		packet.DecTTL(frame, pp) // in the RX frame: it is copied out below, then recycled
		if w.slow.put(pp.Family, frame[pp.L3Off:pp.End]) {
			return ForwardedKernel
		}
		return NoNeighbour
	}
	if rt.Verdict != Forwarded {
		return rt.Verdict
	}
	if pp.TTL <= 1 {
		return TTLExpired
	}
	out := w.ports[rt.Iface]
	tf, buf, ok := out.AllocTx()
	if !ok {
		return TxFull
	}
	ip := frame[pp.L3Off:pp.End]
	if len(ip)+14 > len(buf) {
		out.FreeTx(tf)
		return TxFull
	}
	src := &w.d.cfg.Ifaces[rt.Iface].MAC
	packet.SetMACs(buf, &rt.NextHop, src)
	if pp.Family == packet.IPv4 {
		buf[12], buf[13] = 0x08, 0x00
	} else {
		buf[12], buf[13] = 0x86, 0xdd
	}
	copy(buf[14:], ip)
	pp.L3Off = 14
	packet.DecTTL(buf, pp)
	tf.Len = uint32(14 + len(ip))
	w.tx[rt.Iface] = append(w.tx[rt.Iface], tf)
	return Forwarded
}

// route returns the cached route to dst, asking the resolver when there is
// none or it has expired.
func (w *worker) route(family packet.Family, dst [16]byte, now int64) Route {
	var k routeKey
	k[0] = byte(family)
	copy(k[1:], dst[:])
	if c, ok := w.routes[k]; ok && c.expires > now {
		return c.Route
	}
	r := w.d.cfg.Resolver.Resolve(family, dst)
	ttl := routeTTL
	if r.Verdict == NoRoute || r.Verdict == NoNeighbour {
		// A failed resolution is retried soon; a route's type (local,
		// broadcast, blackhole...) is an answer, kept like a usable route
		// (route changes flush the caches anyway).
		ttl = negativeRouteTTL
	}
	if len(w.routes) > 1<<16 {
		clear(w.routes) // bounded: many destinations just cost re-resolution
	}
	w.routes[k] = cachedRoute{Route: r, expires: now + int64(ttl)}
	return r
}

func (w *worker) count(v Verdict, n uint32) {
	w.dPkts[v]++
	w.dBytes[v] += uint64(n)
}

// publish adds this batch's deltas to the shared counters.
func (w *worker) publish(in int, n int) {
	c := &w.counters[in]
	for v := range w.dPkts {
		if w.dPkts[v] != 0 {
			c.Packets[v].Add(w.dPkts[v])
			c.Bytes[v].Add(w.dBytes[v])
			w.dPkts[v], w.dBytes[v] = 0, 0
		}
	}
	for r := range w.dMal {
		if w.dMal[r] != 0 {
			c.Malformed[r].Add(w.dMal[r])
			w.dMal[r] = 0
		}
	}
	for r := range w.dInv {
		if w.dInv[r] != 0 {
			c.Invalid[r].Add(w.dInv[r])
			w.dInv[r] = 0
		}
	}
	for b := range w.dOwner {
		if w.dOwner[b] != 0 {
			c.Owner[b].Add(w.dOwner[b])
			w.dOwner[b] = 0
		}
	}
	c.Batches.Add(1)
	c.BatchFrames.Add(uint64(n))
	h := 0
	for s := 1; s < n && h < len(c.BatchSizes)-1; s <<= 1 {
		h++
	}
	c.BatchSizes[h].Add(1)
}
