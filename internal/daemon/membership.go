package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/config"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/membership"
	"github.com/xdpcluster/xdpcluster/resync"
)

// The self-managing cluster (config's membership section): the daemon
// gossips with its peers on the management network (package
// membership), serves the buckets the shared assignment gives it (its home
// share while it is ready, a failed peer's buckets as they fall to it) and,
// when it starts, pulls the connection table from a ready peer (package
// resync) before it announces itself ready, so that peers hand its home
// buckets back only once it can carry every connection in them.
//
// Start order: the dataplane first (from then on it tracks every new
// connection), then the resync server and the gossip, joined not ready;
// then the pull, the merge, and only then Ready. A node that finds no
// ready peer (the cluster's first node, or all starting together) has
// nothing to pull and is ready at once.

// resyncer is what a role with a connection table offers the resync: its
// table's records out, a peer's records in.
type resyncer interface {
	ExportConnections(emit func(recs []byte) error) (int, error)
	MergeConnections(recs []byte) (conntrack.MergeStats, error)
	MaxConnections() int
	Connections() int
}

// dropGrace is how long a node keeps serving buckets the assignment
// moved to another node (see apply): longer than the gossip needs to tell
// the taker, short enough that the duplicates it costs are few.
const dropGrace = 750 * time.Millisecond

// healthEvery is how often a member checks its dataplane's health (and
// announces a change of readiness).
const healthEvery = 500 * time.Millisecond

// mship is the daemon's membership: the gossip node, the resync server and
// what the node last applied.
type mship struct {
	d      *Daemon
	cfg    config.MembershipSettings
	log    *slog.Logger
	params conntrack.SnapshotParams
	node   *membership.Node
	srv    *resync.Server
	done   chan struct{}
	kick   chan struct{} // a new view to apply (see changed)
	repull chan struct{} // a view changed: check whether a pull is due
	wg     sync.WaitGroup

	mu        sync.Mutex
	base      cluster.Match // total, seed, hash of the cluster (mask and invert unused)
	home      uint32        // home buckets (bit b: 0-based bucket b)
	resynced  bool          // the pull is done (or there was nothing to pull)
	solo      bool          // became ready with no other member in sight
	canResync bool          // the role has a connection table to pull
	meta      membership.Meta
	view      membership.View
	applied   uint32 // the buckets the dataplane serves now
	// dropSince is when the dataplane began serving buckets the view no
	// longer gives this node (zero: none); they go after dropGrace.
	dropSince time.Time
	stats     resyncStats
}

// resyncStats are the node's resync counters, for metrics and status.
type resyncStats struct {
	Pulls        uint64               `json:"pulls"`
	PullErrors   uint64               `json:"pull_errors"`
	Served       uint64               `json:"served"`
	ServeErrors  uint64               `json:"serve_errors"`
	LastRecords  int                  `json:"last_connections"`
	LastBytes    int64                `json:"last_bytes"`
	LastDuration time.Duration        `json:"last_duration_ns"`
	LastPeer     string               `json:"last_peer,omitempty"`
	LastMerge    conntrack.MergeStats `json:"last_merge"`
	LastError    string               `json:"last_error,omitempty"`
}

// homeBuckets returns the buckets (bit b: 0-based bucket b) match m
// serves, with its invert flag applied.
func homeBuckets(m cluster.Match) uint32 {
	all := uint32(uint64(1)<<m.TotalNodes - 1)
	if m.Invert {
		return ^m.NodeMask & all
	}
	return m.NodeMask & all
}

// serving is the match that makes the dataplane serve exactly buckets
// (bit b: 0-based bucket b) of base's cluster. Serving nothing is written
// as every bucket inverted, since a match's mask cannot be zero.
func serving(base cluster.Match, buckets uint32) cluster.Match {
	m := base
	if buckets == 0 {
		m.NodeMask, m.Invert = uint32(uint64(1)<<base.TotalNodes-1), true
		return m
	}
	m.NodeMask, m.Invert = buckets, false
	return m
}

// bucketList names buckets as 1-based node numbers (as ctl and the
// configuration do).
func bucketList(buckets uint32) []int {
	out := []int{}
	for b := 0; b < cluster.MaxNodes; b++ {
		if buckets>>b&1 == 1 {
			out = append(out, b+1)
		}
	}
	return out
}

// startMembership starts the resync server and the gossip, then, in the
// background, the pull and the health checks. Call it once the dataplane
// runs, with d.mu held.
func (d *Daemon) startMembership() error {
	cfg := d.cfg.Membership
	m := d.eng.Match()
	ms := &mship{d: d, cfg: *cfg, log: d.log.With("component", "membership"), done: make(chan struct{}), kick: make(chan struct{}, 1), repull: make(chan struct{}, 1),
		params: conntrack.SnapshotParams{TotalNodes: m.TotalNodes, Seed: m.Seed, Hash: uint8(m.Hash)},
		base:   m, home: homeBuckets(m)}
	ms.applied = homeBuckets(m)
	rs, canResync := d.eng.(resyncer)
	ms.canResync = canResync
	var resyncAddr netip.AddrPort
	if canResync {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(cfg.Bind.Addr(), cfg.Resync.Port()).String())
		if err != nil {
			return fmt.Errorf("membership.resync_port: listen on %s port %d: %w", cfg.Bind.Addr(), cfg.Resync.Port(), err)
		}
		ms.srv = &resync.Server{Secret: cfg.Secret, Params: ms.params, Export: rs.ExportConnections, Count: rs.Connections, Logger: ms.log,
			Timeout: cfg.ResyncTimeout, OnPull: ms.served}
		ms.wg.Add(1)
		go func() {
			defer ms.wg.Done()
			ms.srv.Serve(ln)
		}()
		resyncAddr = cfg.Resync
	} else {
		ms.resynced = true // a stateless role has nothing to pull
	}
	ms.meta = membership.Meta{Home: ms.home, Total: m.TotalNodes, Seed: m.Seed, Hash: uint8(m.Hash),
		Ready: false, Reason: "starting", Resync: resyncAddr}
	node, err := membership.Start(membership.Config{Name: cfg.Name, Bind: cfg.Bind, Advertise: cfg.Advertise,
		Join: cfg.Join, Secret: cfg.Secret, Meta: ms.meta, Logger: ms.log, OnChange: ms.changed})
	if err != nil {
		if ms.srv != nil {
			ms.srv.Close()
		}
		ms.wg.Wait()
		return fmt.Errorf("membership: %w", err)
	}
	ms.mu.Lock()
	ms.node = node
	ms.mu.Unlock()
	d.mem = ms
	ms.log.Info("joined the cluster's gossip", "name", cfg.Name, "bind", cfg.Bind.String(), "join", strings.Join(cfg.Join, ","),
		"home", bucketList(ms.home), "resync", resyncAddr.String())
	ms.wg.Add(2)
	go func() {
		defer ms.wg.Done()
		ms.run(rs, canResync)
	}()
	go func() {
		defer ms.wg.Done()
		ms.applyViews()
	}()
	return nil
}

// run pulls the table when the node needs it and checks the dataplane's
// health until stop, announcing every change of readiness. A node needs
// a pull when it starts, after its dataplane was unhealthy (it missed the
// connections opened meanwhile), and when it became ready alone (no
// member in sight: the cluster's first node, or a node whose management
// network was down) and then meets a ready peer, which may carry
// connections it never saw.
func (ms *mship) run(rs resyncer, canResync bool) {
	tick := time.NewTicker(healthEvery)
	defer tick.Stop()
	for {
		// One health check per tick (it asks the kernel), again after a
		// pull, which takes a while.
		h := ms.d.engineHealth()
		if canResync && ms.needsPull(h) {
			ms.pull(rs)
			h = ms.d.engineHealth()
		}
		ms.checkHealth(h)
		// The dataplane may have refused the last switch: apply the
		// view again (a no-op when it is in force).
		ms.kickApply()
		select {
		case <-ms.done:
			return
		case <-tick.C:
		case <-ms.repull:
		}
	}
}

// needsPull reports whether the node must pull before it is ready: it
// has not resynced and its dataplane is healthy (a pull into a dataplane
// that cannot track is wasted), or it became ready alone and a ready peer
// has appeared.
func (ms *mship) needsPull(h error) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.solo && ms.node != nil && len(ms.readyPeersLocked()) > 0 {
		ms.log.Info("a ready peer appeared after this node became ready alone: resyncing from it")
		ms.solo, ms.resynced = false, false
	}
	return !ms.resynced && h == nil
}

// pull fetches the connection table from a ready peer and merges it,
// retrying (other peers, then again after a back-off) until it succeeds,
// no ready peer is left (nothing to pull: the node is ready at once), or
// the daemon stops.
func (ms *mship) pull(rs resyncer) {
	backoff := time.Second
	for {
		peers := ms.readyPeers()
		if len(peers) == 0 {
			alone := ms.alone()
			ms.log.Info("no ready peer to pull the connection table from: ready without a resync", "alone", alone)
			ms.mu.Lock()
			ms.solo = alone
			ms.mu.Unlock()
			ms.setResynced()
			return
		}
		for _, p := range peers {
			if ms.pullFrom(rs, p) == nil {
				ms.setResynced()
				return
			}
			select {
			case <-ms.done:
				return
			default:
			}
		}
		ms.log.Warn("state resync failed from every ready peer; staying not ready (peers serve this node's home buckets) and retrying", "in", backoff)
		select {
		case <-ms.done:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// alone reports whether no other compatible member is alive.
func (ms *mship) alone() bool {
	for _, m := range ms.node.View().Members {
		if !m.Self && m.State == membership.StateAlive && m.Compatible {
			return false
		}
	}
	return true
}

// kickApply has applyViews apply the latest view.
func (ms *mship) kickApply() {
	select {
	case ms.kick <- struct{}{}:
	default:
	}
}

// readyPeers are the alive, ready, compatible peers that serve a resync,
// by name.
func (ms *mship) readyPeers() []membership.Member {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.readyPeersLocked()
}

// readyPeersLocked is readyPeers with ms.mu held (it reads the node's
// own View, which takes no lock of ours).
func (ms *mship) readyPeersLocked() []membership.Member {
	var out []membership.Member
	for _, m := range ms.node.View().Members {
		if !m.Self && m.State == membership.StateAlive && m.Compatible && m.Meta.Ready && m.Meta.Resync.IsValid() {
			out = append(out, m)
		}
	}
	return out
}

func (ms *mship) pullFrom(rs resyncer, p membership.Member) error {
	ctx, cancel := context.WithTimeout(context.Background(), ms.cfg.ResyncTimeout)
	defer cancel()
	go func() {
		select {
		case <-ms.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	addr := p.Meta.Resync.String()
	ms.log.Info("state resync: pulling the connection table", "peer", p.Name, "addr", addr)
	var merged conntrack.MergeStats
	// A peer with a larger table (another conntrack.max_entries) is
	// still pulled: Merge adds what fits and counts the rest (logged),
	// rather than the node never becoming ready. The bound only limits
	// how long a pull may stream.
	st, err := resync.Pull(ctx, addr, resync.PullOptions{Secret: ms.cfg.Secret, Params: ms.params, MaxRecords: 4 * rs.MaxConnections(),
		Merge: func(recs []byte) error {
			s, err := rs.MergeConnections(recs)
			merged.Add(s)
			return err
		},
		Progress: func(s resync.Stats) {
			ms.log.Info("state resync: progress", "peer", p.Name, "connections", s.Records, "bytes", s.Bytes, "elapsed", s.Duration.Round(time.Millisecond).String())
		}})
	ms.mu.Lock()
	ms.stats.Pulls++
	ms.stats.LastPeer, ms.stats.LastRecords, ms.stats.LastBytes, ms.stats.LastDuration, ms.stats.LastMerge = p.Name, st.Records, st.Bytes, st.Duration, merged
	if err != nil {
		ms.stats.PullErrors++
		ms.stats.LastError = err.Error()
	} else {
		ms.stats.LastError = ""
	}
	ms.mu.Unlock()
	if err != nil {
		ms.log.Error("state resync failed", "peer", p.Name, "addr", addr, "error", err)
		return err
	}
	if merged.Full > 0 {
		ms.log.Warn("state resync: the connection table is full: connections of the peer's were left out (is conntrack.max_entries smaller here than on the peer?)",
			"peer", p.Name, "left_out", merged.Full, "max_entries", rs.MaxConnections())
	}
	ms.log.Info("state resync done", "peer", p.Name, "connections", st.Records, "bytes", st.Bytes, "duration", st.Duration.Round(time.Millisecond).String(),
		"added", merged.Added, "replaced", merged.Replaced, "kept", merged.Kept, "expired", merged.Expired, "table_full", merged.Full)
	return nil
}

// served counts the pulls peers made from this node.
func (ms *mship) served(st resync.Stats, err error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.stats.Served++
	if err != nil {
		ms.stats.ServeErrors++
	}
}

func (ms *mship) setResynced() {
	ms.mu.Lock()
	ms.resynced = true
	ms.mu.Unlock()
	ms.checkHealth(ms.d.engineHealth())
}

// checkHealth announces the node ready when it has resynced and its
// dataplane's health h is good, and not ready (with the reason)
// otherwise.
func (ms *mship) checkHealth(h error) {
	ms.mu.Lock()
	if h != nil && ms.resynced && ms.canResync {
		// While the dataplane is down the node misses connections (and
		// may track flows it sees only half of in reverse): it pulls
		// again before it serves again.
		ms.resynced = false
	}
	meta := ms.meta
	switch {
	case h != nil:
		meta.Ready, meta.Reason = false, truncate("dataplane: "+h.Error(), 64)
	case !ms.resynced:
		meta.Ready, meta.Reason = false, "resyncing"
	default:
		meta.Ready, meta.Reason = true, ""
	}
	changed := meta != ms.meta
	ms.meta = meta
	node := ms.node
	ms.mu.Unlock()
	if !changed || node == nil {
		return
	}
	if meta.Ready {
		ms.log.Info("ready: announcing this node as serving")
	} else {
		ms.log.Warn("not ready: peers serve this node's buckets", "reason", meta.Reason)
	}
	if err := node.SetMeta(meta); err != nil {
		ms.log.Error("announce readiness", "error", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// setHome changes the node's home share (a reload of local_node,
// local_nodemask or invert).
func (ms *mship) setHome(m cluster.Match) error {
	ms.mu.Lock()
	ms.home = homeBuckets(m)
	ms.meta.Home = ms.home
	meta := ms.meta
	ms.mu.Unlock()
	return ms.node.SetMeta(meta)
}

// changed takes a new view (package membership logs what changed among
// the members) and has applyViews switch the dataplane (never from the gossip's own
// goroutine, which may be inside SetMeta under the daemon's lock).
func (ms *mship) changed(v membership.View) {
	ms.mu.Lock()
	ms.view = v
	ms.mu.Unlock()
	ms.kickApply()
	select {
	case ms.repull <- struct{}{}:
	default:
	}
}

// applyViews applies the latest view each time changed kicks it, until
// stop.
func (ms *mship) applyViews() {
	for {
		select {
		case <-ms.done:
			return
		case <-ms.kick:
		}
		ms.apply()
	}
}

// apply switches the dataplane to the buckets the latest view's
// assignment gives this node.
func (ms *mship) apply() {
	ms.mu.Lock()
	v := ms.view
	applied := ms.applied
	base := ms.base
	ms.mu.Unlock()
	if !ms.cfg.ManageShares || v.Self == "" {
		// With manage_shares false, keepalived or ctl moves the shares.
		return
	}
	// Make before break: buckets come at once, buckets go only after
	// dropGrace. Every member applies its own view; the member that takes
	// a bucket over may learn of the change a gossip round later than the
	// one giving it up, and in between nobody would serve it. Keeping it
	// a little longer forwards some packets twice instead (failback, a
	// node going not ready to resync, a reload that shrinks the home).
	want := v.Mask
	if drop := applied &^ v.Mask; drop != 0 {
		ms.mu.Lock()
		if ms.dropSince.IsZero() {
			ms.dropSince = time.Now()
		}
		left := dropGrace - time.Since(ms.dropSince)
		ms.mu.Unlock()
		if left > 0 {
			want |= drop
			time.AfterFunc(left, ms.kickApply)
		}
	}
	if want == applied {
		return
	}
	if err := ms.d.setServing(serving(base, want)); err != nil {
		ms.log.Error("apply bucket assignment", "serves", bucketList(want), "error", err)
		return
	}
	ms.mu.Lock()
	ms.applied = want
	if want == v.Mask {
		ms.dropSince = time.Time{}
	}
	ms.mu.Unlock()
	var who []string
	for b := 0; b < int(base.TotalNodes); b++ {
		who = append(who, fmt.Sprintf("%d=%s", b+1, strings.Join(v.Servers[b], "+")))
	}
	if want != v.Mask {
		ms.log.Info("bucket assignment changed: taking buckets now, giving some up after the grace", "serves", bucketList(want),
			"giving_up", bucketList(want&^v.Mask), "in", dropGrace.String(), "was", bucketList(applied), "assignment", strings.Join(who, " "))
		return
	}
	ms.log.Info("bucket assignment changed", "serves", bucketList(want), "was", bucketList(applied), "assignment", strings.Join(who, " "))
}

// stop leaves the gossip (peers take over at once) and stops the resync
// server and the background work.
func (ms *mship) stop() {
	close(ms.done)
	if err := ms.node.Leave(time.Second); err != nil {
		ms.log.Warn("leave the cluster", "error", err)
	}
	if ms.srv != nil {
		ms.srv.Close()
	}
	ms.wg.Wait()
}

// MemberStatus is one member in `ctl status`.
type MemberStatus struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	State  string `json:"state"`
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
	Home   []int  `json:"home"`
	Self   bool   `json:"self,omitempty"`
	// Incompatible is set for a member with other cluster parameters
	// (total nodes, seed, hash), which is left out of the assignment.
	Incompatible bool `json:"incompatible,omitempty"`
}

// MembershipStatus is the membership part of `ctl status`.
type MembershipStatus struct {
	Name    string         `json:"name"`
	Ready   bool           `json:"ready"`
	Reason  string         `json:"reason,omitempty"`
	Members []MemberStatus `json:"members"`
	// ManageShares: the membership moves the shares; when false,
	// keepalived or ctl does, and Buckets is empty.
	ManageShares bool `json:"manage_shares"`
	// Buckets lists, by bucket (1-based, as node numbers), the members
	// that serve it.
	Buckets [][]string  `json:"buckets,omitempty"`
	Resync  resyncStats `json:"resync"`
}

func (ms *mship) status() *MembershipStatus {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	v := ms.view
	s := &MembershipStatus{Name: ms.cfg.Name, Ready: ms.meta.Ready, Reason: ms.meta.Reason, Resync: ms.stats, ManageShares: ms.cfg.ManageShares}
	for _, m := range v.Members {
		s.Members = append(s.Members, MemberStatus{Name: m.Name, Addr: m.Addr.String(), State: string(m.State), Ready: m.Meta.Ready,
			Reason: m.Meta.Reason, Home: bucketList(m.Meta.Home), Self: m.Self, Incompatible: !m.Compatible})
	}
	for b := 0; ms.cfg.ManageShares && b < int(ms.base.TotalNodes); b++ {
		s.Buckets = append(s.Buckets, slices.Clone(v.Servers[b]))
	}
	return s
}

// membershipCollector exports the membership's state.
type membershipCollector struct{ ms *mship }

var (
	membersDesc       = prometheus.NewDesc("xdpcluster_members", "Members of the cluster's gossip this node knows, by state (alive, suspect, dead, left).", []string{"state"}, nil)
	membersReadyDesc  = prometheus.NewDesc("xdpcluster_members_ready", "Members alive, compatible and ready (serving), as this node sees them.", nil, nil)
	readyDesc         = prometheus.NewDesc("xdpcluster_ready", "1 when this node is ready (dataplane healthy, connection table resynced) and announces itself serving.", nil, nil)
	bucketServersDesc = prometheus.NewDesc("xdpcluster_bucket_servers", "How many members serve each bucket (1-based), by this node's view of the assignment: 1 when settled, 0 is a loss, 2 or more duplicates.", []string{"bucket"}, nil)
	resyncPullsDesc   = prometheus.NewDesc("xdpcluster_resync_pulls_total", "Connection-table pulls this node made from a peer, by result (ok, error).", []string{"result"}, nil)
	resyncServedDesc  = prometheus.NewDesc("xdpcluster_resync_served_total", "Connection-table pulls peers made from this node, by result (ok, error).", []string{"result"}, nil)
	resyncConnsDesc   = prometheus.NewDesc("xdpcluster_resync_last_connections", "Connections received in this node's last pull.", nil, nil)
	resyncBytesDesc   = prometheus.NewDesc("xdpcluster_resync_last_bytes", "Bytes (records, before encryption) received in this node's last pull.", nil, nil)
	resyncSecsDesc    = prometheus.NewDesc("xdpcluster_resync_last_duration_seconds", "Duration of this node's last pull.", nil, nil)
)

func (c membershipCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{membersDesc, membersReadyDesc, readyDesc, bucketServersDesc,
		resyncPullsDesc, resyncServedDesc, resyncConnsDesc, resyncBytesDesc, resyncSecsDesc} {
		ch <- d
	}
}

func (c membershipCollector) Collect(ch chan<- prometheus.Metric) {
	ms := c.ms
	ms.mu.Lock()
	v, meta, st, total := ms.view, ms.meta, ms.stats, ms.base.TotalNodes
	ms.mu.Unlock()
	states := map[membership.State]int{membership.StateAlive: 0, membership.StateSuspect: 0, membership.StateDead: 0, membership.StateLeft: 0}
	ready := 0
	for _, m := range v.Members {
		states[m.State]++
		if m.State == membership.StateAlive && m.Compatible && m.Meta.Ready {
			ready++
		}
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for s, n := range states {
		gauge(membersDesc, float64(n), string(s))
	}
	gauge(membersReadyDesc, float64(ready))
	gauge(readyDesc, b2f(meta.Ready))
	for b := 0; ms.cfg.ManageShares && b < int(total); b++ {
		gauge(bucketServersDesc, float64(len(v.Servers[b])), fmt.Sprint(b+1))
	}
	counter(resyncPullsDesc, st.Pulls-st.PullErrors, "ok")
	counter(resyncPullsDesc, st.PullErrors, "error")
	counter(resyncServedDesc, st.Served-st.ServeErrors, "ok")
	counter(resyncServedDesc, st.ServeErrors, "error")
	gauge(resyncConnsDesc, float64(st.LastRecords))
	gauge(resyncBytesDesc, float64(st.LastBytes))
	gauge(resyncSecsDesc, st.LastDuration.Seconds())
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// servedCollector exports which buckets the dataplane serves, with or
// without membership (ctl takeover and release change it too).
type servedCollector struct{ d *Daemon }

var bucketServedDesc = prometheus.NewDesc("xdpcluster_bucket_served", "1 for each bucket (1-based, as node numbers) this node's dataplane serves now, else 0.", []string{"bucket"}, nil)

func (c servedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- bucketServedDesc }

func (c servedCollector) Collect(ch chan<- prometheus.Metric) {
	c.d.mu.Lock()
	eng := c.d.eng
	c.d.mu.Unlock()
	if eng == nil {
		return
	}
	m := eng.Match()
	for b := 0; b < int(m.TotalNodes); b++ {
		ch <- prometheus.MustNewConstMetric(bucketServedDesc, prometheus.GaugeValue, b2f(m.OwnsNode(b)), fmt.Sprint(b+1))
	}
}
