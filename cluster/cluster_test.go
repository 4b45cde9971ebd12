package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestKernelVectors(t *testing.T) {
	f, err := os.Open("../testdata/jhash-vectors.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	rows := 0
	for sc.Scan() {
		fs := strings.Split(sc.Text(), "\t")
		seed, _ := strconv.ParseUint(fs[0], 0, 32)
		total, _ := strconv.ParseUint(fs[1], 0, 32)
		want, _ := strconv.Atoi(fs[3])
		addr := netip.MustParseAddr(fs[2])
		for node := 1; node <= int(total); node++ {
			m := LocalNode(uint32(total), uint32(node), uint32(seed))
			if got := m.Node(addr) + 1; got != want {
				t.Fatalf("seed %s total %s %s: node %d, kernel %d", fs[0], fs[1], addr, got, want)
			}
			if m.Owns(addr) != (node == want) {
				t.Errorf("node %d of %s: Owns(%s) = %v", node, fs[1], addr, m.Owns(addr))
			}
			m.Invert = true
			if m.Owns(addr) != (node != want) {
				t.Errorf("! node %d of %s: Owns(%s) = %v", node, fs[1], addr, m.Owns(addr))
			}
		}
		rows++
	}
	if rows < 300 {
		t.Fatalf("only %d rows", rows)
	}
}

// TestIPv6FirstWordOnly pins the kernel quirk: in xt_cluster mode every
// address of an IPv6 /32 lands on the node of the IPv4 address with the
// same four bytes; in full mode they spread.
func TestIPv6FirstWordOnly(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	kern := Match{TotalNodes: 7, NodeMask: 1, Seed: 0x1234}
	full := kern
	full.Hash = HashFull
	for i := 0; i < 1000; i++ {
		var b [16]byte
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		a := netip.AddrFrom16(b)
		if a.Is4In6() {
			continue
		}
		v4 := netip.AddrFrom4([4]byte{b[0], b[1], b[2], b[3]})
		if kern.Node(a) != kern.Node(v4) {
			t.Fatalf("%s: node %d, but %s has node %d", a, kern.Node(a), v4, kern.Node(v4))
		}
		b[15] ^= 0xff
		if kern.Node(netip.AddrFrom16(b)) != kern.Node(a) {
			t.Fatalf("%s and its /32 neighbour differ", a)
		}
	}
	// Full mode spreads one /32 over all nodes.
	seen := map[int]bool{}
	base := netip.MustParseAddr("2001:db8::").As16()
	for i := 0; i < 1000; i++ {
		base[15] = byte(i)
		base[14] = byte(i >> 8)
		seen[full.Node(netip.AddrFrom16(base))] = true
		if full.Node(netip.MustParseAddr("10.1.2.3")) != kern.Node(netip.MustParseAddr("10.1.2.3")) {
			t.Fatal("full mode must hash IPv4 like the kernel")
		}
	}
	if len(seen) != 7 {
		t.Errorf("full mode put a /32 on %d of 7 nodes", len(seen))
	}
	if !kern.KernelCompatible() || full.KernelCompatible() {
		t.Error("KernelCompatible wrong")
	}
}

// TestIPv4MappedIsIPv6: the kernel sees ::ffff:a.b.c.d as IPv6, whose first
// word is zero, so every mapped address shares the node of 0.0.0.0.
func TestIPv4MappedIsIPv6(t *testing.T) {
	m := Match{TotalNodes: 32, NodeMask: 1, Seed: 0xdeadbeef}
	zero := m.Node(netip.MustParseAddr("0.0.0.0"))
	for _, s := range []string{"::ffff:10.0.0.1", "::ffff:192.168.1.77", "::ffff:8.8.8.8"} {
		if got := m.Node(netip.MustParseAddr(s)); got != zero {
			t.Errorf("%s: node %d, want %d (first word 0)", s, got, zero)
		}
	}
	if m.Node(netip.MustParseAddr("::ffff:10.0.0.1")) == m.Node(netip.MustParseAddr("10.0.0.1")) &&
		m.Node(netip.MustParseAddr("::ffff:192.168.1.77")) == m.Node(netip.MustParseAddr("192.168.1.77")) &&
		m.Node(netip.MustParseAddr("::ffff:8.8.8.8")) == m.Node(netip.MustParseAddr("8.8.8.8")) {
		t.Error("mapped addresses look silently unmapped")
	}
}

func TestOwnsNodeMaskAndInvert(t *testing.T) {
	m := Match{TotalNodes: 4, NodeMask: 0b0101}
	want := []bool{true, false, true, false}
	for n, w := range want {
		if m.OwnsNode(n) != w {
			t.Errorf("mask 0b0101 node %d: %v", n, !w)
		}
	}
	m.Invert = true
	for n, w := range want {
		if m.OwnsNode(n) == w {
			t.Errorf("! mask 0b0101 node %d: %v", n, w)
		}
	}
	if got := (Match{NodeMask: 0b1010}).Nodes(); len(got) != 2 || got[0] != 2 || got[1] != 4 {
		t.Errorf("Nodes() = %v, want [2 4]", got)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		m    Match
		want string // substring of the error, "" for valid
	}{
		{"one node", Match{TotalNodes: 1, NodeMask: 1}, ""},
		{"32 nodes, all", Match{TotalNodes: 32, NodeMask: 0xffffffff}, ""},
		{"node 7 of 8 as mask", Match{TotalNodes: 8, NodeMask: 0x40}, ""},
		{"zero nodes", Match{TotalNodes: 0, NodeMask: 1}, "--cluster-total-nodes 0: must be 1..32"},
		{"33 nodes", Match{TotalNodes: 33, NodeMask: 1}, "--cluster-total-nodes 33: must be 1..32"},
		{"zero mask", Match{TotalNodes: 2}, "--cluster-local-nodemask 0x0: must name at least one node"},
		{"mask too big", Match{TotalNodes: 2, NodeMask: 4}, "--cluster-local-nodemask 0x4: names a node above --cluster-total-nodes 2"},
		{"bad hash", Match{TotalNodes: 2, NodeMask: 1, Hash: 9}, "--hash HashMode(9)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var oe *OptionError
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &oe) {
				t.Fatalf("Validate() = %v, want an OptionError containing %q", err, tc.want)
			}
		})
	}
}

func TestParseNumber(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"7", 7, true},
		{"010", 8, true}, // octal, as strtoul base 0
		{"0x10", 16, true},
		{"0XdeadBEEF", 0xdeadbeef, true},
		{"+5", 5, true},
		{" 7", 7, true},
		{"0xffffffffffffffff", 1<<64 - 1, true},
		{"0x1ffffffffffffffff", 0, false},
		{"", 0, false},
		{"0x", 0, false},
		{"-1", 0, false},
		{"08", 0, false},
		{"1_000", 0, false},
		{"12abc", 0, false},
		{"0b101", 0, false},
		{"7 ", 0, false},
	}
	for _, tc := range tests {
		got, err := ParseNumber(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseNumber(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// TestOctalHint: a number that starts with 0 and has a digit 8 or 9 is
// refused with the reason (a leading 0 means octal) and the decimal
// spelling; other refusals carry no such hint.
func TestOctalHint(t *testing.T) {
	const hint = "a leading 0 means octal, which has no digit 8 or 9"
	tests := []struct {
		in, want string // want: the whole ParseNumber error; "" when accepted
	}{
		{"09", `invalid cluster match: "09" is not a number (decimal, 0x hex, or 0-prefixed octal): ` + hint + ` (for decimal 9 write 9)`},
		{"0189", `invalid cluster match: "0189" is not a number (decimal, 0x hex, or 0-prefixed octal): ` + hint + ` (for decimal 189 write 189)`},
		{" +008", `invalid cluster match: " +008" is not a number (decimal, 0x hex, or 0-prefixed octal): ` + hint + ` (for decimal 8 write 8)`},
		{"0x9", ""},
		{"9", ""},
		{"07", ""},
		{"0x9g", `invalid cluster match: "0x9g" is not a number (decimal, 0x hex, or 0-prefixed octal)`},
		{"09a", `invalid cluster match: "09a" is not a number (decimal, 0x hex, or 0-prefixed octal)`},
		{"19", ""},
	}
	for _, tc := range tests {
		_, err := ParseNumber(tc.in)
		if got := fmt.Sprint(err); (tc.want == "" && err != nil) || (tc.want != "" && got != tc.want) {
			t.Errorf("ParseNumber(%q): %v\nwant %s", tc.in, err, tc.want)
		}
	}
	_, err := ParseIptables("--cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 09")
	if want := "--cluster-hash-seed 09: not a number (decimal, 0x hex, or 0-prefixed octal, as iptables reads it): " + hint; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("ParseIptables: %v, want %q", err, want)
	}
}

func TestParseIptables(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Match
	}{
		{"options", "--cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 0xdeadbeef",
			Match{TotalNodes: 2, NodeMask: 1, Seed: 0xdeadbeef}},
		{"with -m and invert", "-m cluster --cluster-total-nodes 3 ! --cluster-local-node 2 --cluster-hash-seed 12",
			Match{TotalNodes: 3, NodeMask: 2, Seed: 12, Invert: true}},
		{"iptables -S form", "-A PREROUTING -m cluster ! --cluster-local-nodemask 0x00000040 --cluster-total-nodes 8 --cluster-hash-seed 0x00000005 -j ACCEPT",
			Match{TotalNodes: 8, NodeMask: 0x40, Seed: 5, Invert: true}},
		{"whole command", `iptables -t mangle -A PREROUTING -i eth1 -m cluster --cluster-total-nodes 2 --cluster-local-nodemask 3 --cluster-hash-seed 010 -j MARK --set-mark 0xffff`,
			Match{TotalNodes: 2, NodeMask: 3, Seed: 8}},
		{"equals form", "--cluster-total-nodes=4 --cluster-local-node=4 --cluster-hash-seed=0",
			Match{TotalNodes: 4, NodeMask: 8}},
		{"invert of other match ignored", "! -s 10.0.0.0/8 -m cluster --cluster-total-nodes 2 --cluster-local-node 2 --cluster-hash-seed 1",
			Match{TotalNodes: 2, NodeMask: 2, Seed: 1}},
		{"mask above 32 accepted", "--cluster-total-nodes 32 --cluster-local-nodemask 0xffff0000 --cluster-hash-seed 0xffffffff",
			Match{TotalNodes: 32, NodeMask: 0xffff0000, Seed: 0xffffffff}},
		{"full hash", "--cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 1 --xdpcluster-hash full",
			Match{TotalNodes: 2, NodeMask: 1, Seed: 1, Hash: HashFull}},
		{"quoted", `--cluster-total-nodes "2" --cluster-local-node '1' --cluster-hash-seed 1`,
			Match{TotalNodes: 2, NodeMask: 1, Seed: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseIptables(tc.in)
			if err != nil {
				t.Fatalf("ParseIptables: %v", err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			back, err := ParseIptables(got.String())
			if err != nil || back != got {
				t.Fatalf("round trip of %q: %+v, %v", got.String(), back, err)
			}
		})
	}
}

func TestParseIptablesErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"--cluster-total-nodes 2 --cluster-local-node 1", `--cluster-hash-seed: must be specified`},
		{"--cluster-local-node 1 --cluster-hash-seed 5", `--cluster-total-nodes: must be specified`},
		{"--cluster-total-nodes 2 --cluster-hash-seed 5", `--cluster-local-node or --cluster-local-nodemask is missing`},
		{"--cluster-total-nodes 33 --cluster-local-node 1 --cluster-hash-seed 5", `--cluster-total-nodes 33: must be 1..32`},
		{"--cluster-total-nodes 0 --cluster-local-node 1 --cluster-hash-seed 5", `--cluster-total-nodes 0: must be 1..32`},
		{"--cluster-total-nodes 2 --cluster-local-node 0 --cluster-hash-seed 5", `--cluster-local-node 0: must be 1..32`},
		{"--cluster-total-nodes 2 --cluster-local-node 3 --cluster-hash-seed 5", `--cluster-local-node 3: must be <= --cluster-total-nodes 2`},
		{"--cluster-total-nodes 2 --cluster-local-nodemask 0 --cluster-hash-seed 5", `--cluster-local-nodemask 0: must be a non-zero 32-bit mask`},
		{"--cluster-total-nodes 2 --cluster-local-nodemask 4 --cluster-hash-seed 5", `--cluster-local-nodemask 0x4: names a node above`},
		{"--cluster-total-nodes 2 --cluster-local-node 1 --cluster-local-nodemask 1 --cluster-hash-seed 5", `cannot be used together`},
		{"--cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 0x100000000", `--cluster-hash-seed 0x100000000: must be 0..4294967295`},
		{"--cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed -1", `--cluster-hash-seed -1: not a number`},
		{"--cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 1 --cluster-hash-seed 2", `--cluster-hash-seed 2: can only be used once`},
		{"--cluster-total-nodes 2 --cluster-local-node 1 ! --cluster-hash-seed 1", `cannot be inverted`},
		{"--cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed", `--cluster-hash-seed: needs a value`},
		{"--cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 1 --cluster-foo 3", `--cluster-foo: unknown option`},
		{"--cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 1 !", `trailing "!"`},
		{"-m cluster -m cluster --cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 1", `more than one -m cluster`},
		{"--cluster-total-nodes '2 --cluster-local-node 1", `unterminated`},
		{"--cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 1 --xdpcluster-hash half", `--hash half`},
	}
	for _, tc := range tests {
		_, err := ParseIptables(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseIptables(%q) = %v, want error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		m    Match
		want string
	}{
		{Match{TotalNodes: 3, NodeMask: 1, Seed: 0xdeadbeef}, "-m cluster --cluster-total-nodes 3 --cluster-local-node 1 --cluster-hash-seed 0xdeadbeef"},
		{Match{TotalNodes: 8, NodeMask: 0x40, Seed: 5, Invert: true}, "-m cluster --cluster-total-nodes 8 ! --cluster-local-node 7 --cluster-hash-seed 0x00000005"},
		{Match{TotalNodes: 4, NodeMask: 5}, "-m cluster --cluster-total-nodes 4 --cluster-local-nodemask 0x5 --cluster-hash-seed 0x00000000"},
		{Match{TotalNodes: 2, NodeMask: 2, Hash: HashFull}, "-m cluster --cluster-total-nodes 2 --cluster-local-node 2 --cluster-hash-seed 0x00000000 --xdpcluster-hash full"},
	}
	for _, tc := range tests {
		if got := tc.m.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

func TestNodeAllocs(t *testing.T) {
	m := Match{TotalNodes: 5, NodeMask: 3, Seed: 7, Hash: HashFull}
	v4, v6 := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("2001:db8::99")
	if n := testing.AllocsPerRun(100, func() { m.Owns(v4); m.Owns(v6) }); n != 0 {
		t.Fatalf("Owns allocates %v times per call", n)
	}
}

// FuzzParseIptables: the parser never panics, and whatever it accepts is
// valid and survives a String round trip unchanged.
func FuzzParseIptables(f *testing.F) {
	for _, s := range []string{
		"--cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 0xdeadbeef",
		"-A PREROUTING -m cluster ! --cluster-local-nodemask 0x00000040 --cluster-total-nodes 8 --cluster-hash-seed 0x00000005 -j ACCEPT",
		"--cluster-total-nodes=4 --cluster-local-node=4 --cluster-hash-seed=010 --xdpcluster-hash full",
		`"--cluster-total-nodes" '3' \! --cluster-local-node 1`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseIptables(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid match %+v: %v", m, err)
		}
		back, err := ParseIptables(m.String())
		if err != nil || back != m {
			t.Fatalf("round trip of %q: %+v, %v (want %+v)", m.String(), back, err, m)
		}
	})
}

func BenchmarkOwns(b *testing.B) {
	m := Match{TotalNodes: 3, NodeMask: 1, Seed: 0xdeadbeef}
	ip := [4]byte{10, 0, 0, 0}
	b.ReportAllocs()
	owned := 0
	for i := 0; i < b.N; i++ {
		ip[3] = byte(i)
		ip[2] = byte(i >> 8)
		if m.OwnsNode(int(m.Bucket4(&ip))) {
			owned++
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pps")
	_ = owned
}
