package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// buildBinary builds the xdpcluster command into a temporary directory:
// these tests run the daemon as a real process, which they signal and
// kill.
func buildBinary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("skipping: the go command is needed to build the daemon")
	}
	bin := filepath.Join(t.TempDir(), "xdpcluster")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// proc is `xdpcluster run` in a namespace, its log collected.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
	err  error // once done
}

func startRun(t *testing.T, ns *netns.NS, bin, cfg string, env ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command("ip", "netns", "exec", ns.Name, bin, "run", "--config", cfg), done: make(chan struct{})}
	if len(env) > 0 {
		p.cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() {
		<-read
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// waitLog waits for a log line containing s; it fails the test if the
// process exits or the time runs out first.
func (p *proc) waitLog(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.logs(), s) {
		select {
		case <-p.done:
			if strings.Contains(p.logs(), s) {
				return
			}
			t.Fatalf("the daemon exited (%v) before logging %q:\n%s", p.err, s, p.logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not log %q within %v:\n%s", s, timeout, p.logs())
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// wait waits for the process to exit and returns its exit status.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("the daemon did not exit within %v:\n%s", timeout, p.logs())
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	t.Fatalf("wait: %v", p.err)
	return -1
}

// waitStatus waits for the daemon's control socket to answer.
func waitStatus(t *testing.T, p *proc, sock string) daemon.Status {
	t.Helper()
	c := daemon.NewClient(sock)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Do("GET", "/status")
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the control socket does not answer: %v\n%s", err, p.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// backendConfig writes a back-end node's configuration (node 1 of 2, on
// the front interface) into dir.
func backendConfig(t *testing.T, cl *netns.Cluster, dir string) (path, sock, stateDir string) {
	path, sock, stateDir = filepath.Join(dir, "config.yaml"), filepath.Join(dir, "control.sock"), filepath.Join(dir, "state")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(`role: backend
cluster:
  total_nodes: 2
  local_node: 1
  hash_seed: 0xdeadbeef
interfaces:
  - name: front
    cluster_mac: "%s"
    cluster_addresses: ["%s", "%s"]
metrics:
  listen: ""
control:
  socket: %s
state_dir: %s
`, cl.FrontMAC, cl.ClusterFront4, cl.ClusterFront6, sock, stateDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, sock, stateDir
}

// hostState is what a back-end node changes in its namespace: the
// addresses on lo, the ARP sysctls of front, and whether an XDP program
// is attached to front.
func hostState(t *testing.T, cl *netns.Cluster) string {
	t.Helper()
	ns := cl.Nodes[0]
	var b strings.Builder
	lo := nstest.Run(t, ns, "ip", "-br", "addr", "show", "lo")
	for _, a := range []string{cl.ClusterFront4.String(), cl.ClusterFront6.String()} {
		fmt.Fprintf(&b, "lo has %s: %v\n", a, strings.Contains(lo, a+"/"))
	}
	for _, k := range []string{"arp_ignore", "arp_announce"} {
		fmt.Fprintf(&b, "%s=%s\n", k, strings.TrimSpace(nstest.Run(t, ns, "sysctl", "-n", "net.ipv4.conf.front."+k)))
	}
	fmt.Fprintf(&b, "xdp on front: %v\n", strings.Contains(nstest.Run(t, ns, "ip", "link", "show", "front"), "xdp"))
	return b.String()
}

// operatorSysctls sets values of its own for the sysctls the back end
// changes, so that restoring them is seen.
func operatorSysctls(t *testing.T, cl *netns.Cluster) {
	nstest.Run(t, cl.Nodes[0], "sysctl", "-qw", "net.ipv4.conf.front.arp_ignore=0", "net.ipv4.conf.front.arp_announce=1")
}

// TestRunSignalsDuringStart: a SIGHUP that arrives while the daemon starts
// (right after it loaded its configuration, while it sets the dataplane
// up) does not kill it: the reload is applied once start completes. A
// SIGTERM during start stops it cleanly, leaving nothing behind.
func TestRunSignalsDuringStart(t *testing.T) {
	nstest.Require(t)
	bin := buildBinary(t)
	cl := nstest.Cluster(t, "xc-sig", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1})
	operatorSysctls(t, cl)
	clean := hostState(t, cl)

	// The test hook holds the start for 2 s after "starting", so the
	// signal lands during start however loaded the machine is.
	hold := "XDPCLUSTER_TEST_HOLD_START=2s"
	duringStart := func(t *testing.T, p *proc) {
		t.Helper()
		p.waitLog(t, "msg=\"test hook: holding the start\"", 10*time.Second)
		if strings.Contains(p.logs(), "node started") {
			t.Fatalf("the node started before the signal was sent:\n%s", p.logs())
		}
	}
	t.Run("SIGHUP", func(t *testing.T) {
		cfg, sock, _ := backendConfig(t, cl, t.TempDir())
		p := startRun(t, cl.Nodes[0], bin, cfg, hold)
		duringStart(t, p)
		p.cmd.Process.Signal(syscall.SIGHUP)
		p.waitLog(t, "configuration reloaded", 10*time.Second)
		if !strings.Contains(p.logs(), "applying the reload requested during start") {
			t.Errorf("the reload was not the one requested during start:\n%s", p.logs())
		}
		if st := waitStatus(t, p, sock); st.NodeMask != "0x1" {
			t.Fatalf("after a SIGHUP during start: %+v\n%s", st, p.logs())
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t, 10*time.Second); code != 0 {
			t.Fatalf("exit %d after SIGTERM:\n%s", code, p.logs())
		}
		if got := hostState(t, cl); got != clean {
			t.Errorf("left behind after the stop:\n%s\nwant\n%s", got, clean)
		}
	})
	t.Run("SIGTERM", func(t *testing.T) {
		cfg, sock, _ := backendConfig(t, cl, t.TempDir())
		p := startRun(t, cl.Nodes[0], bin, cfg, hold)
		duringStart(t, p)
		p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t, 10*time.Second); code != 0 {
			t.Fatalf("exit %d after a SIGTERM during start:\n%s", code, p.logs())
		}
		if !strings.Contains(p.logs(), "msg=stopping signal=terminated received=\"during start\"") {
			t.Errorf("the stop was not logged:\n%s", p.logs())
		}
		if got := hostState(t, cl); got != clean {
			t.Errorf("left behind by a SIGTERM during start:\n%s\nwant\n%s", got, clean)
		}
		if _, err := os.Lstat(sock); err == nil {
			t.Errorf("control socket %s left behind", sock)
		}
	})
}

// TestRunControlSocketRefusedFirst: a control.socket naming a regular
// file stops the start before the node touches the host: exit 1 with the
// message, no "node started", nothing attached, no address on lo, the
// sysctls and the file as they were, state_dir not even created.
func TestRunControlSocketRefusedFirst(t *testing.T) {
	nstest.Require(t)
	bin := buildBinary(t)
	cl := nstest.Cluster(t, "xc-sock", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1})
	operatorSysctls(t, cl)
	clean := hostState(t, cl)
	dir := t.TempDir()
	cfg, sock, stateDir := backendConfig(t, cl, dir)
	if err := os.WriteFile(sock, []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startRun(t, cl.Nodes[0], bin, cfg)
	if code := p.wait(t, 10*time.Second); code != exitFail {
		t.Fatalf("exit %d, want %d:\n%s", code, exitFail, p.logs())
	}
	want := "cannot start\" error=\"control.socket " + sock + ": exists and is a regular file"
	if !strings.Contains(p.logs(), want) {
		t.Errorf("log does not say %q:\n%s", want, p.logs())
	}
	if strings.Contains(p.logs(), "node started") {
		t.Errorf("the node started before the control socket was refused:\n%s", p.logs())
	}
	if got := hostState(t, cl); got != clean {
		t.Errorf("the host changed:\n%s\nwant\n%s", got, clean)
	}
	if _, err := os.Stat(stateDir); err == nil {
		t.Errorf("state_dir %s was created: the back end started before the control socket was checked", stateDir)
	}
	if b, err := os.ReadFile(sock); err != nil || string(b) != "keep me\n" {
		t.Errorf("the file at control.socket changed: %q %v", b, err)
	}
}

// TestRunBackendKilled: a back-end daemon killed with SIGKILL leaves the
// cluster addresses on lo and its ARP sysctls; the next start undoes them
// (and says so), and its stop leaves the namespace as the operator had it.
// Without the record (state_dir wiped), the addresses are still known as
// ours by their mark.
func TestRunBackendKilled(t *testing.T) {
	nstest.Require(t)
	bin := buildBinary(t)
	cl := nstest.Cluster(t, "xc-kill", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1})
	operatorSysctls(t, cl)
	clean := hostState(t, cl)
	cfg, sock, stateDir := backendConfig(t, cl, t.TempDir())
	dirty := fmt.Sprintf("lo has %s: true\nlo has %s: true\narp_ignore=1\narp_announce=2\nxdp on front: false\n", cl.ClusterFront4, cl.ClusterFront6)

	kill := func() {
		t.Helper()
		p := startRun(t, cl.Nodes[0], bin, cfg)
		p.waitLog(t, "node started", 10*time.Second)
		lo := nstest.Run(t, cl.Nodes[0], "ip", "addr", "show", "lo")
		if !strings.Contains(lo, cl.ClusterFront4.String()+"/32 scope global lo:xdpc") {
			t.Errorf("the cluster IPv4 address on lo is not labelled lo:xdpc:\n%s", lo)
		}
		p.cmd.Process.Signal(syscall.SIGKILL)
		if code := p.wait(t, 10*time.Second); code != 128+int(syscall.SIGKILL) {
			t.Fatalf("exit %d after SIGKILL", code)
		}
		if got := hostState(t, cl); got != dirty {
			t.Fatalf("after kill -9:\n%s\nwant (the kill leaves these behind)\n%s", got, dirty)
		}
		os.Remove(sock) // a stale socket would be replaced anyway
	}
	restartStop := func(wantUndo bool) string {
		t.Helper()
		p := startRun(t, cl.Nodes[0], bin, cfg)
		p.waitLog(t, "node started", 10*time.Second)
		if undid := strings.Contains(p.logs(), "level=WARN msg=\"undid the changes of a previous back-end run"); undid != wantUndo {
			t.Errorf("undo logged %v, want %v:\n%s", undid, wantUndo, p.logs())
		}
		if st := waitStatus(t, p, sock); st.Role != "backend" {
			t.Fatalf("restarted daemon: %+v", st)
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t, 10*time.Second); code != 0 {
			t.Fatalf("exit %d after SIGTERM:\n%s", code, p.logs())
		}
		return hostState(t, cl)
	}

	kill()
	if got := restartStop(true); got != clean {
		t.Errorf("after kill -9, restart and stop:\n%s\nwant the operator's state\n%s", got, clean)
	}
	if ents, _ := os.ReadDir(stateDir); len(ents) > 1 { // the lock file stays
		t.Errorf("state_dir after a clean stop: %v", ents)
	}

	// The record lost: the marked addresses are still ours, so the killed
	// run was ours; the sysctl values it replaced are unknown, so the ones
	// still at the back end's values (1, 2) go back to the kernel default
	// 0, with a WARN saying so.
	kill()
	os.RemoveAll(stateDir)
	p := startRun(t, cl.Nodes[0], bin, cfg)
	p.waitLog(t, "node started", 10*time.Second)
	for _, w := range []string{
		"level=WARN msg=\"undid the changes of a previous back-end run",
		"level=WARN msg=\"a previous back-end run left its addresses on lo but no record of the sysctl values it replaced: the operator's values are unknown",
		"reset=\"net/ipv4/conf/front/arp_ignore=0, net/ipv4/conf/front/arp_announce=0\"",
	} {
		if !strings.Contains(p.logs(), w) {
			t.Errorf("without the record, the restart did not log %q:\n%s", w, p.logs())
		}
	}
	waitStatus(t, p, sock)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, p.logs())
	}
	reset := fmt.Sprintf("lo has %s: false\nlo has %s: false\narp_ignore=0\narp_announce=0\nxdp on front: false\n", cl.ClusterFront4, cl.ClusterFront6)
	if got := hostState(t, cl); got != reset {
		t.Errorf("without the record, after restart and stop:\n%s\nwant the addresses gone and the sysctls at the kernel default\n%s", got, reset)
	}
}

// gatewayConfig writes a gateway node's configuration into dir.
func gatewayConfig(t *testing.T, cl *netns.Cluster, dir string, node int) (path, sock string) {
	return writeGatewayConfig(t, cl, dir, gatewayKeys(node), "")
}

// gatewayKeys is the cluster section's keys of gateway node (1-based) of
// 2, seed 0xdeadbeef.
func gatewayKeys(node int) string {
	return fmt.Sprintf("  total_nodes: 2\n  local_node: %d\n  hash_seed: 0xdeadbeef\n", node)
}

// writeGatewayConfig writes a gateway node's configuration into dir: the
// cluster section's keys (indented lines), the front and back interfaces
// of cl, no metrics listener, the control socket and state directory in
// dir, then the extra top-level sections.
func writeGatewayConfig(t *testing.T, cl *netns.Cluster, dir, clusterKeys, extra string) (path, sock string) {
	t.Helper()
	path, sock = filepath.Join(dir, "config.yaml"), filepath.Join(dir, "control.sock")
	cfg := fmt.Sprintf(`cluster:
%sinterfaces:
  - name: front
    cluster_mac: "%s"
    cluster_addresses: ["%s"]
  - name: back
    cluster_mac: "%s"
    cluster_addresses: ["%s"]
metrics:
  listen: ""
control:
  socket: %s
state_dir: %s
`, clusterKeys, cl.FrontMAC, cl.ClusterFront4, cl.BackMAC, cl.ClusterBack4, sock, filepath.Join(dir, "state")) + extra
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, sock
}

// TestRunSecondInstanceRefused: a second daemon on the interfaces of a
// running one, with another configuration, control socket and state
// directory, is refused with a message naming the first (its PID and
// control socket), instead of starting on raw sockets next to it (gateway)
// or taking lo over (back end); the first keeps running untouched. For
// gateways, whichever holds the interface: the fast path in tc (the
// default on these veths) or AF_XDP and XDP (io afxdp).
func TestRunSecondInstanceRefused(t *testing.T) {
	nstest.Require(t)
	bin := buildBinary(t)
	cl := nstest.Cluster(t, "xc-two", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1})
	const afxdp = "dataplane:\n  io: afxdp\n"
	for _, tc := range []struct{ name, role, first, second string }{
		{"gateway", "gateway", "", ""},
		{"gateway tc then afxdp", "gateway", "", afxdp},
		{"gateway afxdp then defaults", "gateway", afxdp, ""},
		{"backend", "backend", "", ""},
	} {
		role := tc.role
		t.Run(tc.name, func(t *testing.T) {
			var cfgA, sockA, cfgB string
			if role == "gateway" {
				cfgA, sockA = writeGatewayConfig(t, cl, t.TempDir(), gatewayKeys(1), tc.first)
				cfgB, _ = writeGatewayConfig(t, cl, t.TempDir(), gatewayKeys(2), tc.second)
			} else {
				cfgA, sockA, _ = backendConfig(t, cl, t.TempDir())
				cfgB, _, _ = backendConfig(t, cl, t.TempDir())
			}
			a := startRun(t, cl.Nodes[0], bin, cfgA)
			before := waitStatus(t, a, sockA)
			state := hostState(t, cl)
			b := startRun(t, cl.Nodes[0], bin, cfgB)
			if code := b.wait(t, 10*time.Second); code != exitFail {
				t.Fatalf("the second daemon: exit %d, want %d (refused):\n%s", code, exitFail, b.logs())
			}
			t.Logf("the second daemon: %s", strings.TrimSpace(b.logs()))
			for _, want := range []string{"interface front is in use", fmt.Sprintf("pid %d", a.cmd.Process.Pid), "control socket " + sockA} {
				if !strings.Contains(b.logs(), want) {
					t.Errorf("the refusal does not say %q:\n%s", want, b.logs())
				}
			}
			after := waitStatus(t, a, sockA)
			if fmt.Sprint(after.Interfaces) != fmt.Sprint(before.Interfaces) || after.NodeMask != before.NodeMask {
				t.Errorf("the first daemon changed: %+v, was %+v", after, before)
			}
			if got := hostState(t, cl); got != state {
				t.Errorf("the refused daemon changed the namespace:\n%s\nwas\n%s", got, state)
			}
			a.cmd.Process.Signal(syscall.SIGTERM)
			if code := a.wait(t, 10*time.Second); code != 0 {
				t.Errorf("the first daemon: exit %d:\n%s", code, a.logs())
			}
		})
	}
}
