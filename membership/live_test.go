package membership

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// The live tests run real memberlist nodes, which send UDP and TCP from
// their own goroutines: locking one thread into a namespace would not hold
// them, so the test re-executes itself inside a namespace it creates and
// the child (childEnv set) runs the body on the namespace's loopback.
const childEnv = "XDPCLUSTER_MEMBERSHIP_CHILD"

// inNamespace returns true in the child, which runs the test's body. In
// the parent it creates a namespace (skipping when not root), runs this
// test in a child inside it, reports the child's output and returns false.
func inNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	ns := nstest.New(t, "mbr")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, exe, "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=90s")
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("child in netns %s:\n%s", ns.Name, out)
	if err != nil {
		t.Fatalf("child test in netns %s: %v", ns.Name, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("child test in netns %s did not pass", ns.Name)
	}
	return false
}

var (
	secretA = []byte("0123456789abcdef0123456789abcdef")
	secretB = []byte("fedcba9876543210fedcba9876543210")
	homes   = map[string]uint32{"node1": 0x00f, "node2": 0x0f0, "node3": 0xf00}
)

// liveNode is a Node with the views its OnChange received.
type liveNode struct {
	*Node
	name string
	mu   sync.Mutex
	last View
	n    int // OnChange calls
	busy atomic.Int32
}

func (l *liveNode) onChange(t *testing.T) func(View) {
	return func(v View) {
		if l.busy.Add(1) != 1 {
			t.Errorf("%s: OnChange called concurrently", l.name)
		}
		time.Sleep(time.Millisecond) // widen the window for overlap
		l.mu.Lock()
		l.last, l.n = v, l.n+1
		l.mu.Unlock()
		l.busy.Add(-1)
	}
}

func (l *liveNode) view() View {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// startNode starts name on bind, joining join, with a logger into logs.
func startNode(t *testing.T, name string, bind netip.AddrPort, secret []byte, logs *nstest.LogBuffer, join ...string) *liveNode {
	t.Helper()
	return startNodeMeta(t, name, bind, secret, Meta{Home: homes[name], Total: 12, Seed: 7, Ready: true}, logs, join...)
}

func startNodeMeta(t *testing.T, name string, bind netip.AddrPort, secret []byte, meta Meta, logs *nstest.LogBuffer, join ...string) *liveNode {
	t.Helper()
	l := &liveNode{name: name}
	n, err := Start(Config{
		Name:     name,
		Bind:     bind,
		Join:     join,
		Secret:   secret,
		Meta:     meta,
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnChange: l.onChange(t),
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	l.Node = n
	t.Cleanup(func() { n.Close() })
	return l
}

// waitFor polls cond (every 2 ms) until it holds or timeout passes; it
// returns how long it took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// converged: every node's last OnChange view has all names alive and
// ready, and each serves exactly its home.
func converged(nodes []*liveNode, names ...string) bool {
	for _, l := range nodes {
		v := l.view()
		for _, name := range names {
			m, ok := v.Member(name)
			if !ok || m.State != StateAlive || !m.Meta.Ready || !m.Compatible {
				return false
			}
		}
		if v.Mask != homes[l.name] {
			return false
		}
	}
	return true
}

// takenOver: each survivor's view has gone's state not alive, and the
// survivors' masks together cover all 12 buckets, gone's spread over them.
func takenOver(survivors []*liveNode, gone string, want State) bool {
	var union uint32
	for _, l := range survivors {
		v := l.view()
		m, ok := v.Member(gone)
		if !ok || m.State == StateAlive || (want != "" && m.State != want) {
			return false
		}
		if v.Mask&homes[gone] == 0 || v.Mask&homes[l.name] != homes[l.name] {
			return false // each survivor takes a share of gone's buckets
		}
		union |= v.Mask
	}
	return union == 0xfff
}

func stats(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("min %v median %v max %v over %d runs", s[0].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), len(s))
}

// failureLogs is a log buffer for the test's members, logged if the test
// fails.
func failureLogs(t *testing.T) *nstest.LogBuffer {
	logs := &nstest.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs)
		}
	})
	return logs
}

// TestLiveCluster runs three members on a namespace's loopback: join and
// converge, not ready, leave, rejoin, and crashes (Close) with the time the
// survivors take to take the crashed member's buckets over.
func TestLiveCluster(t *testing.T) {
	if !inNamespace(t) {
		return
	}
	logs := failureLogs(t)
	lo := netip.MustParseAddr("127.0.0.1")
	n1 := startNode(t, "node1", netip.AddrPortFrom(lo, 0), secretA, logs)
	seed := n1.Addr().String()
	n2 := startNode(t, "node2", netip.AddrPortFrom(lo, 0), secretA, logs, seed)
	n3 := startNode(t, "node3", netip.AddrPortFrom(lo, 0), secretA, logs, seed)
	all := []*liveNode{n1, n2, n3}
	d := waitFor(t, 5*time.Second, "three members converge, each serving its home", func() bool { return converged(all, "node1", "node2", "node3") })
	t.Logf("join: converged in %v", d.Round(time.Millisecond))
	if v := n1.View(); len(v.Members) != 3 || !v.Members[0].Self || v.Members[0].Addr != n1.Addr() || v.Servers[4][0] != "node2" {
		t.Errorf("node1's view: %+v", v)
	}

	// Not ready: node2's home is served by the others, node2 serves nothing.
	start := time.Now()
	if err := n2.SetMeta(Meta{Home: homes["node2"], Total: 12, Seed: 7, Ready: false, Reason: "dataplane down"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "node2 not ready: its buckets served by node1 and node3", func() bool {
		if m, _ := n1.view().Member("node2"); m.Meta.Ready || m.Meta.Reason != "dataplane down" {
			return false
		}
		return n2.view().Mask == 0 && takenOverReady([]*liveNode{n1, n3}, "node2")
	})
	t.Logf("SetMeta(Ready=false): taken over %v after SetMeta was called", time.Since(start).Round(time.Millisecond))
	if err := n2.SetMeta(Meta{Home: homes["node2"], Total: 12, Seed: 7, Ready: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "node2 ready again: homes back", func() bool { return converged(all, "node1", "node2", "node3") })

	// Leave: the peers learn at once.
	addr3 := n3.Addr()
	start = time.Now()
	if err := n3.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "node3 left: node1 and node2 serve its buckets", func() bool { return takenOver([]*liveNode{n1, n2}, "node3", StateLeft) })
	t.Logf("leave: taken over %v after Leave was called", time.Since(start).Round(time.Millisecond))

	// Rejoin with the same name (and address).
	n3 = startNode(t, "node3", addr3, secretA, logs, seed)
	all = []*liveNode{n1, n2, n3}
	d = waitFor(t, 5*time.Second, "node3 rejoined", func() bool { return converged(all, "node1", "node2", "node3") })
	t.Logf("rejoin after leave: converged in %v", d.Round(time.Millisecond))

	// Crashes: Close node2 (no leave), measure until both survivors'
	// OnChange views have node2 not alive and its buckets spread over them.
	var detect []time.Duration
	for run := 0; run < 8; run++ {
		addr2 := n2.Addr()
		n2.Close()
		d := waitFor(t, 3*time.Second, "node2 crashed: taken over by node1 and node3", func() bool { return takenOver([]*liveNode{n1, n3}, "node2", "") })
		detect = append(detect, d)
		v := n1.view()
		m, _ := v.Member("node2")
		t.Logf("crash %d: taken over in %v (node2 %s on node1); node2's buckets 4-7 served by %v", run+1, d.Round(time.Millisecond), m.State, v.Servers[4:8])
		n2 = startNode(t, "node2", addr2, secretA, logs, seed)
		all = []*liveNode{n1, n2, n3}
		waitFor(t, 5*time.Second, "node2 restarted and rejoined", func() bool { return converged(all, "node1", "node2", "node3") })
	}
	t.Logf("detection (Close to both survivors' OnChange taking over): %s", stats(detect))
	if slices.Max(detect) > 1500*time.Millisecond {
		t.Errorf("detection took up to %v: want about 1 s", slices.Max(detect))
	}
	for _, l := range all {
		if v, fresh := l.view(), l.View(); !sameView(v, fresh) {
			t.Errorf("%s: last OnChange view differs from View(): %+v vs %+v", l.name, v, fresh)
		}
	}
}

// takenOverReady: gone is alive but not ready on every survivor, which
// serve its buckets between them.
func takenOverReady(survivors []*liveNode, gone string) bool {
	var union uint32
	for _, l := range survivors {
		v := l.view()
		if v.Mask&homes[gone] == 0 {
			return false
		}
		union |= v.Mask
	}
	return union == 0xfff
}

// TestLiveOutsiders: a member with another key cannot join; a member with
// the right key but other cluster parameters joins but takes no part in
// the assignment.
func TestLiveOutsiders(t *testing.T) {
	if !inNamespace(t) {
		return
	}
	logs := &nstest.LogBuffer{}
	lo := netip.MustParseAddr("127.0.0.1")
	n1 := startNode(t, "node1", netip.AddrPortFrom(lo, 0), secretA, logs)
	bad := startNode(t, "node2", netip.AddrPortFrom(lo, 0), secretB, logs, n1.Addr().String())
	good := startNode(t, "node3", netip.AddrPortFrom(lo, 0), secretA, logs, n1.Addr().String())
	waitFor(t, 5*time.Second, "node3 (right key) joins node1", func() bool {
		for _, l := range []*liveNode{n1, good} {
			if m, ok := l.view().Member(map[string]string{"node1": "node3", "node3": "node1"}[l.name]); !ok || m.State != StateAlive {
				return false
			}
		}
		return n1.view().Mask|good.view().Mask == 0xfff && n1.view().Mask&good.view().Mask == 0
	})
	odd := startNodeMeta(t, "odd", netip.AddrPortFrom(lo, 0), secretA, Meta{Home: 0xf, Total: 8, Seed: 7, Ready: true}, logs, n1.Addr().String())
	waitFor(t, 2*time.Second, "odd (total_nodes 8) joins but is incompatible", func() bool {
		m, ok := n1.view().Member("odd")
		return ok && m.State == StateAlive && !m.Compatible && odd.view().Mask == 0xff
	})
	time.Sleep(2 * time.Second) // several join attempts and gossip rounds
	for _, l := range []*liveNode{n1, good} {
		v := l.view()
		for b, s := range v.Servers {
			if slices.Contains(s, "odd") {
				t.Errorf("%s: incompatible odd serves bucket %d", l.name, b)
			}
		}
	}
	if m1, m3 := n1.view().Mask, good.view().Mask; m1|m3 != 0xfff || m1&m3 != 0 {
		t.Errorf("node1 serves %#x, node3 %#x: want all 12 buckets between them, once", m1, m3)
	}
	if c := strings.Count(logs.String(), `member=node1 name=odd why="total_nodes 8`); c != 1 {
		t.Errorf("node1 logged odd's incompatibility %d times, want once:\n%s", c, logs)
	}
	for _, l := range []*liveNode{n1, good} {
		if _, ok := l.View().Member("node2"); ok {
			t.Errorf("%s knows node2, which has another key", l.name)
		}
	}
	if v := bad.View(); len(v.Members) != 1 || v.Mask != 0xfff {
		t.Errorf("node2 (wrong key) sees %d members, mask %#x: want itself alone, serving all", len(v.Members), v.Mask)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="membership: join: no peer reachable, retrying" member=node2`) {
		t.Errorf("node2's failed join not logged as a warning:\n%s", logs)
	}
	if !strings.Contains(strings.ToLower(logs.String()), "no installed keys could decrypt the message") {
		t.Errorf("no decryption failure logged:\n%s", logs)
	}
}

// TestLiveJoinRetry: a node whose peers are not up yet keeps joining in
// the background and joins them when they come.
func TestLiveJoinRetry(t *testing.T) {
	if !inNamespace(t) {
		return
	}
	logs := failureLogs(t)
	// The namespace is the test's own: this port is free.
	seed := netip.MustParseAddrPort("127.0.0.1:7946")
	n2 := startNode(t, "node2", netip.MustParseAddrPort("127.0.0.1:0"), secretA, logs, seed.String())
	n3 := startNode(t, "node3", netip.MustParseAddrPort("127.0.0.1:0"), secretA, logs, seed.String())
	time.Sleep(300 * time.Millisecond) // their first join attempts fail
	for _, l := range []*liveNode{n2, n3} {
		if v := l.view(); len(v.Members) != 1 || v.Mask != 0xfff {
			t.Fatalf("%s before node1 is up: %d members, mask %#x: want itself alone, serving all", l.name, len(v.Members), v.Mask)
		}
	}
	n1 := startNode(t, "node1", seed, secretA, logs)
	all := []*liveNode{n1, n2, n3}
	d := waitFor(t, 2*DefaultTiming().JoinInterval+time.Second, "node2 and node3 join node1 when it comes up", func() bool { return converged(all, "node1", "node2", "node3") })
	t.Logf("joined %v after node1 started (join retried every %v)", d.Round(time.Millisecond), DefaultTiming().JoinInterval)
}
