package daemon

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/config"
)

// repeatable are the unit keys that may be given more than once (their
// values accumulate); unitKeys joins their lines with "\n".
var repeatable = map[string]bool{"SystemCallFilter": true}

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
		if _, dup := keys[k]; dup && !repeatable[k] {
			t.Fatalf("unit sets %s twice", k)
		}
		if keys[k] != "" {
			v = keys[k] + "\n" + v
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
// warning (--man=no: the man page man:xdpcluster(1) its Documentation=
// names is installed by the package, not here), and scores at most 2.5
// (lower is safer) in `systemd-analyze security --offline=true`.
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
	// Type=notify: the daemon says READY=1 when it serves (notify.go).
	for k, v := range map[string]string{"Type": "notify", "NotifyAccess": "main", "WatchdogSignal": "SIGTERM"} {
		if keys[k] != v {
			t.Errorf("%s=%q, want %s", k, keys[k], v)
		}
	}
	if keys["WatchdogSec"] == "" {
		t.Errorf("no WatchdogSec: the daemon feeds the watchdog from the dataplane's health")
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
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 { // warnings exit 0
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	score, report := unitSecurity(t, unit)
	t.Logf("systemd-analyze security --offline=true: exposure %.1f", score)
	if score > maxExposure {
		t.Errorf("systemd-analyze security: exposure %.1f, want at most %.1f:\n%s", score, maxExposure, report)
	}
}

// maxExposure is the highest `systemd-analyze security` exposure level the
// shipped unit may have (0 is fully locked down, 10 fully exposed).
const maxExposure = 2.5

// unitSecurity runs `systemd-analyze security --offline=true` on unit and
// returns its overall exposure level and the report. --threshold (exit
// status above it) is the tool's own verdict: it must agree with the
// parsed level.
func unitSecurity(t *testing.T, unit string) (float64, string) {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=true: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: no overall exposure level in\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	thr := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", fmt.Sprintf("--threshold=%d", int(maxExposure*10)), unit)
	if err := thr.Run(); (err == nil) != (score <= maxExposure) {
		t.Errorf("systemd-analyze security --threshold=%d: %v, but the exposure is %.1f", int(maxExposure*10), err, score)
	}
	return score, string(out)
}
