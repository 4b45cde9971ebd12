// Package packaging_test proves the install and packaging recipes: the
// shipped example configuration, `make install`/`make uninstall` into a
// DESTDIR, and `make package`'s .deb installed into a throwaway root with
// dpkg, its binary run from there.
package packaging_test

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/config"
)

// repoRoot is the repository's top directory (the tests run in packaging/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Makefile")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: %s not found (apt-get install %s)", tool, tool)
		}
	}
}

// run runs a command and returns its combined output; it fails the test
// with that output when the command fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestShippedConfig: the configuration the package installs as
// /etc/xdpcluster/config.yaml is valid as shipped (config.Load is what
// `xdpcluster check` and `run` use), and its commented-out block of
// defaults, uncommented, is valid too and changes nothing: the comments
// tell the truth.
func TestShippedConfig(t *testing.T) {
	shipped, err := config.Load("config.yaml")
	if err != nil {
		t.Fatalf("packaging/config.yaml as shipped: %v", err)
	}
	text := readFile(t, "config.yaml")
	const marker = "# The defaults, for reference (uncomment to change):\n"
	i := strings.Index(text, marker)
	if i < 0 {
		t.Fatalf("packaging/config.yaml has no %q block", strings.TrimSpace(marker))
	}
	var uncommented strings.Builder
	uncommented.WriteString(text[:i])
	keys := 0
	for _, line := range strings.Split(text[i+len(marker):], "\n") {
		line = strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ")
		if strings.Contains(line, ":") {
			keys++
		}
		uncommented.WriteString(line + "\n")
	}
	if keys < 5 {
		t.Fatalf("the defaults block has %d keys, want at least 5:\n%s", keys, text[i:])
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(uncommented.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	withDefaults, err := config.Load(path)
	if err != nil {
		t.Fatalf("packaging/config.yaml with its defaults uncommented: %v\n%s", err, uncommented.String())
	}
	if a, b := shipped.YAML(), withDefaults.YAML(); a != b {
		t.Errorf("uncommenting the defaults changes the effective configuration:\nshipped:\n%s\nuncommented:\n%s", a, b)
	}
}

// buildCLI builds the command (as the package does: static, trimmed) and
// its man pages and completions into dir, as `make man completion` would.
func buildCLI(t *testing.T, root, dir string) (bin, man, compl string) {
	t.Helper()
	bin = filepath.Join(dir, "xdpcluster")
	run(t, root, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", bin, "./cmd/xdpcluster")
	man = filepath.Join(dir, "man")
	run(t, root, nil, bin, "gen-man", man)
	compl = filepath.Join(dir, "completion")
	if err := os.MkdirAll(compl, 0o755); err != nil {
		t.Fatal(err)
	}
	for shell, file := range map[string]string{"bash": "xdpcluster.bash", "zsh": "_xdpcluster", "fish": "xdpcluster.fish"} {
		out := run(t, root, nil, bin, "completion", shell)
		if err := os.WriteFile(filepath.Join(compl, file), []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return bin, man, compl
}

// TestInstallUninstall: `make install` with a PREFIX into a DESTDIR puts
// every file where it belongs, rewrites only the unit's paths, installs
// the example configuration, and on a second run keeps the operator's
// edited one; `make uninstall` removes everything but that configuration.
func TestInstallUninstall(t *testing.T) {
	need(t, "make", "go", "install", "gzip")
	root := repoRoot(t)
	bin, man, compl := buildCLI(t, root, t.TempDir())
	dest := t.TempDir()
	const prefix = "/opt/xdpc"
	vars := []string{"DESTDIR=" + dest, "PREFIX=" + prefix, "INSTALL_BIN=" + bin, "MAN_SRC=" + man, "COMPL_SRC=" + compl}
	install := func() string {
		return run(t, root, nil, "make", append([]string{"--no-print-directory", "install"}, vars...)...)
	}
	install()

	p := func(rel string) string { return filepath.Join(dest, rel) }
	for _, f := range []string{
		prefix + "/bin/xdpcluster",
		prefix + "/lib/systemd/system/xdpcluster.service",
		"/etc/xdpcluster/config.yaml",
		prefix + "/share/doc/xdpcluster/README.md",
		prefix + "/share/doc/xdpcluster/LICENSE",
		prefix + "/share/doc/xdpcluster/examples/config.yaml",
		prefix + "/share/doc/xdpcluster/examples/two-node-ipv4.yaml",
		prefix + "/share/doc/xdpcluster/examples/keepalived/keepalived.conf",
		prefix + "/share/doc/xdpcluster/examples/keepalived/keepalived-notify.sh",
		prefix + "/share/xdpcluster/grafana/xdpcluster.json",
		prefix + "/share/xdpcluster/prometheus/prometheus.yml",
		prefix + "/share/man/man1/xdpcluster.1.gz",
		prefix + "/share/man/man1/xdpcluster-check.1.gz",
		prefix + "/share/bash-completion/completions/xdpcluster",
		prefix + "/share/zsh/site-functions/_xdpcluster",
		prefix + "/share/fish/vendor_completions.d/xdpcluster.fish",
	} {
		if _, err := os.Stat(p(f)); err != nil {
			t.Errorf("make install PREFIX=%s: %v", prefix, err)
		}
	}
	if fi, err := os.Stat(p(prefix + "/share/doc/xdpcluster/examples/keepalived/keepalived-notify.sh")); err == nil && fi.Mode()&0o111 == 0 {
		t.Errorf("keepalived-notify.sh installed without its execute bits: %v", fi.Mode())
	}
	out := run(t, root, nil, p(prefix+"/bin/xdpcluster"), "check", "--config", p("/etc/xdpcluster/config.yaml"))
	if !strings.Contains(out, "is valid") {
		t.Errorf("installed xdpcluster check on the installed config:\n%s", out)
	}
	if got, want := readFile(t, p("/etc/xdpcluster/config.yaml")), readFile(t, "config.yaml"); got != want {
		t.Errorf("installed config.yaml differs from packaging/config.yaml")
	}
	checkUnit(t, readFile(t, filepath.Join(root, "deploy/systemd/xdpcluster.service")),
		readFile(t, p(prefix+"/lib/systemd/system/xdpcluster.service")), prefix+"/bin/xdpcluster")

	// An edited configuration survives a second install.
	edited := readFile(t, p("/etc/xdpcluster/config.yaml")) + "# edited by the operator\n"
	if err := os.WriteFile(p("/etc/xdpcluster/config.yaml"), []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := install(); !strings.Contains(out, "install: keeping "+p("/etc/xdpcluster/config.yaml")) {
		t.Errorf("second make install does not say it keeps the configuration:\n%s", out)
	}
	if got := readFile(t, p("/etc/xdpcluster/config.yaml")); got != edited {
		t.Errorf("make install overwrote the edited configuration:\n%s", got)
	}

	// Uninstall: nothing of ours is left but the configuration.
	run(t, root, nil, "make", append([]string{"--no-print-directory", "uninstall"}, vars...)...)
	var left []string
	err := filepath.WalkDir(dest, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(path, dest)
		if !d.IsDir() || strings.Contains(rel, "xdpcluster") {
			left = append(left, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/etc/xdpcluster", "/etc/xdpcluster/config.yaml"}; !slices.Equal(left, want) {
		t.Errorf("after make uninstall, left: %q, want only %q", left, want)
	}
	if got := readFile(t, p("/etc/xdpcluster/config.yaml")); got != edited {
		t.Errorf("make uninstall changed the configuration")
	}
}

// checkUnit: the installed unit is the shipped one with only the binary's
// path rewritten (and the docs' path, for another prefix): ExecStart and
// ExecReload run installedBin, and nothing else differs.
func checkUnit(t *testing.T, shipped, installed, installedBin string) {
	t.Helper()
	sl, il := strings.Split(shipped, "\n"), strings.Split(installed, "\n")
	if len(sl) != len(il) {
		t.Fatalf("installed unit has %d lines, the shipped one %d", len(il), len(sl))
	}
	prefix := strings.TrimSuffix(installedBin, "/bin/xdpcluster")
	for i := range sl {
		want := strings.ReplaceAll(sl[i], "/usr/local/bin/xdpcluster", installedBin)
		want = strings.ReplaceAll(want, "/usr/share/doc/xdpcluster", prefix+"/share/doc/xdpcluster")
		if il[i] != want {
			t.Errorf("installed unit line %d: %q, want %q", i+1, il[i], want)
		}
	}
	for _, key := range []string{"ExecStart=", "ExecReload="} {
		found := false
		for _, l := range il {
			if strings.HasPrefix(l, key) {
				found = true
				if !strings.HasPrefix(l, key+installedBin+" ") {
					t.Errorf("installed unit: %q does not run %s", l, installedBin)
				}
			}
		}
		if !found {
			t.Errorf("installed unit has no %s line", key)
		}
	}
	if strings.Contains(installed, "/usr/local/") && !strings.HasPrefix(installedBin, "/usr/local/") {
		t.Errorf("installed unit for %s still names /usr/local/:\n%s", installedBin, installed)
	}
}

// TestPackage (root, dpkg): `make package` builds the .deb (nfpm); its
// control data and file list are checked with dpkg-deb, then dpkg installs
// it into a throwaway root (its maintainer scripts run there, told by
// DPKG_ROOT to leave the running system alone), and the installed
// `xdpcluster version` and `xdpcluster check` on the installed
// /etc/xdpcluster/config.yaml must succeed. An edited conffile survives a
// reinstall and a remove; purge deletes it.
//
// Time, on 2 shared cores: about 2 min with cold Go caches (nfpm fetched
// and built by `go run`, about 60 s; the static -trimpath build, about
// 60 s), about 8 s once both are cached.
func TestPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root (dpkg --root installs files owned by root); CI runs it as root")
	}
	need(t, "dpkg", "dpkg-deb", "make", "go", "git", "bash")
	root := repoRoot(t)
	start := time.Now()
	deb := builtDeb(t) // make package, once per test binary
	t.Logf("make package: %v", time.Since(start).Round(time.Second))
	version := strings.TrimSpace(run(t, root, nil, "packaging/deb-version.sh"))
	goarch := strings.TrimSpace(run(t, root, nil, "go", "env", "GOARCH"))
	if want := "xdpcluster_" + version + "_" + goarch + ".deb"; filepath.Base(deb) != want {
		t.Errorf("package file %s, want %s", filepath.Base(deb), want)
	}

	// Control data.
	for field, want := range map[string]string{
		"Package": "xdpcluster", "Version": version, "Architecture": goarch, "Section": "net",
	} {
		if got := strings.TrimSpace(run(t, root, nil, "dpkg-deb", "--field", deb, field)); got != want {
			t.Errorf("control field %s: %q, want %q", field, got, want)
		}
	}
	for _, field := range []string{"Maintainer", "Description"} {
		if got := strings.TrimSpace(run(t, root, nil, "dpkg-deb", "--field", deb, field)); got == "" {
			t.Errorf("control field %s is empty", field)
		}
	}
	if got := strings.TrimSpace(run(t, root, nil, "dpkg-deb", "--field", deb, "Depends")); got != "" {
		t.Errorf("Depends: %q, want none (a static binary)", got)
	}
	if got := run(t, root, nil, "dpkg-deb", "--info", deb, "conffiles"); got != "/etc/xdpcluster/config.yaml\n" {
		t.Errorf("conffiles: %q, want only /etc/xdpcluster/config.yaml", got)
	}

	// The file list.
	var files []string
	for _, l := range strings.Split(run(t, root, nil, "dpkg-deb", "--contents", deb), "\n") {
		if f := strings.Fields(l); len(f) >= 6 && !strings.HasSuffix(f[5], "/") {
			files = append(files, strings.TrimPrefix(f[5], "."))
		}
	}
	for _, want := range []string{
		"/usr/bin/xdpcluster",
		"/usr/lib/systemd/system/xdpcluster.service",
		"/etc/xdpcluster/config.yaml",
		"/usr/share/man/man1/xdpcluster.1.gz",
		"/usr/share/man/man1/xdpcluster-run.1.gz",
		"/usr/share/man/man1/xdpcluster-check.1.gz",
		"/usr/share/bash-completion/completions/xdpcluster",
		"/usr/share/doc/xdpcluster/copyright",
		"/usr/share/doc/xdpcluster/README.md",
		"/usr/share/doc/xdpcluster/examples/two-node-ipv4.yaml",
		"/usr/share/doc/xdpcluster/examples/keepalived/keepalived.conf",
		"/usr/share/xdpcluster/grafana/xdpcluster.json",
		"/usr/share/xdpcluster/prometheus/prometheus.yml",
	} {
		if !slices.Contains(files, want) {
			t.Errorf("the package has no %s; it has:\n%s", want, strings.Join(files, "\n"))
		}
	}
	for _, f := range files {
		if strings.HasPrefix(f, "/usr/local/") {
			t.Errorf("the package ships %s: nothing belongs under /usr/local", f)
		}
	}

	// Install into a throwaway root: dpkg's database there, scripts run
	// outside a chroot (the root has no shell) with DPKG_ROOT set.
	droot := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(droot, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(droot, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg := func(args ...string) string {
		return run(t, root, nil, "dpkg", append([]string{"--root=" + droot, "--force-not-root", "--force-script-chrootless", "--log=/dev/null"}, args...)...)
	}
	dpkg("--install", deb)
	p := func(rel string) string { return filepath.Join(droot, rel) }
	if got := run(t, root, nil, "dpkg", "--root="+droot, "--status", "xdpcluster"); !strings.Contains(got, "Status: install ok installed") ||
		!strings.Contains(got, "Conffiles:\n /etc/xdpcluster/config.yaml ") {
		t.Errorf("dpkg --status in the root:\n%s", got)
	}

	// The installed binary: static, runs, accepts the shipped config.
	bin := p("usr/bin/xdpcluster")
	checkStatic(t, bin)
	out := run(t, root, nil, bin, "version")
	if !strings.HasPrefix(out, "xdpcluster ") || strings.HasPrefix(out, "xdpcluster dev") {
		t.Errorf("installed xdpcluster version: %q, want the git version", out)
	}
	out = run(t, root, nil, bin, "check", "--config", p("etc/xdpcluster/config.yaml"))
	if !strings.Contains(out, "is valid") || !strings.Contains(out, "--cluster-total-nodes 2") {
		t.Errorf("installed xdpcluster check --config %s:\n%s", p("etc/xdpcluster/config.yaml"), out)
	}

	// The unit, rewritten for /usr/bin.
	checkUnit(t, readFile(t, filepath.Join(root, "deploy/systemd/xdpcluster.service")),
		readFile(t, p("usr/lib/systemd/system/xdpcluster.service")), "/usr/bin/xdpcluster")

	// Man pages: gzip, roff, the main page names the commands.
	page := gunzip(t, p("usr/share/man/man1/xdpcluster.1.gz"))
	if !strings.Contains(page, ".TH ") || !strings.Contains(page, "xdpcluster-check(1)") {
		t.Errorf("xdpcluster.1.gz is not the main man page (.TH, a reference to xdpcluster-check(1)):\n%s", page)
	}
	// The bash completion parses and defines the completion function.
	completion := p("usr/share/bash-completion/completions/xdpcluster")
	run(t, root, nil, "bash", "-n", completion)
	if out := run(t, root, nil, "bash", "-c", "source "+completion+" && complete -p xdpcluster"); !strings.Contains(out, "xdpcluster") {
		t.Errorf("sourcing the bash completion registers nothing for xdpcluster: %q", out)
	}
	if got, want := readFile(t, p("usr/share/doc/xdpcluster/copyright")), readFile(t, filepath.Join(root, "LICENSE")); got != want {
		t.Errorf("/usr/share/doc/xdpcluster/copyright is not the LICENSE")
	}

	// The conffile: an edit survives a reinstall and a remove, purge deletes it.
	conf := p("etc/xdpcluster/config.yaml")
	edited := readFile(t, conf) + "# edited by the operator\n"
	if err := os.WriteFile(conf, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg("--install", deb)
	if got := readFile(t, conf); got != edited {
		t.Errorf("reinstalling the package replaced the edited conffile")
	}
	dpkg("--remove", "xdpcluster")
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Errorf("after dpkg --remove, %s: %v, want it gone", bin, err)
	}
	if got := readFile(t, conf); got != edited {
		t.Errorf("dpkg --remove changed the conffile")
	}
	dpkg("--purge", "xdpcluster")
	if _, err := os.Stat(conf); !os.IsNotExist(err) {
		t.Errorf("after dpkg --purge, %s: %v, want it gone", conf, err)
	}
}

// checkStatic: an ELF for this machine with no interpreter and no shared
// libraries (CGO_ENABLED=0).
func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not a static binary", path)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("%s needs shared libraries %q (%v): not a static binary", path, libs, err)
	}
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[runtime.GOARCH]
	if want != elf.EM_NONE && f.Machine != want {
		t.Errorf("%s is for %v, want %v", path, f.Machine, want)
	}
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	text, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(text)
}
