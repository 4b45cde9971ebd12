package packaging_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The .deb, built once per test binary by the first test that asks for it
// (builtDeb) and removed when the tests end (TestMain).
var debBuild struct {
	once      sync.Once
	dir, path string
	err       string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if debBuild.dir != "" {
		os.RemoveAll(debBuild.dir)
	}
	os.Exit(code)
}

// builtDeb runs `make package` once per test binary and returns the .deb.
func builtDeb(t *testing.T) string {
	t.Helper()
	debBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "xdpcluster-deb-")
		if err != nil {
			debBuild.err = err.Error()
			return
		}
		debBuild.dir = dir
		cmd := exec.Command("make", "--no-print-directory", "package", "PKG_DIR="+dir)
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			debBuild.err = "make package: " + err.Error() + "\n" + string(out)
			return
		}
		debs, _ := filepath.Glob(filepath.Join(dir, "xdpcluster_*.deb"))
		if len(debs) != 1 {
			debBuild.err = fmt.Sprintf("make package PKG_DIR=%s made %q, want one xdpcluster_*.deb", dir, debs)
			return
		}
		debBuild.path = debs[0]
	})
	if debBuild.err != "" {
		t.Fatal(debBuild.err)
	}
	return debBuild.path
}

// installDeb installs the .deb into a new throwaway root, as TestPackage
// does (dpkg --root, its scripts run chrootless with DPKG_ROOT set), and
// returns that root; the root and every directory above it are
// traversable by others, so that an unprivileged daemon can read what was
// installed there.
func installDeb(t *testing.T, debPath string) string {
	t.Helper()
	droot := t.TempDir()
	for d := droot; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(droot, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(droot, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, repoRoot(t), nil, "dpkg", "--root="+droot, "--force-not-root", "--force-script-chrootless", "--log=/dev/null", "--install", debPath)
	return droot
}
