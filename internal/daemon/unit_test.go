package daemon

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/config"
)

// unitKeys reads the systemd unit's key=value lines (comments skipped).
func unitKeys(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../../deploy/systemd/xdpcluster.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit line %q is not key=value", line)
		}
		if _, dup := keys[k]; dup {
			t.Fatalf("unit sets %s twice", k)
		}
		keys[k] = v
	}
	return keys
}

// TestSystemdUnit: the shipped unit keeps the runtime directory (the
// default state_dir: conntrack snapshot, back-end change record) across
// stops, reloads with `xdpcluster ctl reload` on the default control
// socket (not SIGHUP, which kills a process still initialising), uses one
// binary path for both, and passes `systemd-analyze verify` without a
// warning.
func TestSystemdUnit(t *testing.T) {
	keys := unitKeys(t)
	def := config.Defaults()
	rd := "/run/" + keys["RuntimeDirectory"]
	if def.StateDir != rd || filepath.Dir(def.Control.Socket) != rd {
		t.Errorf("RuntimeDirectory=%s is /run/... %s; want it to hold the default state_dir %s and control.socket %s", keys["RuntimeDirectory"], rd, def.StateDir, def.Control.Socket)
	}
	if v := keys["RuntimeDirectoryPreserve"]; v != "yes" {
		t.Errorf("RuntimeDirectoryPreserve=%q, want yes: systemd would delete state_dir %s at every stop", v, def.StateDir)
	}
	start := strings.Fields(keys["ExecStart"])
	reload := strings.Fields(keys["ExecReload"])
	want := []string{"", "ctl", "--socket", def.Control.Socket, "reload"}
	if len(start) > 0 {
		want[0] = start[0]
	}
	if strings.Join(reload, " ") != strings.Join(want, " ") {
		t.Errorf("ExecReload=%s, want %s", keys["ExecReload"], strings.Join(want, " "))
	}
	if len(start) < 2 || start[1] != "run" {
		t.Fatalf("ExecStart=%s, want BINARY run ...", keys["ExecStart"])
	}

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("skipping systemd-analyze verify: systemd-analyze not installed")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("skipping systemd-analyze verify: the go command is needed to build the binary the unit runs")
	}
	// verify checks that the binary exists: point the unit at a fresh build.
	dir := t.TempDir()
	bin := filepath.Join(dir, "xdpcluster")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/xdpcluster").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	b, err := os.ReadFile("../../deploy/systemd/xdpcluster.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "xdpcluster.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(b), start[0], bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 { // warnings exit 0
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
