package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// commandPaths lists every command of the tree a user can run (not the
// hidden ones, not help), as the words after xdpcluster: "owner", "ctl
// status", ...
func commandPaths(t *testing.T) []string {
	t.Helper()
	root := newRoot(env{strings.NewReader(""), &strings.Builder{}, &strings.Builder{}})
	root.InitDefaultCompletionCmd("completion")
	var out []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if !sub.IsAvailableCommand() {
				continue
			}
			out = append(out, strings.TrimPrefix(sub.CommandPath(), "xdpcluster "))
			walk(sub)
		}
	}
	walk(root)
	for _, want := range []string{"run", "check", "ctl", "ctl status", "ctl health", "ctl takeover", "ctl release", "ctl set-mask",
		"ctl reload", "demo", "owner", "simulate", "version", "completion", "completion bash"} {
		if !slices.Contains(out, want) {
			t.Fatalf("the command tree lacks %q: %q", want, out)
		}
	}
	return out
}

// TestOptionsAnywhere: options are GNU-style: before or after the
// arguments, --name value or --name=value. Go's flag package stopped at
// the first argument, so `owner ... 10.0.0.1 --json` failed.
func TestOptionsAnywhere(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte(checkBase), 0o644); err != nil {
		t.Fatal(err)
	}
	pcap := writeCapture(t, 4)
	tests := []struct {
		name string
		args []string
		want string // in standard output
	}{
		{"owner, options after the address", []string{"owner", "--cluster-total-nodes", "2", "--cluster-hash-seed", "1", "10.0.0.1", "--json"},
			`{"address":"10.0.0.1","node":`},
		{"owner, options around the addresses", []string{"owner", "10.0.0.1", "--cluster-total-nodes=2", "2001:db8::1", "--cluster-hash-seed", "0x1"},
			"10.0.0.1 "},
		{"owner, -- ends the options", []string{"owner", "--cluster-total-nodes", "2", "--cluster-hash-seed", "1", "--", "10.0.0.1"},
			"10.0.0.1 "},
		{"check --config=FILE", []string{"check", "--config=" + cfg}, "is valid"},
		{"simulate, options in any order", []string{"simulate", "--no-progress", "--cluster-hash-seed", "1", "--pcap", pcap, "--cluster-total-nodes", "2"},
			"capture: " + pcap},
		{"version", []string{"version"}, "xdpcluster "},
		{"--version", []string{"--version"}, "xdpcluster "},
	}
	for _, tc := range tests {
		out, errOut, code := runCmd("", tc.args...)
		if code != exitOK || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %q: exit %d, stdout %q, stderr %q; want exit 0 and %q", tc.name, tc.args, code, out, errOut, tc.want)
		}
	}
	// The same answers, whatever the place of the options.
	a, _, _ := runCmd("", "owner", "--cluster-total-nodes", "3", "--cluster-hash-seed", "7", "10.0.0.1", "10.0.0.2")
	b, _, _ := runCmd("", "owner", "10.0.0.1", "--cluster-hash-seed", "7", "10.0.0.2", "--cluster-total-nodes", "3")
	if a != b || a == "" {
		t.Errorf("options first: %q; options between the addresses: %q", a, b)
	}
}

// TestUsageErrors: a wrong command line is exit 2 with a one-line error
// naming the command and a pointer to its --help, never the whole help,
// and nothing on standard output. Arguments a command does not take are
// refused (check used to ignore them).
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string // the whole standard error
	}{
		{[]string{"owner", "--bogus"}, "xdpcluster owner: unknown flag: --bogus\nRun 'xdpcluster owner --help' for usage.\n"},
		{[]string{"check", "--bogus=1"}, "xdpcluster check: unknown flag: --bogus\nRun 'xdpcluster check --help' for usage.\n"},
		{[]string{"ctl", "status", "--frobnicate"}, "xdpcluster ctl status: unknown flag: --frobnicate\nRun 'xdpcluster ctl status --help' for usage.\n"},
		{[]string{"simulate", "-x"}, "xdpcluster simulate: unknown shorthand flag: 'x' in -x\nRun 'xdpcluster simulate --help' for usage.\n"},
		{[]string{"owner", "-json"}, "xdpcluster owner: unknown shorthand flag: 'j' in -json\nRun 'xdpcluster owner --help' for usage.\n"},
		{[]string{"check", "extra"}, "xdpcluster check: unexpected argument \"extra\" (check takes no arguments, only options)\nRun 'xdpcluster check --help' for usage.\n"},
		{[]string{"check", "--config", "x.yaml", "y.yaml"}, "xdpcluster check: unexpected argument \"y.yaml\" (check takes no arguments, only options)\nRun 'xdpcluster check --help' for usage.\n"},
		{[]string{"run", "now"}, "xdpcluster run: unexpected argument \"now\" (run takes no arguments, only options)\nRun 'xdpcluster run --help' for usage.\n"},
		{[]string{"version", "2"}, "xdpcluster version: unexpected argument \"2\" (version takes no arguments, only options)\nRun 'xdpcluster version --help' for usage.\n"},
		{[]string{"demo", "fast"}, "xdpcluster demo: unexpected argument \"fast\" (demo takes no arguments, only options)\nRun 'xdpcluster demo --help' for usage.\n"},
		{[]string{"simulate", "--pcap", "x", "y"}, "xdpcluster simulate: unexpected argument \"y\" (simulate takes no arguments, only options)\nRun 'xdpcluster simulate --help' for usage.\n"},
		{[]string{"ctl", "reload", "now"}, "xdpcluster ctl reload: unexpected argument \"now\" (reload takes no arguments, only options)\nRun 'xdpcluster ctl reload --help' for usage.\n"},
		{[]string{"check", "--config"}, "xdpcluster check: flag needs an argument: --config\nRun 'xdpcluster check --help' for usage.\n"},
		{[]string{"demo", "--io", "dpdk"}, "xdpcluster demo: --io \"dpdk\": must be auto, afxdp or afpacket\n"},
		{[]string{"demo", "--nodes", "three"}, "xdpcluster demo: invalid argument \"three\" for \"--nodes\" flag: strconv.ParseInt: parsing \"three\": invalid syntax\nRun 'xdpcluster demo --help' for usage.\n"},
		{[]string{"frobnicate"}, "xdpcluster: unknown command \"frobnicate\" for \"xdpcluster\"\nRun 'xdpcluster help' for the list of commands.\n"},
		{[]string{"ownr"}, "xdpcluster: unknown command \"ownr\" for \"xdpcluster\" (did you mean owner?)\nRun 'xdpcluster help' for the list of commands.\n"},
		{[]string{"help", "frobnicate"}, "xdpcluster help: unknown command \"frobnicate\"\nRun 'xdpcluster help' for the list of commands.\n"},
		{[]string{"help", "ctl", "frobnicate"}, "xdpcluster help: unknown command \"ctl frobnicate\"\nRun 'xdpcluster help' for the list of commands.\n"},
		{[]string{"--bogus"}, "xdpcluster: unknown flag: --bogus\nRun 'xdpcluster help' for the list of commands.\n"},
		{[]string{"ctl", "takeover"}, "xdpcluster ctl: takeover: want one argument, the node N (1..32); got 0\n"},
		{[]string{"ctl", "set-mask", "1", "2"}, "xdpcluster ctl: set-mask: want one argument, the mask M (0x1..0xffffffff); got 2\n"},
		{[]string{"ctl"}, "xdpcluster ctl: a command is needed: want status, health, takeover N, release N, set-mask M or reload\n"},
		{[]string{"gen-man"}, "xdpcluster gen-man: want one argument, the directory to write the man pages into; got 0\nRun 'xdpcluster gen-man --help' for usage.\n"},
	}
	for _, tc := range tests {
		out, errOut, code := runCmd("", tc.args...)
		if code != exitUsage || errOut != tc.want || out != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr\n%q\nwant exit 2, stderr\n%q", tc.args, code, out, errOut, tc.want)
		}
	}
	// No command: the list of commands, on standard error, exit 2.
	out, errOut, code := runCmd("")
	if code != exitUsage || out != "" || !strings.Contains(errOut, "Commands:") {
		t.Errorf("no command: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestHelpEverywhere: every command's --help (and `help CMD`) prints the
// same layout to standard output with exit 0: the synopsis, a
// description, the options by their double-dash names; no single-dash
// long names as Go's flag package printed them.
func TestHelpEverywhere(t *testing.T) {
	singleDash := regexp.MustCompile(`(?m)^\s+-[a-z][a-z-]+\b`)
	for _, path := range commandPaths(t) {
		args := append(strings.Fields(path), "--help")
		out, errOut, code := runCmd("", args...)
		if code != exitOK || errOut != "" {
			t.Errorf("%s --help: exit %d, stderr %q", path, code, errOut)
			continue
		}
		if !strings.HasPrefix(out, "Usage: xdpcluster "+path) {
			t.Errorf("%s --help does not start with its synopsis:\n%s", path, out)
		}
		if !strings.Contains(out, "\nOptions:\n") || !strings.Contains(out, "  -h, --help ") {
			t.Errorf("%s --help lacks the options:\n%s", path, out)
		}
		if m := singleDash.FindString(out); m != "" {
			t.Errorf("%s --help shows a single-dash long option %q:\n%s", path, m, out)
		}
		if strings.Contains(out, "[flags]") {
			t.Errorf("%s --help shows cobra's [flags]:\n%s", path, out)
		}
		if strings.Count(out, "\n\n\n") > 0 {
			t.Errorf("%s --help has stray blank lines:\n%s", path, out)
		}
		viaHelp, _, code := runCmd("", append([]string{"help"}, strings.Fields(path)...)...)
		if code != exitOK || viaHelp != out {
			t.Errorf("help %s differs from %s --help (exit %d):\n%s", path, path, code, viaHelp)
		}
	}
	out, _, _ := runCmd("", "owner", "--help")
	for _, want := range []string{"--cluster-total-nodes N", "--cluster-hash-seed S", "--json", "Examples:", `(default "xt_cluster")`} {
		if !strings.Contains(out, want) {
			t.Errorf("owner --help lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = runCmd("", "--help")
	for _, want := range []string{"Usage: xdpcluster COMMAND [options]", "  demo ", "  ctl ", "  completion ", "Run 'xdpcluster COMMAND --help'"} {
		if !strings.Contains(out, want) {
			t.Errorf("xdpcluster --help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "gen-man") {
		t.Errorf("xdpcluster --help lists the hidden gen-man:\n%s", out)
	}
}

// TestGenMan: gen-man writes a man page for every command, each one a
// valid man page (groff and man -l read it without a warning, where they
// are installed; otherwise its .TH header is checked).
func TestGenMan(t *testing.T) {
	dir := t.TempDir()
	if out, errOut, code := runCmd("", "gen-man", dir); code != exitOK {
		t.Fatalf("gen-man: exit %d\n%s%s", code, out, errOut)
	}
	paths := append([]string{""}, commandPaths(t)...)
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(paths) {
		t.Errorf("gen-man wrote %d files for %d commands", len(entries), len(paths))
	}
	groff, _ := exec.LookPath("groff")
	man, _ := exec.LookPath("man")
	for _, p := range paths {
		name := strings.ReplaceAll(strings.TrimSpace("xdpcluster "+p), " ", "-")
		file := filepath.Join(dir, name+".1")
		data, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("no man page for %q: %v", p, err)
			continue
		}
		th := regexp.MustCompile(`(?m)^\.TH "` + regexp.QuoteMeta(strings.ToUpper(name)) + `" "1" `)
		if !th.Match(data) || !strings.Contains(string(data), "\n.SH SYNOPSIS\n") || !strings.Contains(string(data), "\n.SH OPTIONS\n") {
			t.Errorf("%s: no .TH header, synopsis or options:\n%.400s", file, data)
		}
		if groff != "" {
			out, err := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z", file).CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Errorf("groff %s: %v\n%s", file, err, out)
			}
		}
		if man != "" && p == "owner" {
			cmd := exec.Command(man, "-l", file)
			cmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=100")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "--cluster-total-nodes") || !strings.Contains(string(out), "NAME") {
				t.Errorf("man -l %s: %v\n%s", file, err, out)
			}
		}
	}
	if groff == "" && man == "" {
		t.Log("neither groff nor man is installed: only the .TH headers were checked")
	}
}

// TestCompletion: the completion scripts are generated for bash, zsh and
// fish; bash sources its script and registers the completion function;
// the completion the scripts ask the binary for knows the commands and
// the options.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := runCmd("", "completion", sh)
		if code != exitOK || len(out) < 1000 || !strings.Contains(out, "xdpcluster") {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %q", sh, code, len(out), errOut)
		}
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	script, _, _ := runCmd("", "completion", "bash")
	file := filepath.Join(t.TempDir(), "xdpcluster.bash")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bash, "--norc", "-c", `set -e; source "$1"; complete -p xdpcluster`, "bash", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-F __start_xdpcluster xdpcluster") {
		t.Errorf("sourcing the bash completion: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", ""}, []string{"demo", "run", "check", "ctl", "owner", "simulate", "version"}},
		{[]string{"__complete", "ctl", ""}, []string{"status", "health", "takeover", "release", "set-mask", "reload"}},
		{[]string{"__complete", "owner", "--cluster-"}, []string{"--cluster-total-nodes", "--cluster-hash-seed"}},
		{[]string{"__complete", "ctl", "status", "--"}, []string{"--json", "--socket"}},
		{[]string{"__complete", "help", "ct"}, []string{"ctl"}},
		{[]string{"__complete", "help", "ctl", "re"}, []string{"release", "reload"}},
	} {
		out, _, code := runCmd("", tc.args...)
		lines := strings.Split(out, "\n")
		for _, w := range tc.want {
			if !slices.ContainsFunc(lines, func(l string) bool { return l == w || strings.HasPrefix(l, w+"\t") }) {
				t.Errorf("%q: exit %d, lacks %q:\n%s", tc.args, code, w, out)
			}
		}
		if slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "gen-man") }) {
			t.Errorf("%q completes the hidden gen-man:\n%s", tc.args, out)
		}
	}
}
