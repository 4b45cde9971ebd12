package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/cluster"
)

func runCmd(stdin string, args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = dispatch(env{strings.NewReader(stdin), &o, &e}, args)
	return o.String(), e.String(), code
}

func TestOwnerArgs(t *testing.T) {
	out, errOut, code := runCmd("", "owner", "--cluster-total-nodes", "3", "--cluster-hash-seed", "0xdeadbeef",
		"10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1", "fe80::1%eth0")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	m := cluster.LocalNode(3, 1, 0xdeadbeef)
	var want strings.Builder
	for _, a := range []string{"10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1", "fe80::1%eth0"} {
		fmt.Fprintf(&want, "%s %d\n", a, m.Node(netip.MustParseAddr(a))+1)
	}
	if out != want.String() {
		t.Fatalf("got\n%s\nwant\n%s", out, want.String())
	}
}

// TestOwnerVectors checks owner against a few kernel-verified rows of
// testdata/jhash-vectors.tsv.
func TestOwnerVectors(t *testing.T) {
	tests := []struct{ seed, total, addr, node string }{
		{"0x00000000", "3", "fe80::1", "3"},
		{"0x00000000", "3", "42.194.130.46", "2"},
		{"0x00000000", "2", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2"},
	}
	for _, tc := range tests {
		out, _, code := runCmd("", "owner", "--cluster-total-nodes", tc.total, "--cluster-hash-seed", tc.seed, tc.addr)
		if want := tc.addr + " " + tc.node + "\n"; code != 0 || out != want {
			t.Errorf("owner %s: %q (exit %d), want %q", tc.addr, out, code, want)
		}
	}
}

func TestOwnerStdin(t *testing.T) {
	in := "10.0.0.1\n\n# a comment\n  192.168.1.1  \nnot-an-ip\n2001:db8::1\r\n010.0.0.1\n10.0.0.2"
	out, errOut, code := runCmd(in, "owner", "--cluster-total-nodes", "2", "--cluster-hash-seed", "0")
	if code != exitFail {
		t.Errorf("exit %d, want 1 for a bad line", code)
	}
	m := cluster.LocalNode(2, 1, 0)
	var want strings.Builder
	for _, a := range []string{"10.0.0.1", "192.168.1.1", "2001:db8::1", "10.0.0.2"} {
		fmt.Fprintf(&want, "%s %d\n", a, m.Node(netip.MustParseAddr(a))+1)
	}
	if out != want.String() {
		t.Errorf("stdout\n%s\nwant\n%s", out, want.String())
	}
	for _, w := range []string{`line 5: "not-an-ip": not an IPv4 or IPv6 address`, `line 7: "010.0.0.1"`} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr %q lacks %q", errOut, w)
		}
	}
}

func TestOwnerIptablesAndFull(t *testing.T) {
	rule := "-A PREROUTING -m cluster --cluster-local-nodemask 0x00000001 --cluster-total-nodes 7 --cluster-hash-seed 0x00000005 -j ACCEPT"
	out1, _, _ := runCmd("", "owner", "--iptables", rule, "2001:db8::1", "2001:db8::2")
	out2, _, _ := runCmd("", "owner", "--cluster-total-nodes", "7", "--cluster-hash-seed", "5", "2001:db8::1", "2001:db8::2")
	if out1 != out2 || out1 == "" {
		t.Errorf("--iptables gave %q, options gave %q", out1, out2)
	}
	full, _, _ := runCmd("", "owner", "--cluster-total-nodes", "7", "--cluster-hash-seed", "5", "--hash", "full", "2001:db8::1", "2001:db8::2")
	m := cluster.Match{TotalNodes: 7, NodeMask: 1, Seed: 5, Hash: cluster.HashFull}
	want := fmt.Sprintf("2001:db8::1 %d\n2001:db8::2 %d\n", m.Node(netip.MustParseAddr("2001:db8::1"))+1, m.Node(netip.MustParseAddr("2001:db8::2"))+1)
	if full != want {
		t.Errorf("--hash full: %q, want %q", full, want)
	}
}

func TestOwnerUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"owner", "--cluster-hash-seed", "1"}, "--cluster-total-nodes is required"},
		{[]string{"owner", "--cluster-total-nodes", "2"}, "--cluster-hash-seed is required"},
		{[]string{"owner", "--cluster-total-nodes", "33", "--cluster-hash-seed", "1"}, "--cluster-total-nodes 33: must be 1..32"},
		{[]string{"owner", "--cluster-total-nodes", "2", "--cluster-hash-seed", "0x1ffffffff"}, "--cluster-hash-seed 0x1ffffffff"},
		{[]string{"owner", "--cluster-total-nodes", "2", "--cluster-hash-seed", "1", "--hash", "bogus"}, `--hash bogus: must be "xt_cluster"`},
		{[]string{"owner", "--iptables", "--cluster-total-nodes 2"}, "--iptables: invalid cluster match"},
		{[]string{"owner", "--bogus"}, "xdpcluster owner: unknown flag: --bogus\nRun 'xdpcluster owner --help' for usage.\n"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	}
	for _, tc := range tests {
		_, errOut, code := runCmd("", tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

func TestHelp(t *testing.T) {
	out, _, code := runCmd("", "help")
	if code != 0 || !strings.Contains(out, "owner") || !strings.Contains(out, "version") {
		t.Errorf("help: exit %d, %q", code, out)
	}
	for _, name := range []string{"demo", "run", "check", "ctl", "owner", "simulate", "version"} {
		out, _, code := runCmd("", name, "--help")
		if code != 0 || !strings.Contains(out, "Usage: xdpcluster "+name) {
			t.Errorf("%s --help: exit %d, %q", name, code, out)
		}
	}
	out, _, _ = runCmd("", "owner", "--help")
	if !strings.Contains(out, "--cluster-total-nodes") || !strings.Contains(out, "Examples:") {
		t.Errorf("owner --help lacks options or examples:\n%s", out)
	}
	if out, _, code := runCmd("", "version"); code != 0 || !strings.HasPrefix(out, "xdpcluster ") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestParseIPv4MatchesNetip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	cases := []string{"1.2.3.4", "0.0.0.0", "255.255.255.255", "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4",
		"1..2.3", "", ".", "1.2.3.4.", "a.b.c.d", "1.2.3.-4", "0.0.0.00", "10.0.0.1 "}
	for i := 0; i < 2000; i++ {
		cases = append(cases, fmt.Sprintf("%d.%d.%d.%d", r.IntN(300), r.IntN(256), r.IntN(256), r.IntN(260)))
	}
	for _, c := range cases {
		ip, ok := parseIPv4([]byte(c))
		a, err := netip.ParseAddr(c)
		want := err == nil && a.Is4()
		if ok != want || (ok && ip != a.As4()) {
			t.Errorf("parseIPv4(%q) = %v, %v; netip says %v, %v", c, ip, ok, a, err)
		}
	}
}

// BenchmarkOwnerStream measures the stdin path: lines per second.
func BenchmarkOwnerStream(b *testing.B) {
	var in bytes.Buffer
	r := rand.New(rand.NewPCG(2, 2))
	const lines = 100000
	for i := 0; i < lines; i++ {
		if i%10 == 0 {
			fmt.Fprintf(&in, "2001:db8:%x::%x\n", r.IntN(65536), r.IntN(65536))
		} else {
			fmt.Fprintf(&in, "%d.%d.%d.%d\n", 1+r.IntN(223), r.IntN(256), r.IntN(256), r.IntN(256))
		}
	}
	data := in.Bytes()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if code := dispatch(env{bytes.NewReader(data), io.Discard, io.Discard},
			[]string{"owner", "--cluster-total-nodes", "3", "--cluster-hash-seed", "1"}); code != 0 {
			b.Fatal(code)
		}
	}
	b.ReportMetric(float64(b.N*lines)/b.Elapsed().Seconds(), "lines/s")
}

// TestOwnerLongLines: a line longer than the 64 KiB read buffer, in the
// middle or last without a newline, is reported once with its line number
// and length, quoted only by its first 64 bytes; the other lines are still
// answered. A long bad argument is quoted the same way.
func TestOwnerLongLines(t *testing.T) {
	long := strings.Repeat("9", 200000)
	for _, tc := range []struct {
		name, in string
		line     int
		answered []string
	}{
		{"last line, no newline", "10.0.0.1\n10.0.0.2\n" + long, 3, []string{"10.0.0.1", "10.0.0.2"}},
		{"last line, newline", "10.0.0.1\n" + long + "\n", 2, []string{"10.0.0.1"}},
		{"middle", "10.0.0.1\n" + long + "\n10.0.0.3\n", 2, []string{"10.0.0.1", "10.0.0.3"}},
		{"exactly the buffer", "10.0.0.1\n" + long[:64<<10] + "\n10.0.0.3", 2, []string{"10.0.0.1", "10.0.0.3"}},
		{"bad short line", "10.0.0.1\n" + long[:1000] + "\n10.0.0.3", 2, []string{"10.0.0.1", "10.0.0.3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCmd(tc.in, "owner", "--cluster-total-nodes", "2", "--cluster-hash-seed", "0")
			if code != exitFail {
				t.Errorf("exit %d, want 1", code)
			}
			m := cluster.LocalNode(2, 1, 0)
			var want strings.Builder
			for _, a := range tc.answered {
				fmt.Fprintf(&want, "%s %d\n", a, m.Node(netip.MustParseAddr(a))+1)
			}
			if out != want.String() {
				t.Errorf("stdout %.200q, want %q", out, want.String())
			}
			if n := strings.Count(errOut, "xdpcluster owner:"); n != 1 {
				t.Errorf("%d error lines, want 1: %.300q", n, errOut)
			}
			if len(errOut) > 300 {
				t.Errorf("stderr is %d bytes: the long line is echoed: %.300q", len(errOut), errOut)
			}
			n := len(long)
			switch tc.name {
			case "exactly the buffer":
				n = 64 << 10
			case "bad short line":
				// Within the limit: an ordinary bad line, quoted by its start.
				if want := fmt.Sprintf("line 2: %q... (1000 bytes): not an IPv4 or IPv6 address", long[:64]); !strings.Contains(errOut, want) {
					t.Errorf("stderr %.300q lacks %q", errOut, want)
				}
				return
			}
			wantMsg := fmt.Sprintf("line %d: %d bytes, over the 65535-byte limit, not an address: %q...", tc.line, n, long[:64])
			if !strings.Contains(errOut, wantMsg) {
				t.Errorf("stderr %.300q lacks %q", errOut, wantMsg)
			}
		})
	}
	_, errOut, code := runCmd("", "owner", "--cluster-total-nodes", "2", "--cluster-hash-seed", "0", long)
	if want := fmt.Sprintf("argument %q... (200000 bytes): not an IPv4", long[:64]); code != exitFail || !strings.Contains(errOut, want) || len(errOut) > 300 {
		t.Errorf("long argument: exit %d, stderr %.300q; want %q", code, errOut, want)
	}
}
