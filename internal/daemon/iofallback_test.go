package daemon_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestIOFallbackVisible runs `xdpcluster run` (a gateway) as user nobody
// with the unit's capabilities, or with one of them missing, as systemd
// would (ambient capabilities):
//   - dataplane.io auto with every capability: raw sockets with the fast
//     path in tc (auto's choice on veth), io_fallback empty,
//     xdpcluster_io_fallback 0, /readyz "ready"; afxdp: AF_XDP, the same;
//   - auto without CAP_BPF, or without CAP_PERFMON: it still starts, on raw
//     sockets, and says so everywhere: ctl status's io_fallback names the
//     missing capability, xdpcluster_io_fallback 1, /readyz still ready with
//     a note, the WARN in the log;
//   - dataplane.io afxdp without CAP_BPF: refuses to start (exit 1) naming
//     the cause, with nothing left on the interfaces.
func TestIOFallbackVisible(t *testing.T) {
	nstest.Require(t)
	for _, tool := range []string{"setpriv", "go", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not found", tool)
		}
	}
	_, bin := buildForNobody(t)
	cl := nstest.Cluster(t, "xc-iofb", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1})
	ns := cl.Nodes[0]
	caps := unitCaps(t)
	without := func(c string) []string {
		if !slices.Contains(caps, c) {
			t.Fatalf("the unit does not grant %s: %v", c, caps)
		}
		return slices.DeleteFunc(slices.Clone(caps), func(x string) bool { return x == c })
	}

	type run struct {
		cmd  *exec.Cmd
		sock string
		logs *nstest.LogBuffer
		done chan struct{}
		err  error // once done
	}
	start := func(t *testing.T, caps []string, io string) *run {
		t.Helper()
		sockDir := filepath.Join(t.TempDir(), "run")
		os.MkdirAll(sockDir, 0o777)
		os.Chmod(sockDir, 0o777)
		os.Chmod(filepath.Dir(sockDir), 0o755)
		os.Chmod(filepath.Dir(filepath.Dir(sockDir)), 0o755)
		sock := filepath.Join(sockDir, "control.sock")
		cfg := filepath.Join(filepath.Dir(sockDir), "config.yaml")
		os.WriteFile(cfg, []byte(nodeConfig(cl, sock, "  local_node: 1")+"dataplane:\n  io: "+io+"\n"), 0o644)
		r := &run{sock: sock, logs: &nstest.LogBuffer{}, done: make(chan struct{})}
		r.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.Name}, asNobody(caps, bin, "run", "--config", cfg)...)...)
		r.cmd.Stderr = r.logs
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { r.err = r.cmd.Wait(); close(r.done) }()
		t.Cleanup(func() {
			r.cmd.Process.Kill()
			select {
			case <-r.done:
			case <-time.After(10 * time.Second):
			}
		})
		return r
	}
	// serving waits for the node to answer ready, and returns its status,
	// its xdpcluster_io_fallback and its /readyz body.
	serving := func(t *testing.T, r *run) (st daemon.Status, metric, readyz string) {
		t.Helper()
		c := daemon.NewClient(r.sock)
		deadline := time.Now().Add(15 * time.Second)
		for {
			var err error
			if st, err = c.Do("GET", "/health"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the daemon is not ready: %v\n%s", err, r.logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		var m []string
		for m == nil { // the control socket answers before metrics are served
			if m = regexp.MustCompile(`url=http://([^ ]+)/metrics`).FindStringSubmatch(r.logs.String()); m == nil && time.Now().After(deadline) {
				t.Fatalf("no metrics address in the log:\n%s", r.logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		curl := func(path string) string {
			out, err := exec.Command("ip", "netns", "exec", ns.Name, "curl", "-sS", "http://"+m[1]+path).CombinedOutput()
			if err != nil {
				t.Fatalf("curl %s: %v %s", path, err, out)
			}
			return string(out)
		}
		for _, line := range strings.Split(curl("/metrics"), "\n") {
			if v, ok := strings.CutPrefix(line, "xdpcluster_io_fallback "); ok {
				metric = v
			}
		}
		return st, metric, strings.TrimSpace(curl("/readyz"))
	}
	stop := func(t *testing.T, r *run) {
		t.Helper()
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
			if r.err != nil {
				t.Errorf("stop: %v\n%s", r.err, r.logs.String())
			}
		case <-time.After(15 * time.Second):
			t.Errorf("the daemon did not stop:\n%s", r.logs.String())
		}
	}

	// With every capability, auto on this veth chooses raw sockets with the
	// fast path in tc (not a fallback); afxdp gets AF_XDP.
	for _, c := range []struct{ io, want string }{{"auto", "fast path in tc"}, {"afxdp", "afxdp"}} {
		t.Run(c.io, func(t *testing.T) {
			r := start(t, caps, c.io)
			st, metric, readyz := serving(t, r)
			if st.IOFallback != "" || !strings.Contains(st.Interfaces["front"], c.want) {
				t.Errorf("with %v: interfaces %v, io_fallback %q; want %q, no fallback\n%s", caps, st.Interfaces, st.IOFallback, c.want, r.logs.String())
			}
			if metric != "0" || readyz != "ready" {
				t.Errorf("xdpcluster_io_fallback %q, /readyz %q; want 0 and ready", metric, readyz)
			}
			stop(t, r)
		})
	}
	for _, missing := range []string{"CAP_BPF", "CAP_PERFMON"} {
		t.Run("auto without "+missing, func(t *testing.T) {
			r := start(t, without(missing), "auto")
			st, metric, readyz := serving(t, r)
			if !strings.HasPrefix(st.Interfaces["front"], "afpacket") {
				t.Errorf("interfaces %v, want afpacket", st.Interfaces)
			}
			if !strings.Contains(st.IOFallback, missing) {
				t.Errorf("ctl status io_fallback %q does not name %s", st.IOFallback, missing)
			}
			if metric != "1" {
				t.Errorf("xdpcluster_io_fallback %q, want 1", metric)
			}
			if !strings.HasPrefix(readyz, "ready (note: AF_XDP unavailable, on raw sockets") || !strings.Contains(readyz, missing) {
				t.Errorf("/readyz %q, want ready with a note naming %s", readyz, missing)
			}
			if !strings.Contains(r.logs.String(), "level=WARN msg=\"AF_XDP cannot be set up; falling back") {
				t.Errorf("no WARN in the log:\n%s", r.logs.String())
			}
			stop(t, r)
		})
	}
	t.Run("afxdp without CAP_BPF", func(t *testing.T) {
		r := start(t, without("CAP_BPF"), "afxdp")
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Fatalf("dataplane.io afxdp without CAP_BPF started:\n%s", r.logs.String())
		}
		var ee *exec.ExitError
		if !errors.As(r.err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("exit %v, want 1", r.err)
		}
		logs := r.logs.String()
		for _, want := range []string{"level=ERROR msg=\"cannot start\"", "dataplane.io afxdp: AF_XDP cannot be set up", "load XDP program", "the process lacks CAP_BPF (AF_XDP needs"} {
			if !strings.Contains(logs, want) {
				t.Errorf("the refusal does not say %q:\n%s", want, logs)
			}
		}
		if strings.Contains(logs, "falling back") || strings.Contains(logs, "node started") {
			t.Errorf("dataplane.io afxdp fell back or started:\n%s", logs)
		}
		if out := nstest.Run(t, ns, "ip", "link", "show", "front"); strings.Contains(out, "xdp") {
			t.Errorf("an XDP program was left on front:\n%s", out)
		}
	})
}
