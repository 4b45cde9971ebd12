package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// keepalivedSinkPort is the server's UDP port TestKeepalivedFailover
// counts datagrams on.
const keepalivedSinkPort = 9999

// The shipped keepalived files.
const (
	keepalivedConf   = "../../deploy/keepalived/keepalived.conf"
	keepalivedNotify = "../../deploy/keepalived/keepalived-notify.sh"
	keepalivedCheck  = "../../deploy/keepalived/keepalived-check.sh"
)

// requireKeepalived skips the test unless it runs as root with the
// keepalived package installed.
func requireKeepalived(t *testing.T) {
	t.Helper()
	nstest.Require(t)
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Skip("skipping: keepalived is not installed (apt-get install keepalived, or scripts/install-test-deps.sh)")
	}
}

// renderKeepalived does what the conf's header tells an operator to do:
// it sets the per-site definitions (a "$NAME=value" line each, which must
// exist), keeps the share blocks of nodes 1..nodes, and installs the
// conf and both scripts in dir. It returns the conf's path.
func renderKeepalived(t *testing.T, dir string, nodes int, defs map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(keepalivedConf)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for name, value := range defs {
		re := regexp.MustCompile(`(?m)^\$` + name + `=.*$`)
		if !re.MatchString(conf) {
			t.Fatalf("%s has no definition $%s= to set", keepalivedConf, name)
		}
		conf = re.ReplaceAllLiteralString(conf, "$"+name+"="+value)
	}
	// A share block: "$S=N" up to its "$SHARE" line.
	blocks := regexp.MustCompile(`(?m)^\$S=(\d+)\n(?:.*\n)*?\$SHARE\n`)
	found := 0
	conf = blocks.ReplaceAllStringFunc(conf, func(block string) string {
		var s int
		fmt.Sscanf(block, "$S=%d", &s)
		found++
		if s > nodes {
			return ""
		}
		return block
	})
	if found < nodes {
		t.Fatalf("%s has %d share blocks, want at least %d", keepalivedConf, found, nodes)
	}
	for _, f := range []string{keepalivedNotify, keepalivedCheck} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestKeepalivedConfigTest: `keepalived -t` accepts the shipped conf as
// an operator renders it, on every node of the 3-node cluster it is
// written for (the 2.2.7 of Debian 12 refused the old one: no virtual
// address, then script security not enabled).
func TestKeepalivedConfigTest(t *testing.T) {
	requireKeepalived(t)
	ns := nstest.Veth(t, "xc-kat", "mgmt", "mgmtp")
	nstest.Run(t, ns, "ip", "addr", "add", "192.0.2.11/24", "dev", "mgmt")
	dir := t.TempDir()
	conf := renderKeepalived(t, dir, 3, map[string]string{"MGMT_IF": "mgmt", "SCRIPTS": dir})
	for node := 1; node <= 3; node++ {
		id := fmt.Sprintf("node%d", node)
		cmd := exec.Command("ip", "netns", "exec", ns.Name, "keepalived", "-t", "-f", conf, "-i", id)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("keepalived -t -i %s: %v\n%s", id, err, out)
		}
	}
}

// startKeepalived runs keepalived (VRRP only, in the foreground, logging
// to the console) in ns as config id nodeN, its pid files in dir and the
// test's xdpcluster first in its PATH (the scripts call it). The test's
// cleanup stops it (SIGTERM, then SIGKILL to its process group).
func startKeepalived(t *testing.T, ns *netns.NS, conf, dir, binDir string, node int) *nstest.LogBuffer {
	t.Helper()
	log := &nstest.LogBuffer{}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "keepalived", "--dont-fork", "--log-console", "--log-detail",
		"--vrrp", "--no-syslog", "-f", conf, "-i", fmt.Sprintf("node%d", node),
		"-p", filepath.Join(dir, "keepalived.pid"), "-r", filepath.Join(dir, "vrrp.pid"), "-c", filepath.Join(dir, "checkers.pid"))
	cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start keepalived in %s: %v", ns.Name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("keepalived node%d:\n%s", node, log.String())
		}
	})
	return log
}

// probe sends a burst of datagrams from every client address, on a new
// flow each and on the client's long-lived flow (long, opened at the
// start), and reports, per owning node, how many arrived other than
// once.
func probe(t *testing.T, cl *netns.Cluster, sink *nstest.Sink, phase string, owner func(netip.Addr) int, long map[netip.Addr]net.Conn) probeResult {
	t.Helper()
	const perFlow = 10
	dst := netip.AddrPortFrom(cl.Server4, keepalivedSinkPort)
	var sent []string
	sentBy := map[string]int{}
	send := func(c net.Conn, a netip.Addr, flow string) {
		for i := 0; i < perFlow; i++ {
			p := fmt.Sprintf("%s/%s/%s/%d", phase, flow, a, i)
			if _, err := c.Write([]byte(p)); err != nil {
				t.Fatalf("send %s: %v", p, err)
			}
			sent = append(sent, p)
			sentBy[p] = owner(a)
			time.Sleep(200 * time.Microsecond)
		}
	}
	for _, a := range cl.Clients4 {
		c, err := cl.Client.Dial("udp", a, dst, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		send(c, a, "new")
		c.Close()
		send(long[a], a, "long")
	}
	time.Sleep(500 * time.Millisecond) // frames in flight
	dups, losses := map[int]int{}, map[int]int{}
	for _, p := range sent {
		switch n := sink.Count([]byte(p)); {
		case n == 0:
			losses[sentBy[p]]++
		case n > 1:
			dups[sentBy[p]] += n - 1
		}
	}
	return probeResult{phase, len(sent), dups, losses}
}

// probeResult counts, by owner node, the datagrams of a probe that arrived
// more than once (the extra copies) or never.
type probeResult struct {
	phase        string
	sent         int
	dups, losses map[int]int
}

func (r probeResult) exactlyOnce() bool { return len(r.dups) == 0 && len(r.losses) == 0 }

func (r probeResult) String() string {
	return fmt.Sprintf("%s: %d datagrams: duplicates by owner node %v, losses by owner node %v", r.phase, r.sent, r.dups, r.losses)
}

// waitServes polls the daemons' status until each serves the shares
// given (node i's in want[i]), returning how long it took. (One client
// per daemon for the whole test: each client keeps its connection open,
// and the control socket takes 16 at a time.)
func waitServes(t *testing.T, ctls []*daemon.Client, want [][]int, timeout time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	var got []string
	for {
		got = got[:0]
		ok := true
		for i, c := range ctls {
			st, err := c.Do("GET", "/status")
			if err != nil {
				got = append(got, err.Error())
			} else {
				got = append(got, fmt.Sprint(st.Serves))
			}
			if err != nil || !slices.Equal(st.Serves, want[i]) {
				ok = false
			}
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: the nodes serve %v after %v, want %v", what, got, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hasVIP reports whether the management interface of ns holds addr (the
// share's keepalived address: its instance is MASTER there).
func hasVIP(t *testing.T, ns *netns.NS, addr string) bool {
	return strings.Contains(nstest.Run(t, ns, "ip", "-br", "addr", "show", "mgmt"), addr+"/32")
}

// TestKeepalivedFailover runs the shipped keepalived files, as an
// operator installs them, with real keepalived on a management bridge
// next to two gateway daemons: every share forwarded exactly once at the
// start; kill -9 node 2's daemon and node 1 takes share 2 over (exactly
// once again); restart node 1's daemon faster than its health checks and
// node 1 still serves share 2 once it is back; start node 2's daemon
// again: both forward share 2 until, after the preempt delay,
// node 2 is master of its share again and node 1 has released it:
// exactly once, no share forwarded twice once it settled. (The old conf,
// with nopreempt, left node 1 master of share 2 and both nodes forwarding
// it for good.)
func TestKeepalivedFailover(t *testing.T) {
	requireKeepalived(t)
	bin := buildBinary(t)
	cl := nstest.Cluster(t, "xc-ka", netns.ClusterOptions{Nodes: 2, Clients4: 16, Clients6: 1})

	// The management network is the cluster's (brm; each node's "mgmt",
	// 192.0.2.11, .12): VRRP's multicast stays in it.

	// Which node owns each client (total_nodes 2, seed 0xdeadbeef as
	// gatewayConfig writes): both must own some.
	m := cluster.LocalNode(2, 1, 0xdeadbeef)
	owner := func(a netip.Addr) int { return m.Node(a) + 1 }
	owned := map[int]int{}
	for _, a := range cl.Clients4 {
		owned[owner(a)]++
	}
	if owned[1] == 0 || owned[2] == 0 {
		t.Fatalf("the clients are not owned by both nodes: %v", owned)
	}
	sink := nstest.NewSink(t, cl.Server, netip.AddrPortFrom(cl.Server4, keepalivedSinkPort))
	long := map[netip.Addr]net.Conn{}
	for _, a := range cl.Clients4 {
		c, err := cl.Client.Dial("udp", a, netip.AddrPortFrom(cl.Server4, keepalivedSinkPort), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		long[a] = c
	}

	var cfgs, socks []string
	var ctls []*daemon.Client
	var daemons []*proc
	for i, ns := range cl.Nodes {
		cfg, sock := gatewayConfig(t, cl, t.TempDir(), i+1)
		p := startRun(t, ns, bin, cfg)
		waitStatus(t, p, sock)
		cfgs, socks, daemons = append(cfgs, cfg), append(socks, sock), append(daemons, p)
		ctls = append(ctls, daemon.NewClient(sock))
	}
	t.Cleanup(func() {
		for i, p := range daemons {
			if t.Failed() {
				t.Logf("daemon of node %d:\n%s", i+1, p.logs())
			}
		}
	})
	const preemptDelay = 2 * time.Second
	var kas []*nstest.LogBuffer
	for i, ns := range cl.Nodes {
		dir := t.TempDir()
		conf := renderKeepalived(t, dir, 2, map[string]string{
			"MGMT_IF": "mgmt", "SCRIPTS": dir, "SOCKET": socks[i],
			"PREEMPT_DELAY": fmt.Sprint(preemptDelay.Seconds()),
		})
		kas = append(kas, startKeepalived(t, ns, conf, dir, filepath.Dir(bin), i+1))
	}
	settled := func(what string, timeout time.Duration) time.Duration {
		t.Helper()
		d := waitServes(t, ctls, [][]int{{1}, {2}}, timeout, what)
		deadline := time.Now().Add(timeout)
		for !(hasVIP(t, cl.Nodes[0], "192.0.2.251") && hasVIP(t, cl.Nodes[1], "192.0.2.252") &&
			!hasVIP(t, cl.Nodes[0], "192.0.2.252") && !hasVIP(t, cl.Nodes[1], "192.0.2.251")) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: each node is not master of its own share only:\nnode 1: %s\nnode 2: %s", what,
					nstest.Run(t, cl.Nodes[0], "ip", "-br", "addr", "show", "mgmt"), nstest.Run(t, cl.Nodes[1], "ip", "-br", "addr", "show", "mgmt"))
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Whatever served a share while keepalived settled has released it.
		return waitServes(t, ctls, [][]int{{1}, {2}}, timeout, what) + d
	}
	settled("start", 20*time.Second)
	if r := probe(t, cl, sink, "start", owner, long); !r.exactlyOnce() {
		t.Errorf("not exactly once: %v", r)
	}

	// What node 1's keepalived did while the cluster came up (under load
	// it may hold share 2 for a moment until node 2's check passes) is
	// not counted below.
	startLog := len(kas[0].String())

	// kill -9 node 2's daemon: its keepalived's health check fails, its
	// instances go FAULT, node 1 becomes master of share 2 and takes it.
	killed := time.Now()
	daemons[1].cmd.Process.Signal(syscall.SIGKILL)
	daemons[1].wait(t, 10*time.Second)
	waitServes(t, ctls[:1], [][]int{{1, 2}}, 15*time.Second, "after kill -9 of node 2's daemon")
	takeover := time.Since(killed)
	t.Logf("takeover: node 1 serves shares 1 and 2 %v after node 2's daemon was killed", takeover.Round(time.Millisecond))
	if !hasVIP(t, cl.Nodes[0], "192.0.2.252") {
		t.Errorf("node 1 serves share 2 but is not master of it")
	}
	if r := probe(t, cl, sink, "node 2 down", owner, long); !r.exactlyOnce() {
		t.Errorf("not exactly once: %v", r)
	}

	// Restart node 1's daemon at once (kill -9, start again), faster than
	// two failed health checks: the new daemon serves its configured
	// share only, so keepalived must see the restart (the check fails for
	// the first seconds of a daemon) and make node 1 take share 2 again.
	// Without that, share 2 stays unserved while keepalived believes
	// node 1 is its master.
	daemons[0].cmd.Process.Signal(syscall.SIGKILL)
	daemons[0].wait(t, 10*time.Second)
	quick := time.Now()
	daemons[0] = startRun(t, cl.Nodes[0], bin, cfgs[0])
	if st := waitStatus(t, daemons[0], socks[0]); !slices.Equal(st.Serves, []int{1}) {
		t.Fatalf("node 1's restarted daemon serves %v, want its configured share [1]", st.Serves)
	}
	t.Logf("node 1's daemon restarted in %v", time.Since(quick).Round(time.Millisecond))
	waitServes(t, ctls[:1], [][]int{{1, 2}}, 20*time.Second, "after a quick restart of node 1's daemon")
	t.Logf("node 1 serves share 2 again %v after its daemon was restarted", time.Since(quick).Round(time.Millisecond))
	if r := probe(t, cl, sink, "node 1 restarted", owner, long); !r.exactlyOnce() {
		t.Errorf("not exactly once: %v", r)
	}

	// Start node 2's daemon again: it serves its own share at once; its
	// keepalived sees it healthy, preempts share 2 after the delay, and
	// node 1 releases it.
	restarted := time.Now()
	daemons[1] = startRun(t, cl.Nodes[1], bin, cfgs[1])
	waitStatus(t, daemons[1], socks[1])
	// Until node 2 preempts, both nodes forward share 2 (what the README
	// says: duplicates, never losses), which also shows that the probe
	// sees duplicates.
	if r := probe(t, cl, sink, "failback pending", owner, long); len(r.losses) > 0 || r.dups[1] > 0 || r.dups[2] == 0 {
		t.Errorf("before node 2 preempts, want duplicates of share 2 only: %v", r)
	} else {
		t.Logf("before node 2 preempts: %v", r)
	}
	settled("after node 2's daemon restarted", 30*time.Second)
	failback := time.Since(restarted)
	t.Logf("failback: node 1 released share 2 and node 2 is master of it %v after node 2's daemon was started again (preempt_delay %v)",
		failback.Round(time.Millisecond), preemptDelay)
	if failback < preemptDelay {
		t.Errorf("failback after %v: before the preempt delay %v", failback, preemptDelay)
	}
	if r := probe(t, cl, sink, "node 2 back", owner, long); !r.exactlyOnce() {
		t.Errorf("not exactly once after it settled: %v", r)
	}
	for i, ka := range kas {
		var lines []string
		for _, l := range strings.Split(ka.String(), "\n") {
			if strings.Contains(l, "Entering") || strings.Contains(l, "VRRP_Script") {
				lines = append(lines, l)
			}
		}
		t.Logf("keepalived node%d's transitions:\n%s", i+1, strings.Join(lines, "\n"))
	}
	for _, want := range []string{"(share_of_node2) Entering FAULT STATE", "VRRP_Script(xdpcluster_health) failed"} {
		if !strings.Contains(kas[1].String(), want) {
			t.Errorf("node 2's keepalived did not log %q", want)
		}
	}
	if n := strings.Count(kas[0].String()[startLog:], "(share_of_node2) Entering MASTER STATE"); n != 2 {
		t.Errorf("node 1 became master of share 2 %d times, want twice (at the takeover and after its own restart)", n)
	}
	for i, p := range daemons {
		if strings.Contains(p.logs(), "level=ERROR") {
			t.Errorf("node %d's daemon logged an error:\n%s", i+1, p.logs())
		}
	}
}

// fakeXdpcluster installs, first in PATH, an xdpcluster that records its
// arguments in dir/calls and, for `ctl ... health` and `ctl ... status`,
// exits with $HEALTH and prints "uptime: $UPTIME".
func fakeXdpcluster(t *testing.T) (dir string, env []string) {
	t.Helper()
	dir = t.TempDir()
	script := "#!/bin/sh\necho \"$@\" >> " + filepath.Join(dir, "calls") + "\n" +
		"case \"$*\" in *' health') exit ${HEALTH:-0} ;; *' status') echo \"uptime:      ${UPTIME-1m0s}\" ;; esac\n"
	if err := os.WriteFile(filepath.Join(dir, "xdpcluster"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
}

// TestKeepalivedNotifyScript: the notify script turns a state of another
// node's share into `ctl takeover N` (MASTER) or `ctl release N` (any
// other), on the socket given; for the node's own share it calls nothing
// whatever the state: the daemon serves it from its configuration.
func TestKeepalivedNotifyScript(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--socket", "/s", "--self", "node1", "INSTANCE", "share_of_node2", "MASTER", "100"}, "ctl --socket=/s takeover 2"},
		{[]string{"--socket", "/s", "--self", "node1", "INSTANCE", "share_of_node2", "BACKUP", "100"}, "ctl --socket=/s release 2"},
		{[]string{"--socket", "/s", "--self", "node1", "INSTANCE", "share_of_node2", "FAULT", "100"}, "ctl --socket=/s release 2"},
		{[]string{"--socket", "/s", "--self", "node1", "INSTANCE", "share_of_node2", "STOP", "100"}, "ctl --socket=/s release 2"},
		{[]string{"--socket", "/s", "--self", "node1", "INSTANCE", "share_of_node2", "DELETED", "100"}, "ctl --socket=/s release 2"},
		{[]string{"--socket", "/s", "--self", "node3", "INSTANCE", "share_of_node12", "MASTER", "100"}, "ctl --socket=/s takeover 12"},
		{[]string{"INSTANCE", "share_of_node2", "MASTER"}, "ctl takeover 2"},
		// Its own share: never released (it would be refused when it is
		// the only one, and must not be), never taken over.
		{[]string{"--socket", "/s", "--self", "node2", "INSTANCE", "share_of_node2", "MASTER", "200"}, ""},
		{[]string{"--socket", "/s", "--self", "node2", "INSTANCE", "share_of_node2", "BACKUP", "200"}, ""},
		{[]string{"--socket", "/s", "--self", "node2", "INSTANCE", "share_of_node2", "FAULT", "200"}, ""},
		{[]string{"--socket", "/s", "--self", "node2", "INSTANCE", "share_of_node2", "STOP", "200"}, ""},
	}
	dir, env := fakeXdpcluster(t)
	for _, tc := range tests {
		os.Remove(filepath.Join(dir, "calls"))
		cmd := exec.Command("sh", append([]string{keepalivedNotify}, tc.args...)...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%v: %v %s", tc.args, err, out)
			continue
		}
		got, _ := os.ReadFile(filepath.Join(dir, "calls"))
		if strings.TrimSpace(string(got)) != tc.want {
			t.Errorf("%v: called %q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestKeepalivedCheckScript: the track script passes when the daemon is
// healthy and has run 4 s at least; it fails when `ctl health` fails and
// during the first seconds after a start (so that a quick restart is
// seen by `fall` 2 checks at 1 s intervals).
func TestKeepalivedCheckScript(t *testing.T) {
	tests := []struct {
		health, uptime string
		ok             bool
	}{
		{"0", "1m0s", true},
		{"0", "4s", true},
		{"0", "10s", true},
		{"0", "1h2m3s", true},
		{"0", "0s", false},
		{"0", "3s", false},
		{"1", "1m0s", false},
		{"0", "", false}, // ctl status says no uptime: never pass blind
	}
	_, env := fakeXdpcluster(t)
	for _, tc := range tests {
		cmd := exec.Command("sh", keepalivedCheck, "/s")
		cmd.Env = append(env, "HEALTH="+tc.health, "UPTIME="+tc.uptime)
		out, err := cmd.CombinedOutput()
		if (err == nil) != tc.ok {
			t.Errorf("health exit %s, uptime %s: %v %s, want ok=%v", tc.health, tc.uptime, err, out, tc.ok)
		}
	}
}
