package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/internal/netns"
)

func TestCheck(t *testing.T) {
	out, errOut, code := runCmd("", "check", "--config", "../../deploy/examples/three-node-dual-stack.yaml")
	if code != 0 || !strings.Contains(out, "is valid") || !strings.Contains(out, "--cluster-local-node 1") || !strings.Contains(out, "frames: 16384") {
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
// cluster that forwards every packet exactly once, then cleans up. Other
// demos and tests may run on the host at the same time: it uses free
// metrics ports and checks only its own namespaces (the run's prefix,
// which the demo prints). By default (io auto, on the demo's veths) the
// nodes run raw sockets and the fast path in tc; with --io afxdp, AF_XDP
// and the fast path in XDP; the same holds for both.
func TestDemo(t *testing.T) {
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v; run the tests as root", err)
	}
	for _, tc := range []struct{ io, mode string }{{"auto", "fast path in tc"}, {"afxdp", "xdp "}} {
		t.Run("io="+tc.io, func(t *testing.T) { testDemo(t, tc.io, tc.mode) })
	}
}

// testDemo runs the demo with --io io; every node's interfaces must show
// mode.
func testDemo(t *testing.T, io, mode string) {
	const nodes = 3
	port := freePorts(t, nodes)
	out, errOut, code := runCmd("", "demo", "--duration", "4s", "--clients", "20", "--nodes", strconv.Itoa(nodes), "--metrics-port", strconv.Itoa(port), "--io", io)
	if n := strings.Count(out, mode); n < nodes {
		t.Errorf("demo output shows %q %d times, want once per node at least:\n%s", mode, n, out)
	}
	prefix := regexp.MustCompile(`(?m)^namespaces: (xcdemo-[0-9a-f]+)-\* \(removed on exit\)$`).FindStringSubmatch(out)
	if prefix == nil {
		t.Fatalf("demo output names no namespace prefix (exit %d):\n%s\n%s", code, out, errOut)
	}
	t.Cleanup(func() {
		// Whatever happened, our namespaces, and only ours, must be gone.
		after, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(after), prefix[1]+"-") {
			t.Errorf("demo namespaces %s-* left behind:\n%s", prefix[1], after)
		}
	})
	for i := 1; i <= nodes; i++ {
		want := fmt.Sprintf("node %d (netns %s-n%d-", i, prefix[1], i)
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if want := fmt.Sprintf("metrics http://127.0.0.1:%d/metrics", port); !strings.Contains(out, want) {
		t.Errorf("demo output lacks %q", want)
	}
	final := out[strings.Index(out, "final (traffic stopped)"):]
	m := regexp.MustCompile(`(?m)^cluster: each node saw (\d+) frames; (\d+) forwarded in all: duplicates (\d+), losses (\d+); client errors (\d+)$`).FindStringSubmatch(final)
	if m == nil {
		t.Fatalf("no final cluster line (exit %d):\n%s\n%s", code, out, errOut)
	}
	seen, _ := strconv.ParseUint(m[1], 10, 64)
	fwd, _ := strconv.ParseUint(m[2], 10, 64)
	if seen == 0 || fwd != seen || m[3] != "0" || m[4] != "0" || m[5] != "0" {
		t.Errorf("final counts: %s", m[0])
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if last := lines[len(lines)-1]; code != exitOK || last != "every packet was forwarded exactly once" {
		t.Errorf("exit %d, last line %q\n%s\n%s", code, last, out, errOut)
	}
}

// freePorts returns the first of n consecutive TCP ports on 127.0.0.1 that
// are free now.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		base := 20000 + rand.IntN(40000)
		var ls []net.Listener
		for i := 0; i < n; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if len(ls) == n {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports on 127.0.0.1", n)
	return 0
}

// TestDemoSummary checks the demo's arithmetic and its exit decision on
// crafted counts: the printed numbers must add up, and anything but
// exactly once fails the demo.
func TestDemoSummary(t *testing.T) {
	three := func(seen [3]uint64, fwd [3]uint64) []demoCount {
		return []demoCount{{seen[0], fwd[0]}, {seen[1], fwd[1]}, {seen[2], fwd[2]}}
	}
	tests := []struct {
		name    string
		counts  []demoCount
		errs    uint64
		exact   bool
		line    string
		verdict string
	}{
		{"clean", three([3]uint64{86422, 86422, 86422}, [3]uint64{19159, 48086, 19177}), 0, true,
			"cluster: each node saw 86422 frames; 86422 forwarded in all: duplicates 0, losses 0; client errors 0",
			"every packet was forwarded exactly once"},
		{"duplicates", three([3]uint64{1000, 1000, 1000}, [3]uint64{300, 404, 300}), 0, false,
			"cluster: each node saw 1000 frames; 1004 forwarded in all: duplicates 4, losses 0; client errors 0",
			"NOT exactly once: 4 duplicates"},
		{"losses", three([3]uint64{1000, 1000, 1000}, [3]uint64{300, 390, 300}), 0, false,
			"cluster: each node saw 1000 frames; 990 forwarded in all: duplicates 0, losses 10; client errors 0",
			"NOT exactly once: 10 losses"},
		// The numbers: no line may claim 4 duplicates of 82083
		// frames seen with 82160 forwarded.
		{"a node missed frames", three([3]uint64{82083, 82156, 82156}, [3]uint64{20000, 42160, 20000}), 0, false,
			"cluster: the nodes saw 82083 to 82156 frames; 82160 forwarded in all: duplicates at least 4, losses at least 0; client errors 0",
			"NOT exactly once: 4 duplicates, a node missed 73 frames"},
		{"client errors", three([3]uint64{10, 10, 10}, [3]uint64{3, 4, 3}), 2, false,
			"cluster: each node saw 10 frames; 10 forwarded in all: duplicates 0, losses 0; client errors 2",
			"NOT exactly once: 2 client errors"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := summarize(tc.counts, tc.errs)
			if got := s.line(true); got != tc.line {
				t.Errorf("line\n got %s\nwant %s", got, tc.line)
			}
			if got := s.verdict(); got != tc.verdict {
				t.Errorf("verdict %q, want %q", got, tc.verdict)
			}
			if s.exact() != tc.exact {
				t.Errorf("exact = %v, want %v", s.exact(), tc.exact)
			}
			// The arithmetic printed holds: forwarded = seen + duplicates - losses.
			if s.seenMin == s.seenMax && s.forwarded+s.losses != s.seenMin+s.duplicates {
				t.Errorf("%d forwarded != %d seen + %d duplicates - %d losses", s.forwarded, s.seenMin, s.duplicates, s.losses)
			}
		})
	}
	// While traffic flows the line claims no duplicates or losses.
	live := summarize(three([3]uint64{100, 97, 99}, [3]uint64{30, 40, 29}), 0).line(false)
	if want := "cluster (live, frames in flight): the nodes saw 97 to 100 frames so far; 99 forwarded in all; client errors 0"; live != want {
		t.Errorf("live line\n got %s\nwant %s", live, want)
	}
}
