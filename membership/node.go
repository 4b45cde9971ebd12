package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's state as memberlist sees it.
type State string

const (
	StateAlive State = "alive"
	// StateSuspect is for Assign's inputs; memberlist does not report
	// suspicion publicly, so a View has alive, dead and left members only.
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
)

// Member is one member of the cluster as this node sees it.
type Member struct {
	Name  string
	Addr  netip.AddrPort // its management address
	State State
	Meta  Meta
	// Compatible: its meta decoded and has the same Total, Seed and Hash
	// as this node's. Only compatible members take part in Assign.
	Compatible bool
	Self       bool
}

// View is this node's picture of the cluster and the assignment it
// implies.
type View struct {
	Self string
	// Members is sorted by name; it includes this node and the dead and
	// left members memberlist still remembers.
	Members []Member
	// Servers maps each bucket to the sorted names of the members that
	// serve it (buckets at or above Total: none).
	Servers [MaxBuckets][]string
	// Mask is the buckets this node serves.
	Mask uint32
}

// Member returns the member named name.
func (v View) Member(name string) (Member, bool) {
	i, ok := slices.BinarySearchFunc(v.Members, name, func(m Member, n string) int { return strings.Compare(m.Name, n) })
	if !ok {
		return Member{}, false
	}
	return v.Members[i], true
}

// Timing are the failure detector's timings; a zero field takes its
// default from DefaultTiming.
type Timing struct {
	// ProbeInterval: each member probes one other member (round robin)
	// per interval; a member that answers neither the probe nor the
	// indirect probes through others within the interval is suspect.
	ProbeInterval time.Duration
	// ProbeTimeout: how long a direct probe waits for its ack before the
	// indirect probes start; below ProbeInterval/2, so the helpers' nacks
	// arrive in time.
	ProbeTimeout time.Duration
	// GossipInterval: how often queued messages (suspicions, meta
	// updates) are gossiped to GossipNodes random members.
	GossipInterval time.Duration
	GossipNodes    int
	// SuspicionMult: a suspect member is declared dead after
	// SuspicionMult * max(1, log10(members)) * ProbeInterval unless it
	// refutes (then it is taken over).
	SuspicionMult int
	// PushPullInterval: full state exchange with a random member.
	PushPullInterval time.Duration
	// TCPTimeout bounds joins and state exchanges.
	TCPTimeout time.Duration
	// JoinInterval: how often configured peers that are not live members
	// are joined again.
	JoinInterval time.Duration
	// PollInterval: how often the view is recomputed besides on events.
	PollInterval time.Duration
	// DeadReclaim: after this long a dead member's name may come back at
	// another address (a restarted node on a new port).
	DeadReclaim time.Duration
}

// DefaultTiming returns the timings for about 1 s failure detection on a
// LAN (see the package documentation for the trade-off).
func DefaultTiming() Timing {
	return Timing{
		ProbeInterval:    200 * time.Millisecond,
		ProbeTimeout:     80 * time.Millisecond,
		GossipInterval:   50 * time.Millisecond,
		GossipNodes:      3,
		SuspicionMult:    2,
		PushPullInterval: 10 * time.Second,
		TCPTimeout:       2 * time.Second,
		JoinInterval:     2 * time.Second,
		PollInterval:     50 * time.Millisecond,
		DeadReclaim:      time.Second,
	}
}

func (t Timing) withDefaults() Timing {
	d := DefaultTiming()
	set := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&t.ProbeInterval, d.ProbeInterval)
	set(&t.ProbeTimeout, d.ProbeTimeout)
	set(&t.GossipInterval, d.GossipInterval)
	set(&t.PushPullInterval, d.PushPullInterval)
	set(&t.TCPTimeout, d.TCPTimeout)
	set(&t.JoinInterval, d.JoinInterval)
	set(&t.PollInterval, d.PollInterval)
	set(&t.DeadReclaim, d.DeadReclaim)
	if t.GossipNodes == 0 {
		t.GossipNodes = d.GossipNodes
	}
	if t.SuspicionMult == 0 {
		t.SuspicionMult = d.SuspicionMult
	}
	return t
}

// validate checks timings that already have their defaults.
func (t Timing) validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ProbeInterval", t.ProbeInterval}, {"ProbeTimeout", t.ProbeTimeout}, {"GossipInterval", t.GossipInterval},
		{"PushPullInterval", t.PushPullInterval}, {"TCPTimeout", t.TCPTimeout}, {"JoinInterval", t.JoinInterval},
		{"PollInterval", t.PollInterval}, {"DeadReclaim", t.DeadReclaim},
	} {
		if d.v < 0 {
			return fmt.Errorf("membership timing %s %v: must not be negative", d.name, d.v)
		}
	}
	if t.ProbeTimeout >= t.ProbeInterval {
		return fmt.Errorf("membership timing ProbeTimeout %v: must be below ProbeInterval %v (about half of it, so indirect probes fit)", t.ProbeTimeout, t.ProbeInterval)
	}
	if t.GossipNodes < 0 || t.SuspicionMult < 0 {
		return fmt.Errorf("membership timing GossipNodes %d, SuspicionMult %d: must not be negative", t.GossipNodes, t.SuspicionMult)
	}
	return nil
}

// Config configures a Node.
type Config struct {
	Name      string         // unique member name
	Bind      netip.AddrPort // management address (UDP+TCP); port 0 picks one
	Advertise netip.AddrPort // zero: Bind
	// Join are host:port of peers. None reachable is fine (the first
	// node): the node keeps joining in the background.
	Join []string
	// Secret is the cluster key (16, 24 or 32 bytes: AES-128/192/256-GCM);
	// gossip is encrypted and verified both ways.
	Secret []byte
	Meta   Meta // initial
	Timing Timing
	// Logger receives memberlist's own log lines (levels from their
	// prefixes) and this package's; nil: slog.Default().
	Logger *slog.Logger
	// OnChange is called after every change of the members, their state
	// or meta, with the new View: serially, never concurrently, never
	// with a lock of this package held.
	OnChange func(View)
}

// validate checks the configuration, naming the field and the value.
func (c *Config) validate() error {
	if c.Name == "" {
		return errors.New("membership name: empty: want a unique member name")
	}
	switch len(c.Secret) {
	case 16, 24, 32:
	default:
		return fmt.Errorf("membership secret: %d bytes: want 16, 24 or 32", len(c.Secret))
	}
	if !c.Bind.Addr().IsValid() {
		return fmt.Errorf("membership bind %q: want an IP address and port", c.Bind)
	}
	if c.Meta.Total == 0 || c.Meta.Total > MaxBuckets {
		return fmt.Errorf("membership meta total %d: want 1 to %d", c.Meta.Total, MaxBuckets)
	}
	if c.Meta.Total < MaxBuckets && c.Meta.Home>>c.Meta.Total != 0 {
		return fmt.Errorf("membership meta home %#x: buckets at or above total %d", c.Meta.Home, c.Meta.Total)
	}
	return nil
}

// Node is this process's membership: a memberlist member that gossips its
// Meta and computes the assignment. Its methods are safe for concurrent
// use.
type Node struct {
	cfg    Config
	log    *slog.Logger
	ml     *memberlist.Memberlist
	tab    *table
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once

	mu           sync.Mutex
	meta         Meta
	incompatible map[string]bool // members already logged as incompatible

	lastJoinErr string // owned by the join goroutine (one at a time)
}

// delegate is memberlist's Delegate and EventDelegate. Its callbacks run
// with memberlist's node lock held: they only wake the node's loop.
type delegate struct{ n *Node }

func (d delegate) NodeMeta(limit int) []byte {
	d.n.mu.Lock()
	b := d.n.meta.Encode()
	d.n.mu.Unlock()
	if len(b) > limit {
		// Encode stays under MetaMaxSize; a smaller limit is memberlist's bug.
		return nil
	}
	return b
}
func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}
func (d delegate) NotifyJoin(m *memberlist.Node) {
	d.n.tab.set(m, memberlist.StateAlive)
	d.n.poke()
}
func (d delegate) NotifyLeave(m *memberlist.Node) {
	st := memberlist.StateDead
	if meta, err := DecodeMeta(m.Meta); err == nil && meta.Reason == leavingReason {
		st = memberlist.StateLeft
	}
	d.n.tab.set(m, st)
	d.n.poke()
}
func (d delegate) NotifyUpdate(m *memberlist.Node) {
	d.n.tab.set(m, memberlist.StateAlive)
	d.n.poke()
}

// Start joins (or founds) the cluster: it tries the Join peers once
// before it returns (bounded by Timing.TCPTimeout; none answering is fine,
// later attempts run in the background). The returned Node runs until
// Leave or Close.
func Start(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Timing = cfg.Timing.withDefaults()
	if err := cfg.Timing.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{
		cfg:          cfg,
		log:          cfg.Logger.With("member", cfg.Name),
		meta:         cfg.Meta,
		wake:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
		incompatible: map[string]bool{},
		tab:          newTable(),
	}
	if len(cfg.Meta.Encode()) > MetaMaxSize {
		return nil, fmt.Errorf("membership meta: %d bytes encoded: want at most %d", len(cfg.Meta.Encode()), MetaMaxSize)
	}
	t := cfg.Timing
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.Bind.Addr().String()
	mc.BindPort = int(cfg.Bind.Port())
	adv := cfg.Advertise
	if !adv.IsValid() {
		adv = cfg.Bind
	}
	if !adv.Addr().IsUnspecified() {
		mc.AdvertiseAddr = adv.Addr().String()
	}
	mc.AdvertisePort = int(adv.Port())
	mc.SecretKey = append([]byte(nil), cfg.Secret...)
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.ProbeInterval = t.ProbeInterval
	mc.ProbeTimeout = t.ProbeTimeout
	mc.GossipInterval = t.GossipInterval
	mc.GossipNodes = t.GossipNodes
	mc.SuspicionMult = t.SuspicionMult
	mc.PushPullInterval = t.PushPullInterval
	mc.TCPTimeout = t.TCPTimeout
	mc.DeadNodeReclaimTime = t.DeadReclaim
	mc.AwarenessMaxMultiplier = 4
	mc.DNSConfigPath = "" // no DNS lookups of member names
	mc.Delegate = delegate{n}
	mc.Events = delegate{n}
	mc.Logger = log.New(&logWriter{log: n.log}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: start memberlist on %s: %w", cfg.Bind, err)
	}
	n.ml = ml
	if len(cfg.Join) > 0 {
		// The first join before Start returns: the caller's first View
		// then holds the peers that answered (and whether they are
		// ready), which a starting node needs to decide whether it has a
		// connection table to pull. Later attempts run in the background.
		n.join(cfg.Join)
	}
	go n.loop()
	return n, nil
}

// poke asks the loop to recompute the view.
func (n *Node) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// loop recomputes the View on every event, every PollInterval and after
// SetMeta, calls OnChange when it changed, and joins the configured peers
// that are not live members every JoinInterval.
func (n *Node) loop() {
	defer close(n.done)
	poll := time.NewTicker(n.cfg.Timing.PollInterval)
	defer poll.Stop()
	var last View
	first := true
	var nextJoin time.Time
	joinDone := make(chan struct{}, 1)
	joinDone <- struct{}{}
	for {
		v := n.View()
		if first || !sameView(v, last) {
			n.logChange(last, v, first)
			last, first = v, false
			if n.cfg.OnChange != nil {
				n.cfg.OnChange(v)
			}
		}
		if len(n.cfg.Join) > 0 && time.Now().After(nextJoin) {
			select {
			case <-joinDone: // previous attempt finished
				nextJoin = time.Now().Add(n.cfg.Timing.JoinInterval)
				if peers := n.peersToJoin(v); len(peers) > 0 {
					go func() {
						defer func() { joinDone <- struct{}{} }()
						n.join(peers)
					}()
				} else {
					joinDone <- struct{}{}
				}
			default:
			}
		}
		select {
		case <-n.stop:
			return
		case <-n.wake:
		case <-poll.C:
		}
	}
}

// peersToJoin are the configured peers no live member has as its address.
func (n *Node) peersToJoin(v View) []string {
	live := map[string]bool{}
	for _, m := range v.Members {
		if m.State == StateAlive || m.State == StateSuspect {
			live[m.Addr.String()] = true
		}
	}
	var out []string
	for _, p := range n.cfg.Join {
		if ap, err := netip.ParseAddrPort(p); err == nil && live[ap.String()] {
			continue
		}
		out = append(out, p)
	}
	return out
}

func (n *Node) join(peers []string) {
	select {
	case <-n.stop:
		return
	default:
	}
	k, err := n.ml.Join(peers)
	if k == 0 {
		// Warn when the reason changes (a wrong key, a refused
		// connection), then quietly retry.
		level := slog.LevelDebug
		msg := fmt.Sprint(err)
		if msg != n.lastJoinErr {
			level, n.lastJoinErr = slog.LevelWarn, msg
		}
		n.log.Log(context.Background(), level, "membership: join: no peer reachable, retrying", "peers", peers, "every", n.cfg.Timing.JoinInterval, "err", err)
		return
	}
	n.lastJoinErr = ""
	n.log.Info("membership: joined", "peers", peers, "contacted", k)
}

// logChange logs the members whose state or readiness changed and the
// assignment when this node's mask changes.
func (n *Node) logChange(old, v View, first bool) {
	for _, m := range v.Members {
		o, ok := old.Member(m.Name)
		if !ok || o.State != m.State || o.Meta.Ready != m.Meta.Ready || o.Compatible != m.Compatible {
			n.log.Info("membership: member", "name", m.Name, "addr", m.Addr, "state", m.State, "ready", m.Meta.Ready, "reason", m.Meta.Reason, "compatible", m.Compatible)
		}
	}
	if first || old.Mask != v.Mask {
		n.log.Debug("membership: assignment", "mask", fmt.Sprintf("%#x", v.Mask), "was", fmt.Sprintf("%#x", old.Mask))
	}
}

// sameView reports whether two views are equal in everything OnChange
// reports.
func sameView(a, b View) bool {
	if a.Self != b.Self || a.Mask != b.Mask || len(a.Members) != len(b.Members) {
		return false
	}
	for i := range a.Members {
		if a.Members[i] != b.Members[i] {
			return false
		}
	}
	for i := range a.Servers {
		if !slices.Equal(a.Servers[i], b.Servers[i]) {
			return false
		}
	}
	return true
}

// View returns the current view, read from memberlist now.
func (n *Node) View() View {
	raw := n.tab.read()
	n.mu.Lock()
	self := n.meta
	n.mu.Unlock()
	v := View{Self: n.cfg.Name, Members: make([]Member, 0, len(raw))}
	for _, r := range raw {
		m := Member{Name: r.name, State: stateOf(r.state), Self: r.name == n.cfg.Name}
		if a, ok := netip.AddrFromSlice(r.addr); ok {
			m.Addr = netip.AddrPortFrom(a.Unmap(), r.port)
		}
		if m.Self {
			m.Meta, m.Compatible = self, true
		} else {
			meta, err := DecodeMeta(r.meta)
			m.Meta = meta
			switch {
			case err != nil:
				n.incompatibleOnce(m.Name, err.Error())
			case meta.Total != self.Total || meta.Seed != self.Seed || meta.Hash != self.Hash:
				n.incompatibleOnce(m.Name, fmt.Sprintf("total_nodes %d, hash_seed %#x, hash mode %d; this node has %d, %#x, %d",
					meta.Total, meta.Seed, meta.Hash, self.Total, self.Seed, self.Hash))
			default:
				m.Compatible = true
				n.mu.Lock()
				delete(n.incompatible, m.Name)
				n.mu.Unlock()
			}
		}
		v.Members = append(v.Members, m)
	}
	slices.SortFunc(v.Members, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	v.Servers, v.Mask = Assign(n.cfg.Name, self.Total, v.Members)
	return v
}

func (n *Node) incompatibleOnce(name, why string) {
	n.mu.Lock()
	logged := n.incompatible[name]
	n.incompatible[name] = true
	n.mu.Unlock()
	if !logged {
		n.log.Error("membership: member has other cluster parameters: it takes no part in the assignment", "name", name, "why", why)
	}
}

func stateOf(s memberlist.NodeStateType) State {
	switch s {
	case memberlist.StateAlive:
		return StateAlive
	case memberlist.StateSuspect:
		return StateSuspect
	case memberlist.StateLeft:
		return StateLeft
	default:
		return StateDead
	}
}

// SetMeta replaces this node's meta and gossips it at once; OnChange
// follows from the node's goroutine.
func (n *Node) SetMeta(m Meta) error {
	if b := m.Encode(); len(b) > MetaMaxSize {
		return fmt.Errorf("membership meta: %d bytes encoded: want at most %d", len(b), MetaMaxSize)
	}
	n.mu.Lock()
	n.meta = m
	n.mu.Unlock()
	err := n.ml.UpdateNode(n.cfg.Timing.TCPTimeout)
	n.poke()
	if err != nil {
		return fmt.Errorf("membership: gossip meta: %w", err)
	}
	return nil
}

// Addr returns the address memberlist listens on (the port resolved).
func (n *Node) Addr() netip.AddrPort {
	ln := n.ml.LocalNode()
	a, _ := netip.AddrFromSlice(ln.Addr)
	return netip.AddrPortFrom(a.Unmap(), ln.Port)
}

// Leave announces this node's departure (peers mark it left at once and
// take its buckets over), waits up to timeout for the announcement to go
// out, then shuts down.
func (n *Node) Leave(timeout time.Duration) error {
	// Say so in the meta first: the peers' NotifyLeave cannot tell a
	// leave from a failure, the last meta can (and, not ready, the node's
	// buckets move as soon as it spreads).
	n.mu.Lock()
	n.meta.Ready, n.meta.Reason = false, leavingReason
	n.mu.Unlock()
	n.ml.UpdateNode(timeout)
	err := n.ml.Leave(timeout)
	if cerr := n.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// leavingReason is the Meta.Reason of a member that leaves (Leave).
const leavingReason = "leaving"

// Close shuts down without leaving: to the peers it looks like a crash
// and they detect it as a failure.
func (n *Node) Close() error {
	var err error
	n.closed.Do(func() {
		close(n.stop)
		<-n.done
		err = n.ml.Shutdown()
	})
	return err
}

// logWriter turns memberlist's log lines ("[WARN] memberlist: ...") into
// slog records at the matching level.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\n"))
	level := slog.LevelInfo
	for _, l := range []struct {
		prefix string
		level  slog.Level
	}{
		{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn},
		{"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError},
	} {
		if rest, ok := strings.CutPrefix(line, l.prefix); ok {
			line, level = strings.TrimSpace(rest), l.level
			break
		}
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}
