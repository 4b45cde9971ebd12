package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/internal/netns"
)

func TestCheck(t *testing.T) {
	out, errOut, code := runCmd("", "check", "--config", "../../deploy/examples/three-node-dual-stack.yaml")
	if code != 0 || !strings.Contains(out, "is valid") || !strings.Contains(out, "--cluster-local-node 1") || !strings.Contains(out, "frames: 8192") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("cluster:\n  total_nodes: 40\n  local_node: 1\n  hash_seed: 1\n  colour: blue\n"), 0o644)
	_, errOut, code = runCmd("", "check", "--config", bad)
	if code != exitFail || !strings.Contains(errOut, `line 5, column 3: unknown key "colour" in cluster`) {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	_, errOut, code = runCmd("", "run", "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	if code != exitFail || !strings.Contains(errOut, "no such file") {
		t.Fatalf("run with a missing file: %d %s", code, errOut)
	}
}

func TestCtlUsage(t *testing.T) {
	if _, errOut, code := runCmd("", "ctl", "frobnicate"); code != exitUsage || !strings.Contains(errOut, "want status") {
		t.Errorf("%d %s", code, errOut)
	}
	if _, errOut, code := runCmd("", "ctl", "--socket", "/nonexistent.sock", "status"); code != exitFail || !strings.Contains(errOut, "is xdpcluster running") {
		t.Errorf("%d %s", code, errOut)
	}
}

// TestDemo runs the README's main command for a few seconds: a live
// cluster that forwards every packet exactly once, then cleans up.
func TestDemo(t *testing.T) {
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v; run the tests as root", err)
	}
	out, errOut, code := runCmd("", "demo", "--duration", "4s", "--clients", "20", "--metrics-port", "19477")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"node 1 (netns", "metrics http://127.0.0.1:19477/metrics", "final (traffic stopped)", "every packet was forwarded exactly once"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// Other packages' tests may run at the same time: look for ours only.
	after, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(after), "xcdemo-") {
		t.Errorf("demo namespaces left behind:\n%s", after)
	}
}
