package daemon_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// unitCaps reads AmbientCapabilities from the systemd unit.
func unitCaps(t *testing.T) []string {
	f, err := os.Open("../../deploy/systemd/xdpcluster.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "AmbientCapabilities="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatal("no AmbientCapabilities in the unit")
	return nil
}

// buildForNobody builds the daemon into a temp dir that user nobody can
// reach (for its configuration too) and returns the dir and the binary.
func buildForNobody(t *testing.T) (dir, bin string) {
	t.Helper()
	dir = t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // nobody must reach the config
	bin = filepath.Join(dir, "xdpcluster")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/xdpcluster").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return dir, bin
}

// asNobody is the command line that runs argv as user nobody with
// exactly the capabilities caps (CAP_ names) inheritable, ambient and in
// the bounding set, as systemd does for the unit.
func asNobody(caps []string, argv ...string) []string {
	var lc []string
	for _, c := range caps {
		lc = append(lc, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	set := strings.Join(lc, ",")
	return append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all," + set, "--ambient-caps=-all," + set, "--bounding-set=-all," + set, "--"}, argv...)
}

// TestLeastCapabilities runs `xdpcluster run` as user nobody with exactly
// the capabilities of deploy/systemd/xdpcluster.service (as systemd would:
// ambient capabilities, LimitMEMLOCK unused thanks to CAP_IPC_LOCK): it
// must come up and answer on its control socket. Without CAP_BPF, the
// default backend "auto" falls back to raw sockets with a warning saying
// why.
func TestLeastCapabilities(t *testing.T) {
	nstest.Require(t)
	for _, tool := range []string{"setpriv", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not found", tool)
		}
	}
	dir, bin := buildForNobody(t)
	cl := nstest.Cluster(t, "xc-caps", netns.ClusterOptions{Nodes: 2, Clients4: 1, Clients6: 1})
	caps := unitCaps(t)
	run := func(name string, caps []string) (*exec.Cmd, string, *strings.Builder) {
		sockDir := filepath.Join(dir, name)
		os.MkdirAll(sockDir, 0o777)
		os.Chmod(sockDir, 0o777)
		sock := filepath.Join(sockDir, "control.sock")
		cfg := filepath.Join(dir, name+".yaml")
		os.WriteFile(cfg, []byte(strings.Replace(nodeConfig(cl, sock, "  local_node: 1"), `"127.0.0.1:0"`, `""`, 1)), 0o644)
		cmd := exec.Command("ip", append([]string{"netns", "exec", cl.Nodes[0].Name}, asNobody(caps, bin, "run", "--config", cfg)...)...)
		var logs strings.Builder
		cmd.Stderr = &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, sock, &logs
	}

	cmd, sock, logs := run("least", caps)
	c := daemon.NewClient(sock)
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := c.Do("GET", "/status")
		if err == nil && st.NodeMask == "0x1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with %v the daemon did not come up: %v\n%s", caps, err, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("clean stop: %v\n%s", err, logs.String())
	}

	var noBPF []string
	for _, c := range caps {
		if c != "CAP_BPF" {
			noBPF = append(noBPF, c)
		}
	}
	// Without CAP_BPF, backend auto falls back to raw sockets and says why.
	cmd, sock, logs = run("nobpf", noBPF)
	c = daemon.NewClient(sock)
	deadline = time.Now().Add(15 * time.Second)
	for {
		st, err := c.Do("GET", "/status")
		if err == nil && strings.HasPrefix(st.Interfaces["front"], "afpacket") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("without CAP_BPF: %v %v\n%s", st, err, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "falling back to the raw-socket") || !strings.Contains(logs.String(), "CAP_BPF") {
		t.Errorf("the fallback warning does not say why:\n%s", logs.String())
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
}

// TestKeepalivedNotify: the notify script turns keepalived's state changes
// into `xdpcluster ctl takeover N` / `release N` for the instance's node.
func TestKeepalivedNotify(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	os.WriteFile(filepath.Join(dir, "xdpcluster"), []byte("#!/bin/sh\necho \"$@\" >> "+log+"\n"), 0o755)
	for _, tc := range []struct{ state, want string }{{"MASTER", "ctl takeover 2"}, {"BACKUP", "ctl release 2"}, {"FAULT", "ctl release 2"}} {
		os.Remove(log)
		cmd := exec.Command("sh", "../../deploy/keepalived/keepalived-notify.sh", "INSTANCE", "share_of_node2", tc.state)
		cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", tc.state, err, out)
		}
		got, _ := os.ReadFile(log)
		if strings.TrimSpace(string(got)) != tc.want {
			t.Errorf("%s: called %q, want %q", tc.state, got, tc.want)
		}
	}
}
