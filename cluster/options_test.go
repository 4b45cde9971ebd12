package cluster

import (
	"errors"
	"strings"
	"testing"
)

// TestNodeMask: the one 1-based node to mask conversion, and its bounds.
func TestNodeMask(t *testing.T) {
	for _, tc := range []struct {
		n, total uint64
		mask     uint32
		err      string
	}{
		{1, 1, 1, ""},
		{3, 3, 0b100, ""},
		{32, 32, 1 << 31, ""},
		{32, 99, 1 << 31, ""}, // total beyond MaxNodes bounds n at MaxNodes
		{0, 3, 0, "--cluster-local-node 0: must be 1..3"},
		{4, 3, 0, "--cluster-local-node 4: must be 1..3"},
		{33, 32, 0, "--cluster-local-node 33: must be 1..32"},
		{1 << 63, 32, 0, "--cluster-local-node 9223372036854775808: must be 1..32"},
	} {
		mask, err := NodeMask(tc.n, tc.total)
		if tc.err == "" && (err != nil || mask != tc.mask) {
			t.Errorf("NodeMask(%d, %d) = %#x, %v; want %#x", tc.n, tc.total, mask, err, tc.mask)
		}
		if tc.err != "" && (err == nil || err.Error() != tc.err) {
			t.Errorf("NodeMask(%d, %d): error %v, want %q", tc.n, tc.total, err, tc.err)
		}
	}
	if m := LocalNode(3, 2, 7); m != (Match{TotalNodes: 3, NodeMask: 2, Seed: 7}) {
		t.Errorf("LocalNode(3, 2, 7) = %+v", m)
	}
}

// TestOptions: iptables text or separate options, then the hash override,
// in one place for the configuration and the owner command.
func TestOptions(t *testing.T) {
	const rule = "-m cluster --cluster-total-nodes 3 ! --cluster-local-node 2 --cluster-hash-seed 0x10"
	for _, tc := range []struct {
		name string
		o    Options
		want Match
		err  string // the *OptionError's option and text
	}{
		{"fields", Options{TotalNodes: 3, LocalNode: 2, Seed: 0x10, Invert: true}, Match{TotalNodes: 3, NodeMask: 2, Seed: 0x10, Invert: true}, ""},
		{"mask", Options{TotalNodes: 3, LocalNodemask: 5}, Match{TotalNodes: 3, NodeMask: 5}, ""},
		{"iptables", Options{Iptables: rule}, Match{TotalNodes: 3, NodeMask: 2, Seed: 0x10, Invert: true}, ""},
		{"iptables, hash override", Options{Iptables: rule, Hash: "full"}, Match{TotalNodes: 3, NodeMask: 2, Seed: 0x10, Invert: true, Hash: HashFull}, ""},
		{"iptables, xt_cluster keeps the rule's", Options{Iptables: rule + " --xdpcluster-hash full", Hash: "xt_cluster"}, Match{TotalNodes: 3, NodeMask: 2, Seed: 0x10, Invert: true, Hash: HashFull}, ""},
		{"fields, hash", Options{TotalNodes: 2, LocalNode: 1, Hash: "full"}, Match{TotalNodes: 2, NodeMask: 1, Hash: HashFull}, ""},
		{"both", Options{Iptables: rule, Seed: 1}, Match{}, "iptables: give either the iptables text or the separate options, not both"},
		{"bad rule", Options{Iptables: "--cluster-total-nodes 2"}, Match{}, "iptables: invalid cluster match"},
		{"total", Options{TotalNodes: 33, LocalNode: 1}, Match{}, "cluster-total-nodes 33: must be 1..32"},
		{"seed", Options{TotalNodes: 2, LocalNode: 1, Seed: 1 << 32}, Match{}, "cluster-hash-seed 0x100000000: must be 0..0xffffffff"},
		{"node above total", Options{TotalNodes: 2, LocalNode: 3}, Match{}, "cluster-local-node 3: must be 1..2"},
		{"node and mask", Options{TotalNodes: 2, LocalNode: 1, LocalNodemask: 1}, Match{}, "cluster-local-node: give one, not both"},
		{"no node", Options{TotalNodes: 2}, Match{}, "cluster-local-node: required"},
		{"mask above total", Options{TotalNodes: 2, LocalNodemask: 4}, Match{}, "cluster-local-nodemask 0x4: names a node above --cluster-total-nodes 2"},
		{"bad hash", Options{TotalNodes: 2, LocalNode: 1, Hash: "fast"}, Match{}, "hash fast: must be"},
	} {
		m, err := tc.o.Match()
		if tc.err == "" {
			if err != nil || m != tc.want {
				t.Errorf("%s: %+v, %v; want %+v", tc.name, m, err, tc.want)
			}
			continue
		}
		var oe *OptionError
		if !errors.As(err, &oe) || !strings.Contains(err.Error(), "--"+tc.err) {
			t.Errorf("%s: error %v, want an *OptionError containing %q", tc.name, err, "--"+tc.err)
		}
	}
}

// TestCanChangeTo: only the node mask and invert flag change at run time;
// the error names every parameter that differs.
func TestCanChangeTo(t *testing.T) {
	m := Match{TotalNodes: 3, NodeMask: 1, Seed: 5}
	for _, tc := range []struct {
		name string
		next Match
		opts []string
	}{
		{"same", m, nil},
		{"mask and invert", Match{TotalNodes: 3, NodeMask: 6, Seed: 5, Invert: true}, nil},
		{"total", Match{TotalNodes: 4, NodeMask: 1, Seed: 5}, []string{OptTotalNodes}},
		{"seed and hash", Match{TotalNodes: 3, NodeMask: 1, Seed: 6, Hash: HashFull}, []string{OptHashSeed, OptHash}},
	} {
		err := m.CanChangeTo(tc.next)
		var fe *FixedError
		switch {
		case tc.opts == nil && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.opts != nil && !errors.As(err, &fe):
			t.Errorf("%s: %v, want a *FixedError", tc.name, err)
		case tc.opts != nil && strings.Join(fe.Options, " ") != strings.Join(tc.opts, " "):
			t.Errorf("%s: differ %q, want %q", tc.name, fe.Options, tc.opts)
		case tc.opts != nil && !strings.Contains(err.Error(), "cannot change at run time"):
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
