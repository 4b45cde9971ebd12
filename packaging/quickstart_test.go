package packaging_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// The unit runs the daemon as a dynamic user (DynamicUser=yes), named
// after the unit; if a system user of that name exists, systemd uses it
// instead, as the README's membership step has the operator create
// (useradd --system xdpcluster) so that the user owns the cluster key. The
// test runs the daemon as uid staticUID standing for that user, and
// proves with dynamicUID (nobody, a user that owns nothing, as a dynamic
// one) that the key in /etc, root's, is out of the unit's reach without it.
const (
	staticUID  = 65533
	dynamicUID = 65534
)

// qsNode is one "machine" of the quickstart: a node namespace, its own
// /etc/xdpcluster (a directory per node: the machines share no disk) and
// the daemon the unit would run there.
type qsNode struct {
	i      int
	ns     *netns.NS
	etc    string // this machine's /etc/xdpcluster
	cfg    string // etc/config.yaml
	run    string // the unit's RuntimeDirectory (control socket, state_dir)
	sock   string
	cmd    *exec.Cmd
	log    *syncLog
	exited chan struct{}
}

type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// unitLine returns the value of key= in the unit (the first).
func unitLine(t *testing.T, unit, key string) string {
	t.Helper()
	for _, l := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	t.Fatalf("the installed unit has no %s= line", key)
	return ""
}

// replaceOnce replaces old by new in text, failing the test unless old
// occurs exactly once: the edit the README asks for must find its line.
func replaceOnce(t *testing.T, text, old, new string) string {
	t.Helper()
	if n := strings.Count(text, old); n != 1 {
		t.Fatalf("the installed config.yaml has %d occurrences of %q, want exactly one to edit:\n%s", n, old, text)
	}
	return strings.Replace(text, old, new, 1)
}

// TestQuickstart follows the README's "Quickstart on real machines" with
// the installed package, as an operator would, on two "machines" (the
// node namespaces of a client/switch/server topology): step 4 (no cluster
// IP assigned, forwarding on; with one assigned the daemon refuses to
// start), step 5 (the installed /etc/xdpcluster/config.yaml edited, a
// membership section with a secret made as the README says,
// `xdpcluster check` printing the values written), step 6 (the daemon
// started as the installed unit's ExecStart, as the unit's user with the
// unit's capabilities; its log, ctl status, ctl health; the unit's
// ExecReload taking a good edit and refusing a restart-only and an
// invalid one), step 7 (the key given to the unit's user as the README
// says; both members ready, every bucket served by exactly one node), and
// then TCP and UDP from many client addresses, IPv4 and IPv6, through the
// cluster to the server, every datagram delivered exactly once.
//
// Time: about 3 s after the install; with the package cached (see
// TestPackage) about 10 s in all.
func TestQuickstart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root (dpkg --root, network namespaces, the daemon's capabilities); CI runs it as root")
	}
	nstest.Require(t)
	need(t, "dpkg", "dpkg-deb", "make", "go", "git", "setpriv", "sh", "base64", "head")
	start := time.Now()
	droot := installDeb(t, builtDeb(t))
	t.Logf("package built and installed: %v", time.Since(start).Round(time.Second))
	start = time.Now()
	p := func(rel string) string { return filepath.Join(droot, rel) }
	bin := p("usr/bin/xdpcluster")
	unit := readFile(t, p("usr/lib/systemd/system/xdpcluster.service"))
	execStart := strings.Fields(unitLine(t, unit, "ExecStart"))
	execReload := strings.Fields(unitLine(t, unit, "ExecReload"))
	if want := []string{"/usr/bin/xdpcluster", "run", "--config", "/etc/xdpcluster/config.yaml"}; !slices.Equal(execStart, want) {
		t.Fatalf("the unit's ExecStart is %q, want %q", execStart, want)
	}
	if len(execReload) != 5 || execReload[0] != "/usr/bin/xdpcluster" || execReload[2] != "--socket" {
		t.Fatalf("the unit's ExecReload is %q, want /usr/bin/xdpcluster ctl --socket PATH reload", execReload)
	}
	if unitLine(t, unit, "DynamicUser") != "yes" {
		t.Fatalf("the test runs the daemon as the unit's dynamic user (nobody): the unit has no DynamicUser=yes")
	}
	// The unit's capabilities, for setpriv.
	var caps []string
	for _, c := range strings.Fields(unitLine(t, unit, "AmbientCapabilities")) {
		caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	capSet := strings.Join(caps, ",")
	// asUnit is the command line that runs argv in ns as the unit would:
	// its user (a dynamic one: here nobody, owning nothing) and exactly
	// its capabilities, ambient.
	asUser := func(uid int, ns *netns.NS, argv ...string) *exec.Cmd {
		args := []string{"netns", "exec", ns.Name, "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups",
			"--inh-caps=-all," + capSet, "--ambient-caps=-all," + capSet, "--bounding-set=-all," + capSet, "--"}
		return exec.Command("ip", append(args, argv...)...)
	}
	asUnit := func(ns *netns.NS, argv ...string) *exec.Cmd { return asUser(staticUID, ns, argv...) }

	cl := nstest.Cluster(t, "xc-qs", netns.ClusterOptions{Nodes: 2, Clients4: 24, Clients6: 4})

	// Step 4: no cluster IP on a node's interface, each node its own
	// address on each segment, forwarding on for the data interfaces.
	clusterIPs := []netip.Addr{cl.ClusterFront4, cl.ClusterBack4, cl.ClusterFront6, cl.ClusterBack6}
	for i, ns := range cl.Nodes {
		addrs := nstest.Run(t, ns, "ip", "-o", "addr", "show")
		for _, a := range clusterIPs {
			if strings.Contains(addrs, " "+a.String()+"/") {
				t.Errorf("step 4: node%d has the cluster IP %s assigned:\n%s", i+1, a, addrs)
			}
		}
		for _, dev := range []string{"front", "back"} {
			if !strings.Contains(addrs, " "+dev+" ") {
				t.Errorf("step 4: node%d has no address of its own on %s:\n%s", i+1, dev, addrs)
			}
			for _, fam := range []string{"ipv4", "ipv6"} {
				key := "net." + fam + ".conf." + dev + ".forwarding"
				if got := strings.TrimSpace(nstest.Run(t, ns, "sysctl", "-n", key)); got != "1" {
					t.Errorf("step 4: node%d %s = %s, want 1", i+1, key, got)
				}
			}
		}
	}

	// Step 5: each machine edits the installed /etc/xdpcluster/config.yaml.
	// The secret, made once as the README says and copied to the other.
	var nodes []*qsNode
	for i, ns := range cl.Nodes {
		n := &qsNode{i: i, ns: ns, etc: filepath.Join(t.TempDir(), "etc-xdpcluster"), run: filepath.Join(t.TempDir(), "run-xdpcluster"), log: &syncLog{}}
		for _, d := range []string{n.etc, n.run} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			for up := filepath.Dir(d); up != os.TempDir() && up != filepath.Dir(up); up = filepath.Dir(up) {
				os.Chmod(up, 0o755)
			}
		}
		// The unit's RuntimeDirectory belongs to its user.
		if err := os.Chown(n.run, staticUID, staticUID); err != nil {
			t.Fatal(err)
		}
		n.cfg, n.sock = filepath.Join(n.etc, "config.yaml"), filepath.Join(n.run, "control.sock")
		nodes = append(nodes, n)
	}
	key0 := filepath.Join(nodes[0].etc, "cluster.key")
	run(t, nodes[0].etc, nil, "sh", "-c", "head -c 32 /dev/urandom | base64 > "+key0+"; chmod 600 "+key0)
	run(t, nodes[0].etc, nil, "cp", "-p", key0, filepath.Join(nodes[1].etc, "cluster.key"))
	keys := []string{key0, filepath.Join(nodes[1].etc, "cluster.key")}

	shipped := readFile(t, p("etc/xdpcluster/config.yaml"))
	type want struct {
		local     int
		bind      string
		join      []string
		secret    string
		socket    string
		stateDir  string
		frontAddr []string
		backAddr  []string
	}
	wants := make([]want, len(nodes))
	for i, n := range nodes {
		var join []string
		for j, a := range cl.Mgmt4 {
			if j != i {
				join = append(join, a.String()+":7946")
			}
		}
		w := want{local: i + 1, bind: cl.Mgmt4[i].String() + ":7946", join: join, secret: keys[i],
			socket: n.sock, stateDir: filepath.Join(n.run, "state"),
			frontAddr: []string{cl.ClusterFront4.String(), cl.ClusterFront6.String()},
			backAddr:  []string{cl.ClusterBack4.String(), cl.ClusterBack6.String()}}
		wants[i] = w
		text := shipped
		text = replaceOnce(t, text, "- name: eth1", "- name: front")
		text = replaceOnce(t, text, "- name: eth2", "- name: back")
		text = replaceOnce(t, text, `cluster_mac: "01:00:5e:00:01:01"`, fmt.Sprintf("cluster_mac: %q", cl.FrontMAC))
		text = replaceOnce(t, text, `cluster_mac: "01:00:5e:00:01:02"`, fmt.Sprintf("cluster_mac: %q", cl.BackMAC))
		text = replaceOnce(t, text, `cluster_addresses: ["10.1.0.1"]`, fmt.Sprintf("cluster_addresses: [%q, %q]", w.frontAddr[0], w.frontAddr[1]))
		text = replaceOnce(t, text, `cluster_addresses: ["10.2.0.1"]`, fmt.Sprintf("cluster_addresses: [%q, %q]", w.backAddr[0], w.backAddr[1]))
		text = replaceOnce(t, text, "local_node: 1\n", fmt.Sprintf("local_node: %d\n", w.local))
		text += fmt.Sprintf("\nmembership:\n  bind: %s\n  join: [%q]\n  secret_file: %s\ncontrol:\n  socket: %s\nstate_dir: %s\n",
			w.bind, w.join[0], w.secret, w.socket, w.stateDir)
		if err := os.WriteFile(n.cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		// The unit's dynamic user cannot read root's key; the system user
		// xdpcluster, once it owns the key (chown, mode 0600 kept), can.
		if out, err := asUser(dynamicUID, n.ns, bin, "check", "--config", n.cfg).CombinedOutput(); err == nil || !strings.Contains(string(out), "permission denied") {
			t.Errorf("step 7: the unit's dynamic user reading root's %s: %v, want permission denied:\n%s", w.secret, err, out)
		}
		if err := os.Chown(w.secret, staticUID, staticUID); err != nil {
			t.Fatal(err)
		}
		if out, err := asUnit(n.ns, bin, "check", "--config", n.cfg).CombinedOutput(); err != nil {
			t.Errorf("step 7: the unit's user (system user xdpcluster) reading %s, its own: %v\n%s", w.secret, err, out)
		}

		// check --config: valid, and the effective values are those written.
		out := run(t, n.etc, nil, bin, "check", "--config", n.cfg)
		if !strings.Contains(out, n.cfg+" is valid") {
			t.Errorf("step 5: node%d: xdpcluster check --config %s:\n%s", i+1, n.cfg, out)
		}
		var eff struct {
			Cluster struct {
				TotalNodes int    `yaml:"total_nodes"`
				LocalNode  int    `yaml:"local_node"`
				HashSeed   string `yaml:"hash_seed"`
			}
			Interfaces []struct {
				Name             string
				ClusterMAC       string   `yaml:"cluster_mac"`
				ClusterAddresses []string `yaml:"cluster_addresses"`
			}
			Membership struct {
				Bind       string
				Join       []string
				SecretFile string `yaml:"secret_file"`
			}
			Control  struct{ Socket string }
			StateDir string `yaml:"state_dir"`
		}
		if err := yaml.Unmarshal([]byte(out), &eff); err != nil {
			t.Fatalf("step 5: node%d: the effective configuration check prints: %v\n%s", i+1, err, out)
		}
		type iface struct {
			name, mac string
			addrs     []string
		}
		var gotIf []iface
		for _, f := range eff.Interfaces {
			gotIf = append(gotIf, iface{f.Name, f.ClusterMAC, f.ClusterAddresses})
		}
		wantIf := []iface{{"front", cl.FrontMAC.String(), w.frontAddr}, {"back", cl.BackMAC.String(), w.backAddr}}
		ifEq := slices.EqualFunc(gotIf, wantIf, func(a, b iface) bool { return a.name == b.name && a.mac == b.mac && slices.Equal(a.addrs, b.addrs) })
		if !ifEq || eff.Cluster.TotalNodes != 2 || eff.Cluster.LocalNode != w.local || eff.Cluster.HashSeed != "0xdeadbeef" ||
			eff.Membership.Bind != w.bind || !slices.Equal(eff.Membership.Join, w.join) || eff.Membership.SecretFile != w.secret ||
			eff.Control.Socket != w.socket || eff.StateDir != w.stateDir {
			t.Errorf("step 5: node%d: the effective configuration is not what was written (local_node %d, membership %s %v %s, socket %s, state_dir %s):\n%s",
				i+1, w.local, w.bind, w.join, w.secret, w.socket, w.stateDir, out)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Step 4: with a cluster IP assigned to its interface, the daemon
	// refuses to start, saying which and what to do.
	{
		n := nodes[0]
		prefix := cl.ClusterFront4.String() + "/24"
		nstest.Run(t, n.ns, "ip", "addr", "add", prefix, "dev", "front")
		argv := append([]string{bin}, execStart[1:]...)
		argv[len(argv)-1] = n.cfg
		cmd := asUnit(n.ns, argv...)
		timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
		out, err := cmd.CombinedOutput()
		timer.Stop()
		if err == nil || !strings.Contains(string(out), "cluster address "+cl.ClusterFront4.String()+" is assigned") || !strings.Contains(string(out), "ip addr del") {
			t.Errorf("step 4: the daemon with %s assigned to front: %v, want a refusal naming it and the remedy:\n%s", prefix, err, out)
		}
		nstest.Run(t, n.ns, "ip", "addr", "del", prefix, "dev", "front")
	}

	// Step 6: the daemons, started as the unit's ExecStart with the
	// unit's user and capabilities.
	for _, n := range nodes {
		argv := append([]string{bin}, execStart[1:]...)
		argv[len(argv)-1] = n.cfg
		n.cmd = asUnit(n.ns, argv...)
		n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		n.exited = make(chan struct{})
		go func(n *qsNode) { n.cmd.Wait(); close(n.exited) }(n)
		t.Cleanup(func() {
			n.cmd.Process.Signal(os.Interrupt)
			select {
			case <-n.exited:
			case <-time.After(10 * time.Second):
				n.cmd.Process.Kill()
				<-n.exited
			}
			if t.Failed() {
				t.Logf("node%d's log:\n%s", n.i+1, n.log.String())
			}
		})
	}
	ctl := func(n *qsNode, args ...string) (string, int) {
		out, err := exec.Command(bin, append([]string{"ctl", "--socket", n.sock}, args...)...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("xdpcluster ctl %v: %v", args, err)
		}
		return string(out), code
	}
	// Step 7 (membership): both ready, each bucket served by exactly one
	// node, the one whose home it is.
	status := func(n *qsNode) (daemon.Status, error) {
		var st daemon.Status
		out, code := ctl(n, "status", "--json")
		if code != 0 {
			return st, fmt.Errorf("ctl status --json: exit %d: %s", code, out)
		}
		return st, json.Unmarshal([]byte(out), &st)
	}
	settled := func() error {
		served := map[int]int{}
		for _, n := range nodes {
			if _, code := ctl(n, "health"); code != 0 {
				return fmt.Errorf("node%d: ctl health exit %d", n.i+1, code)
			}
			st, err := status(n)
			if err != nil {
				return fmt.Errorf("node%d: %w", n.i+1, err)
			}
			m := st.Membership
			if m == nil || !m.Ready || len(m.Members) != 2 {
				return fmt.Errorf("node%d: membership %+v, want ready with 2 members", n.i+1, m)
			}
			for _, mem := range m.Members {
				if !mem.Ready {
					return fmt.Errorf("node%d sees member %s not ready", n.i+1, mem.Name)
				}
			}
			if len(m.Buckets) != 2 {
				return fmt.Errorf("node%d: buckets %v, want 2", n.i+1, m.Buckets)
			}
			for b, servers := range m.Buckets {
				if len(servers) != 1 || servers[0] != wants[b].bind {
					return fmt.Errorf("node%d's view: bucket %d served by %v, want %s alone", n.i+1, b+1, servers, wants[b].bind)
				}
			}
			for _, s := range st.Serves {
				served[s]++
			}
		}
		if served[1] != 1 || served[2] != 1 || len(served) != 2 {
			return fmt.Errorf("dataplanes serve buckets %v, want 1 and 2 once each", served)
		}
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for err := settled(); err != nil; err = settled() {
		for _, n := range nodes {
			select {
			case <-n.exited:
				t.Fatalf("node%d's daemon exited (%v):\n%s", n.i+1, n.cmd.ProcessState, n.log.String())
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("step 7: not settled 30 s after the start: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Step 6: the log (journalctl -u xdpcluster) shows the start: the
	// match, the interfaces and their modes (what io auto takes on these
	// veths: raw sockets with the fast path in tc; AF_XDP on a NIC).
	for _, n := range nodes {
		log := n.log.String()
		const tc = "afpacket, 2 sockets (IPv4, IPv6), fast path in tc"
		for _, s := range []string{"msg=\"node started\"", fmt.Sprintf("--cluster-local-node %d", n.i+1), "front (" + tc, "back (" + tc, "msg=\"dataplane.io auto: raw sockets with the fast path in tc on veth"} {
			if !strings.Contains(log, s) {
				t.Errorf("step 6: node%d's log lacks %q:\n%s", n.i+1, s, log)
			}
		}
	}
	t.Logf("steps 6-7: both daemons ready, buckets served once each, %v after the start", time.Since(start).Round(100*time.Millisecond))
	for _, n := range nodes {
		out, code := ctl(n, "status")
		for _, s := range []string{"front", "back", "fast path in tc", "membership:", "ready"} {
			if code != 0 || !strings.Contains(out, s) {
				t.Errorf("step 6: node%d: ctl status (exit %d) lacks %q:\n%s", n.i+1, code, s, out)
			}
		}
		if out, code := ctl(n, "health"); code != 0 {
			t.Errorf("step 6: node%d: ctl health exit %d:\n%s", n.i+1, code, out)
		}
	}

	// Step 6: `systemctl reload` runs the unit's ExecReload as its user.
	// A good edit is taken (exit 0): node 1's home share becomes bucket
	// 2, which node 2 sees in the gossip. An edit of a key that only a
	// restart changes, and an invalid one, are refused (exit 1, the key
	// named) and the running configuration kept.
	reload := func(n *qsNode) (string, int) {
		argv := append([]string{bin}, execReload[1:]...)
		argv[3] = n.sock
		out, err := asUnit(n.ns, argv...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	n1 := nodes[0]
	good := readFile(t, n1.cfg)
	edit := func(text string) {
		if err := os.WriteFile(n1.cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	homeOfNode1 := func() []int {
		st, err := status(nodes[1])
		if err != nil || st.Membership == nil {
			t.Fatalf("node2: ctl status: %v", err)
		}
		for _, m := range st.Membership.Members {
			if m.Name == wants[0].bind {
				return m.Home
			}
		}
		return nil
	}
	edit(strings.Replace(good, "local_node: 1\n", "local_node: 2\n", 1))
	if out, code := reload(n1); code != 0 {
		t.Errorf("step 6: reload of a good edit (local_node: 2): exit %d:\n%s", code, out)
	}
	for deadline := time.Now().Add(5 * time.Second); !slices.Equal(homeOfNode1(), []int{2}); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("step 6: after node 1's reload with local_node: 2, node 2 sees node 1's home %v, want [2]", homeOfNode1())
			break
		}
	}
	edit(good + "log:\n  level: debug\n")
	if out, code := reload(n1); code != 1 || !strings.Contains(out, "log.level") || !strings.Contains(out, "restart") {
		t.Errorf("step 6: reload of log.level (a restart's): exit %d, want 1 saying it needs a restart:\n%s", code, out)
	}
	edit(strings.Replace(good, fmt.Sprintf("cluster_mac: %q", cl.FrontMAC), `cluster_mac: "not-a-mac"`, 1))
	if out, code := reload(n1); code != 1 || !strings.Contains(out, "cluster_mac") {
		t.Errorf("step 6: reload of a bad edit (cluster_mac: not-a-mac): exit %d, want 1 naming cluster_mac:\n%s", code, out)
	}
	edit(good)
	if out, code := reload(n1); code != 0 {
		t.Errorf("step 6: reload of the original: exit %d:\n%s", code, out)
	}
	// A node gives up a bucket only 0.75 s after the assignment moves it
	// (make before break), so the dataplanes settle a moment after the
	// views.
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err = settled(); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Errorf("step 6: after the reloads: %v", err)
	}

	// Traffic: TCP echo and UDP from every client address, IPv4 and IPv6,
	// through the cluster; every datagram reaches the server exactly once.
	const echoPort, sinkPort = 5001, 5003
	nstest.Echo(t, cl.Server, netip.AddrPortFrom(cl.Server4, echoPort).String(), netip.AddrPortFrom(cl.Server4, echoPort).String())
	nstest.Echo(t, cl.Server, netip.AddrPortFrom(cl.Server6, echoPort).String(), netip.AddrPortFrom(cl.Server6, echoPort).String())
	sink := nstest.NewSink(t, cl.Server, netip.AddrPortFrom(cl.Server4, sinkPort))
	clients := append(slices.Clone(cl.Clients4), cl.Clients6...)
	for _, src := range clients {
		for _, proto := range []string{"tcp", "udp"} {
			msg := []byte(proto + " from " + src.String())
			got, err := cl.Client.Exchange(proto, src, netip.AddrPortFrom(cl.ServerFor(src), echoPort), msg, 3*time.Second)
			if err != nil || string(got) != string(msg) {
				t.Errorf("%s echo from %s through the cluster: %q, %v", proto, src, got, err)
			}
		}
	}
	const count = 40
	if lost, dup := sink.Probe(t, cl.Client, cl.Clients4, netip.AddrPortFrom(cl.Server4, sinkPort), count); lost != 0 || dup != 0 {
		t.Errorf("through the cluster: of %d datagrams from %d sources, %d lost and %d duplicated; want each exactly once", count*len(cl.Clients4), len(cl.Clients4), lost, dup)
	}
	// Both machines carried a share.
	for _, n := range nodes {
		st, err := status(n)
		if err != nil {
			t.Fatal(err)
		}
		if st.Connections == 0 {
			t.Errorf("node%d tracks no connection after traffic from %d client addresses: it forwarded nothing", n.i+1, len(clients))
		}
	}
	t.Logf("quickstart after the install: %v", time.Since(start).Round(100*time.Millisecond))
}
