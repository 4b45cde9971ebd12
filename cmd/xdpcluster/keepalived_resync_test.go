package main

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// keepalived with the membership's state resync (membership.manage_shares:
// false): keepalived moves the shares, the membership resyncs a
// (re)starting node's connection table from a ready peer and holds its
// health (`ctl health`, keepalived's track_script) failed until then, so
// the node preempts its share only once it knows every connection of it.

// kaResyncConfig writes gateway node i's (0-based) configuration for the
// keepalived setup: share i+1 of 2 (as gatewayConfig), and, with
// membership, a membership section on the cluster's management network
// that leaves the shares to keepalived.
func kaResyncConfig(t *testing.T, cl *netns.Cluster, dir string, i int, secretFile string, membership bool) (path, sock string) {
	t.Helper()
	extra := mbSizes
	if membership {
		extra += membershipYAML(cl, i, secretFile, "  manage_shares: false\n")
	}
	return writeGatewayConfig(t, cl, dir, gatewayKeys(i+1), extra)
}

// kaFailback is the run TestKeepalivedFailbackResync and its control
// share, up to the failback.
type kaFailback struct {
	cl      *netns.Cluster
	owner   func(netip.Addr) int // the node (1-based) that owns a client address
	old     []*mbFlow            // opened before the failure
	during  []*mbFlow            // opened while node 2 was down
	daemons []*proc
	socks   []string
	kas     []*nstest.LogBuffer
	// healthOK: node 2's restarted daemon's first good `ctl health`, and
	// its status then; healthFailed: the failed ones before it.
	healthOK     time.Duration
	healthStatus daemon.Status
	healthFailed int
	failback     time.Duration // restart of node 2's daemon to settled
}

const kaPreemptDelay = 2 * time.Second

// waitEchoes waits, at most timeout, until every flow has echoed within
// the last 200 ms.
func waitEchoes(flows []*mbFlow, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, f := range flows {
		for time.Now().Before(deadline) {
			f.mu.Lock()
			since, err := time.Since(f.last), f.err
			f.mu.Unlock()
			if err != nil || since < 200*time.Millisecond {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// runKeepalivedFailback: two gateway daemons (with or without the
// membership) and the shipped keepalived files on each node; long-lived
// TCP connections and UDP flows from client addresses owned by both
// nodes; kill -9 node 2's daemon, node 1 takes share 2 over; new
// connections during the outage; node 2's daemon starts again, and the
// run waits until keepalived has settled (node 2 master of its share,
// node 1 released it) and the UDP probe is forwarded exactly once. The
// flows are checked by the caller.
func runKeepalivedFailback(t *testing.T, membership bool) *kaFailback {
	t.Helper()
	requireKeepalived(t)
	bin := buildBinary(t)
	r := &kaFailback{}
	cl := nstest.Cluster(t, "xc-kr", netns.ClusterOptions{Nodes: 2, Clients4: 16, Clients6: 1})
	r.cl = cl
	nstest.Echo(t, cl.Server, fmt.Sprintf("%s:%d", cl.Server4, mbTCPPort), fmt.Sprintf("%s:%d", cl.Server4, mbUDPPort))
	sink := newSink(t, cl)
	secret := writeSecret(t)

	m := cluster.LocalNode(2, 1, 0xdeadbeef)
	r.owner = func(a netip.Addr) int { return m.Node(a) + 1 }
	owned := map[int]int{}
	for _, a := range cl.Clients4 {
		owned[r.owner(a)]++
	}
	if owned[1] == 0 || owned[2] == 0 {
		t.Fatalf("the clients are not owned by both nodes: %v", owned)
	}

	var cfgs []string
	var ctls []*daemon.Client
	for i, ns := range cl.Nodes {
		cfg, sock := kaResyncConfig(t, cl, t.TempDir(), i, secret, membership)
		p := startRun(t, ns, bin, cfg)
		waitStatus(t, p, sock)
		cfgs, r.socks, r.daemons = append(cfgs, cfg), append(r.socks, sock), append(r.daemons, p)
		ctls = append(ctls, daemon.NewClient(sock))
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, p := range r.daemons {
				t.Logf("daemon of node %d:\n%s", i+1, p.logs())
			}
		}
	})
	for i, ns := range cl.Nodes {
		dir := t.TempDir()
		conf := renderKeepalived(t, dir, 2, map[string]string{
			"MGMT_IF": "mgmt", "SCRIPTS": dir, "SOCKET": r.socks[i],
			"PREEMPT_DELAY": fmt.Sprint(kaPreemptDelay.Seconds()),
		})
		r.kas = append(r.kas, startKeepalived(t, ns, conf, dir, filepath.Dir(bin), i+1))
	}
	// Settled: each node serves its own share only and is master of it
	// only (its keepalived address), twice (whatever served a share
	// while keepalived settled has released it).
	settle := func(what string, timeout time.Duration) {
		t.Helper()
		waitServes(t, ctls, [][]int{{1}, {2}}, timeout, what)
		deadline := time.Now().Add(timeout)
		for !(hasVIP(t, cl.Nodes[0], "192.0.2.251") && hasVIP(t, cl.Nodes[1], "192.0.2.252") &&
			!hasVIP(t, cl.Nodes[0], "192.0.2.252") && !hasVIP(t, cl.Nodes[1], "192.0.2.251")) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: each node is not master of its own share only:\nnode 1: %s\nnode 2: %s", what,
					nstest.Run(t, cl.Nodes[0], "ip", "-br", "addr", "show", "mgmt"), nstest.Run(t, cl.Nodes[1], "ip", "-br", "addr", "show", "mgmt"))
			}
			time.Sleep(50 * time.Millisecond)
		}
		waitServes(t, ctls, [][]int{{1}, {2}}, timeout, what)
	}
	start := time.Now()
	settle("start", 20*time.Second)
	t.Logf("start: settled %v after keepalived was started", time.Since(start).Round(time.Millisecond))
	exactlyOnce(t, cl, sink, "start", 50, false)

	for _, a := range cl.Clients4 {
		r.old = append(r.old, startFlow(t, cl, "tcp", a, "old-tcp-"+a.String()), startFlow(t, cl, "udp", a, "old-udp-"+a.String()))
	}
	time.Sleep(time.Second)
	checkFlows(t, "before the failure", r.old, time.Second, time.Second)

	// kill -9 node 2's daemon: keepalived on node 2 sees its health fail,
	// node 1 becomes master of share 2 and takes it over.
	killed := time.Now()
	r.daemons[1].cmd.Process.Signal(syscall.SIGKILL)
	r.daemons[1].wait(t, 10*time.Second)
	waitServes(t, ctls[:1], [][]int{{1, 2}}, 15*time.Second, "after kill -9 of node 2's daemon")
	t.Logf("takeover: node 1 serves shares 1 and 2 %v after node 2's daemon was killed", time.Since(killed).Round(time.Millisecond))
	// TCP resumes at its next retransmission (0.2, 0.6, 1.4, 3.0, 6.2 s
	// after the failure): wait for every flow to echo again.
	waitEchoes(r.old, 10*time.Second)
	gap := checkFlows(t, "after the takeover", r.old, 8*time.Second, time.Second)
	t.Logf("takeover: longest pause of any flow %v", gap.Round(time.Millisecond))

	// During the outage: new long-lived connections from every client,
	// so some of share 2, which node 2 has never seen.
	for _, a := range cl.Clients4 {
		r.during = append(r.during, startFlow(t, cl, "tcp", a, "new-tcp-"+a.String()), startFlow(t, cl, "udp", a, "new-udp-"+a.String()))
	}
	time.Sleep(time.Second)
	checkFlows(t, "opened during the outage", r.during, time.Second, time.Second)
	exactlyOnce(t, cl, sink, "node 2 down", 50, false)
	checkFlows(t, "before node 2's restart", slices.Concat(r.old, r.during), 2*time.Second, time.Second)

	// Node 2's daemon starts again. Watch its health as keepalived's
	// check script does: with the membership it must not pass before
	// the resync.
	restarted := time.Now()
	r.daemons[1] = startRun(t, cl.Nodes[1], bin, cfgs[1])
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := daemon.NewClient(r.socks[1])
		for time.Since(restarted) < 20*time.Second {
			if _, err := c.Do("GET", "/health"); err == nil {
				r.healthOK = time.Since(restarted)
				r.healthStatus, _ = c.Do("GET", "/status")
				return
			}
			r.healthFailed++
			time.Sleep(10 * time.Millisecond)
		}
	}()
	if membership {
		r.daemons[1].waitLog(t, "state resync done", 15*time.Second)
		t.Logf("node 2's daemon: state resync done %v after its start", time.Since(restarted).Round(time.Millisecond))
	}
	settle("after node 2's daemon restarted", 30*time.Second)
	r.failback = time.Since(restarted)
	wg.Wait()
	t.Logf("failback: node 2 master of share 2 and node 1 released it %v after node 2's daemon was started again (first good health at +%v, preempt_delay %v)",
		r.failback.Round(time.Millisecond), r.healthOK.Round(time.Millisecond), kaPreemptDelay)
	if r.healthOK == 0 {
		t.Fatalf("node 2's restarted daemon never answered ctl health ok")
	}
	if r.failback < r.healthOK+kaPreemptDelay {
		t.Errorf("failback %v after the restart: before the first good health (+%v) and the preempt delay %v", r.failback, r.healthOK, kaPreemptDelay)
	}
	exactlyOnce(t, cl, sink, "after the failback", 50, false)
	for i, ka := range r.kas {
		var lines []string
		for _, l := range strings.Split(ka.String(), "\n") {
			if strings.Contains(l, "Entering") {
				lines = append(lines, l)
			}
		}
		t.Logf("keepalived node%d's transitions:\n%s", i+1, strings.Join(lines, "\n"))
	}
	return r
}

// TestKeepalivedFailbackResync: keepalived moves the shares, the
// membership (manage_shares: false) resyncs the restarted node: after
// kill -9 of node 2's daemon, a takeover by node 1, new connections
// during the outage and node 2's return, keepalived preempts only once
// node 2 has resynced, and every TCP connection, those from before the
// failure and those opened during the outage, continues with its data
// intact through the failback; the UDP probe is forwarded exactly once
// after it settled. (Without the membership, node 2 drops the
// connections of its share it did not see open: see
// TestKeepalivedFailbackNoResync.)
func TestKeepalivedFailbackResync(t *testing.T) {
	r := runKeepalivedFailback(t, true)
	// Keepalived's check passed only once the table was resynced.
	if ms := r.healthStatus.Membership; ms == nil || !ms.Ready || ms.ManageShares || ms.Resync.Pulls-ms.Resync.PullErrors < 1 {
		t.Errorf("node 2's status at its first good health: want ready, resynced, shares left to keepalived: %+v", ms)
	} else {
		t.Logf("node 2's first good health at +%v (%d failed before): resynced %d connections, %d bytes in %v from %s",
			r.healthOK.Round(time.Millisecond), r.healthFailed, ms.Resync.LastRecords, ms.Resync.LastBytes, ms.Resync.LastDuration, ms.Resync.LastPeer)
		if want := len(r.old) + len(r.during); ms.Resync.LastRecords < want {
			t.Errorf("node 2 resynced %d connections, want at least the %d flows", ms.Resync.LastRecords, want)
		}
	}
	time.Sleep(3 * time.Second)
	all := slices.Concat(r.old, r.during)
	gap := checkFlows(t, "after the failback", all, 3*time.Second, 2*time.Second)
	t.Logf("failback: longest pause of any flow %v", gap.Round(time.Millisecond))
	for i, p := range r.daemons {
		if strings.Contains(p.logs(), "level=ERROR") {
			t.Errorf("node %d's daemon logged an error:\n%s", i+1, p.logs())
		}
	}
}

// TestKeepalivedFailbackNoResync is the control of
// TestKeepalivedFailbackResync, the same run without the membership: what
// the README and keepalived.conf say of keepalived alone. Node 2's daemon
// restarted after kill -9 knows none of the TCP connections of its share
// (those opened before the failure nor during the outage) and, with
// conntrack.tcp_loose off, drops them once keepalived has handed the
// share back: they stall. Node 1's connections go on.
func TestKeepalivedFailbackNoResync(t *testing.T) {
	r := runKeepalivedFailback(t, false)
	if r.healthStatus.Membership != nil {
		t.Fatalf("a daemon without a membership section reports a membership: %+v", r.healthStatus.Membership)
	}
	time.Sleep(3 * time.Second)
	var share1, share2 []*mbFlow
	for _, f := range slices.Concat(r.old, r.during) {
		if f.proto != "tcp" {
			continue
		}
		if r.owner(f.src) == 1 {
			share1 = append(share1, f)
		} else {
			share2 = append(share2, f)
		}
	}
	checkFlows(t, "share 1 after the failback", share1, 3*time.Second, 2*time.Second)
	for _, f := range share2 {
		err, _, since, echoes := f.state()
		if err == nil && since < 2*time.Second {
			t.Errorf("tcp flow %s (from %s, share 2) went on through the failback without a resync (%d echoes, last %v ago): the control shows nothing",
				f.name, f.src, echoes, since.Round(time.Millisecond))
		}
	}
	t.Logf("without a resync: %d TCP connections of share 2 stalled or broke at the failback; %d of share 1 went on", len(share2), len(share1))
}
