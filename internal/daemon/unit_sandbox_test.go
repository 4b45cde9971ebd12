package daemon_test

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// unitValues reads every value of key in the systemd unit, in order (keys
// like SystemCallFilter may repeat).
func unitValues(t *testing.T, key string) []string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/systemd/xdpcluster.service")
	if err != nil {
		t.Fatal(err)
	}
	var vs []string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			vs = append(vs, v)
		}
	}
	return vs
}

// syscallGroups parses `systemd-analyze syscall-filter`: every @group and
// its members (system calls and nested groups).
func syscallGroups(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "syscall-filter").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	groups := map[string][]string{}
	var cur string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.TrimSpace(line)
		switch {
		case f == "" || strings.HasPrefix(f, "#"):
		case !strings.HasPrefix(line, " ") && strings.HasPrefix(f, "@"):
			cur = f
		case cur != "":
			groups[cur] = append(groups[cur], strings.Fields(f)[0])
		}
	}
	return groups
}

// allowedSyscalls expands the unit's SystemCallFilter= lines (an allow
// list, then deny lines starting with ~) into the set of calls allowed.
func allowedSyscalls(t *testing.T) map[string]bool {
	t.Helper()
	groups := syscallGroups(t)
	var expand func(name string, into map[string]bool, set bool)
	expand = func(name string, into map[string]bool, set bool) {
		if strings.HasPrefix(name, "@") {
			members, ok := groups[name]
			if !ok {
				t.Fatalf("SystemCallFilter: unknown group %s", name)
			}
			for _, m := range members {
				expand(m, into, set)
			}
			return
		}
		if set {
			into[name] = true
		} else {
			delete(into, name)
		}
	}
	allowed := map[string]bool{}
	vals := unitValues(t, "SystemCallFilter")
	if len(vals) == 0 || strings.HasPrefix(vals[0], "~") {
		t.Fatalf("SystemCallFilter=%q: want an allow list first", vals)
	}
	for _, v := range vals {
		deny := strings.HasPrefix(v, "~")
		for _, name := range strings.Fields(strings.TrimPrefix(v, "~")) {
			expand(name, allowed, !deny)
		}
	}
	return allowed
}

// addressFamilies maps the socket families strace prints (by name or, for
// those it does not know, by number) to their AF_ names.
var addressFamilies = map[string]string{"AF_UNIX": "AF_UNIX", "AF_LOCAL": "AF_UNIX", "1": "AF_UNIX", "AF_INET": "AF_INET", "2": "AF_INET",
	"AF_INET6": "AF_INET6", "10": "AF_INET6", "AF_NETLINK": "AF_NETLINK", "16": "AF_NETLINK", "AF_PACKET": "AF_PACKET", "17": "AF_PACKET",
	"AF_XDP": "AF_XDP", "44": "AF_XDP"}

var (
	straceCall   = regexp.MustCompile(`^\d+\s+([a-z_0-9]+)\(`)
	straceSocket = regexp.MustCompile(`^\d+\s+socket\(([A-Z_0-9]+)`)
)

// TestUnitSandboxAllowsDaemon proves, without systemd as PID 1 (where
// systemd-run would apply the sandbox itself), that the unit's
// SystemCallFilter and RestrictAddressFamilies let the daemon work: it
// runs `xdpcluster run` as user nobody with exactly the unit's
// capabilities, under strace, through start, a metrics scrape, a reload,
// ctl status and health and a stop, as a gateway (its defaults, which on
// veth take raw sockets and tc, and io afxdp) and as a back end, and
// checks that every
// system call it made is in the unit's allow list and every socket it
// opened is of an allowed family. (The filter would answer EPERM to
// anything else: SystemCallErrorNumber=EPERM.)
func TestUnitSandboxAllowsDaemon(t *testing.T) {
	nstest.Require(t)
	for _, tool := range []string{"setpriv", "strace", "systemd-analyze", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not found (the systemd package has systemd-analyze)", tool)
		}
	}
	allowed := allowedSyscalls(t)
	families := map[string]bool{}
	for _, v := range unitValues(t, "RestrictAddressFamilies") {
		for _, f := range strings.Fields(v) {
			families[f] = true
		}
	}
	if !allowed["bpf"] {
		t.Fatalf("SystemCallFilter does not allow bpf(2): the daemon could not load its XDP program")
	}
	dir, bin := buildForNobody(t)
	cl := nstest.Cluster(t, "xc-sbx", netns.ClusterOptions{Nodes: 2, Clients4: 1, Clients6: 1})
	caps := unitCaps(t)

	// The gateway with its defaults (on these veths raw sockets and the
	// fast path in tc) and with io afxdp (AF_XDP and XDP), then a back end.
	for _, run := range []struct {
		name, role, extra, mode string
		node                    int
	}{
		{"gateway", "gateway", "", "fast path in tc", 0},
		{"gateway afxdp", "gateway", "dataplane:\n  io: afxdp\n", "afxdp", 0},
		{"backend", "backend", "", "", 1},
	} {
		role, i := run.role, run.node
		t.Run(run.name, func(t *testing.T) {
			rdir := filepath.Join(dir, strings.ReplaceAll(run.name, " ", "-"))
			os.MkdirAll(rdir, 0o777)
			os.Chmod(rdir, 0o777)
			sock := filepath.Join(rdir, "control.sock")
			cfg := filepath.Join(dir, strings.ReplaceAll(run.name, " ", "-")+".yaml")
			text := nodeConfig(cl, sock, fmt.Sprintf("  local_node: %d", i+1)) + run.extra
			if role == "backend" {
				text = fmt.Sprintf("role: backend\ncluster:\n  total_nodes: 2\n  local_node: 2\n  hash_seed: 0xdeadbeef\ninterfaces:\n  - name: front\n    cluster_mac: %q\n    cluster_addresses: [%q]\nmetrics:\n  listen: \"127.0.0.1:0\"\ncontrol:\n  socket: %s\nstate_dir: %s\n",
					cl.FrontMAC.String(), cl.ClusterFront4.String(), sock, sock+".state")
			}
			if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			trace := filepath.Join(rdir, "trace")
			cmd := exec.Command("ip", append([]string{"netns", "exec", cl.Nodes[i].Name, "strace", "-f", "-qq", "-o", trace},
				asNobody(caps, bin, "run", "--config", cfg)...)...)
			logs := &nstest.LogBuffer{}
			cmd.Stderr = logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				cmd.Process.Kill()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
				}
			})
			c := daemon.NewClient(sock)
			deadline := time.Now().Add(30 * time.Second)
			for {
				_, err := c.Do("GET", "/health")
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the daemon did not become ready under strace: %v\n%s", err, logs.String())
				}
				time.Sleep(200 * time.Millisecond)
			}
			if _, err := c.Do("POST", "/reload"); err != nil {
				t.Errorf("reload: %v", err)
			}
			st, err := c.Do("GET", "/status")
			if err != nil {
				t.Fatal(err)
			}
			if role == "gateway" && !strings.Contains(st.Interfaces["front"], run.mode) {
				t.Errorf("the gateway's mode is not %q with the unit's capabilities: %v\n%s", run.mode, st.Interfaces, logs.String())
			}
			// A scrape of the metrics (the address is in the log).
			if m := regexp.MustCompile(`url=(http://[^ ]+/metrics)`).FindStringSubmatch(logs.String()); m != nil {
				if out, err := exec.Command("ip", "netns", "exec", cl.Nodes[i].Name, "curl", "-sf", m[1]).Output(); err != nil || len(out) == 0 {
					t.Logf("metrics scrape through curl: %v (not counted)", err)
				}
			}
			// SIGTERM to the daemon (cmd is strace, which would detach).
			m := regexp.MustCompile(`msg=starting .* pid=(\d+)`).FindStringSubmatch(logs.String())
			if m == nil {
				t.Fatalf("no pid in the log:\n%s", logs.String())
			}
			pid, _ := strconv.Atoi(m[1])
			syscall.Kill(pid, syscall.SIGTERM)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("stop: %v\n%s", err, logs.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("the daemon did not stop\n%s", logs.String())
			}

			f, err := os.Open(trace)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			used, socks := map[string]int{}, map[string]int{}
			execd := false
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				if !execd { // setpriv's own calls are systemd's, made before the filter
					execd = strings.Contains(line, "execve(\""+bin+"\"") && !strings.Contains(line, "ENOENT")
					continue
				}
				if m := straceCall.FindStringSubmatch(line); m != nil {
					used[m[1]]++
				}
				if m := straceSocket.FindStringSubmatch(line); m != nil {
					socks[m[1]]++
				}
			}
			if !execd {
				t.Fatalf("the trace has no execve of %s", bin)
			}
			var denied, badFam []string
			for name := range used {
				if !allowed[name] {
					denied = append(denied, name)
				}
			}
			for fam := range socks {
				if af, ok := addressFamilies[fam]; !ok || !families[af] {
					badFam = append(badFam, fam)
				}
			}
			slices.Sort(denied)
			slices.Sort(badFam)
			names := slices.Sorted(maps.Keys(used))
			t.Logf("%s: %d distinct system calls %v, socket families %v", run.name, len(used), names, socks)
			// RestrictNamespaces=yes refuses setns and unshare (EPERM): the
			// daemon may try setns only where it has a fallback (following
			// the kernel where the thread is, see gateway.followKernel),
			// which without CAP_SYS_ADMIN it needs anyway.
			if used["unshare"] > 0 {
				t.Errorf("the daemon (%s) calls unshare, which RestrictNamespaces=yes refuses", role)
			}
			if len(denied) > 0 {
				t.Errorf("the daemon (%s) made system calls outside the unit's SystemCallFilter: %v", role, denied)
			}
			if len(badFam) > 0 {
				t.Errorf("the daemon (%s) opened sockets of families outside RestrictAddressFamilies: %v", role, badFam)
			}
			want := "AF_XDP"
			if run.mode == "fast path in tc" {
				want = "AF_PACKET"
			}
			if role == "gateway" && (socks[want]+socks[map[string]string{"AF_XDP": "44", "AF_PACKET": "17"}[want]] == 0 || used["bpf"] == 0) {
				t.Errorf("the trace misses the %s sockets or bpf(2) calls (%v): is strace tracing the daemon?", want, socks)
			}
		})
	}
}
