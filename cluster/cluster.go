// Package cluster implements the semantics of the Linux kernel's xt_cluster
// match (net/netfilter/xt_cluster.c) and of iptables' libxt_cluster option
// parser, bit for bit.
//
// A node owns a connection when the hash of the connection's
// original-direction source address, scaled to the number of nodes, names a
// node in its node mask (the result XORed with the invert flag):
//
//	h    = jhash_1word(first 32-bit word of the address, seed)
//	node = (h * total_nodes) >> 32      // reciprocal_scale, 0-based
//	owns = (node_mask >> node) & 1  XOR  invert
//
// For IPv6 the kernel calls jhash2 with a length of one word, so only the
// first 32 bits of the address count: every address of an IPv6 /32 lands on
// one node, the node of the IPv4 address with the same four bytes.
// [HashXtCluster] (the default) reproduces this. [HashFull] hashes the whole
// IPv6 address instead; it balances IPv6 clients that share a /32 but does
// not agree with kernel nodes, so it must never be mixed with them.
//
// A Match is a small comparable value; its methods do not allocate and are
// safe for concurrent use.
package cluster

import (
	"fmt"
	"net/netip"

	"github.com/xdpcluster/xdpcluster/jhash"
)

// MaxNodes is the kernel's XT_CLUSTER_NODES_MAX.
const MaxNodes = 32

// HashMode selects what part of an IPv6 address is hashed. IPv4 addresses
// hash identically in every mode.
type HashMode uint8

const (
	// HashXtCluster is the kernel's xt_cluster hash: the first 32-bit word
	// of the address only. The default; agrees with kernel nodes.
	HashXtCluster HashMode = iota
	// HashFull hashes all four words of an IPv6 address (jhash2, length 4).
	// Opt-in; disagrees with kernel nodes on IPv6.
	HashFull
)

// String returns the mode's configuration name: "xt_cluster" or "full".
func (h HashMode) String() string {
	switch h {
	case HashXtCluster:
		return "xt_cluster"
	case HashFull:
		return "full"
	}
	return fmt.Sprintf("HashMode(%d)", uint8(h))
}

// ParseHashMode parses a mode name as String returns it.
func ParseHashMode(s string) (HashMode, error) {
	switch s {
	case "xt_cluster", "":
		return HashXtCluster, nil
	case "full":
		return HashFull, nil
	}
	return 0, &OptionError{Option: "hash", Value: s, Rule: `must be "xt_cluster" (kernel-compatible) or "full" (whole IPv6 address, not kernel-compatible)`}
}

// Match is one node's cluster match: the options of one
// `iptables -m cluster` rule.
type Match struct {
	// TotalNodes is --cluster-total-nodes, 1..32.
	TotalNodes uint32
	// NodeMask has bit n-1 set for each node n this match accepts
	// (--cluster-local-node N is the mask 1<<(N-1)).
	NodeMask uint32
	// Seed is --cluster-hash-seed.
	Seed uint32
	// Invert is the "!" before --cluster-local-node(mask).
	Invert bool
	// Hash is the IPv6 hash mode; the zero value is kernel-compatible.
	Hash HashMode
}

// LocalNode returns the match of `--cluster-local-node node` (1-based).
// Call Validate on the result.
func LocalNode(total, node, seed uint32) Match {
	mask, _ := NodeMask(uint64(node), MaxNodes)
	return Match{TotalNodes: total, NodeMask: mask, Seed: seed}
}

// NodeMask returns the node mask of the 1-based node n of a cluster of
// total nodes: bit n-1, as --cluster-local-node n sets it. The error, an
// *OptionError for --cluster-local-node, says n is not 1..total.
func NodeMask(n, total uint64) (uint32, error) {
	total = min(total, MaxNodes)
	if n < 1 || n > total {
		return 0, &OptionError{OptLocalNode, fmt.Sprint(n), fmt.Sprintf("must be 1..%d", total)}
	}
	return 1 << (n - 1), nil
}

// CanChangeTo reports whether a running node may switch from m to next:
// only the node mask and the invert flag change at run time. Connections
// remember their bucket, which depends on the node count, the seed and
// the hash mode; the error, a *FixedError, names those that differ.
func (m Match) CanChangeTo(next Match) error {
	var differ []string
	if m.TotalNodes != next.TotalNodes {
		differ = append(differ, OptTotalNodes)
	}
	if m.Seed != next.Seed {
		differ = append(differ, OptHashSeed)
	}
	if m.Hash != next.Hash {
		differ = append(differ, OptHash)
	}
	if differ == nil {
		return nil
	}
	return &FixedError{Options: differ, From: m, To: next}
}

// FixedError is a change of a match that cannot happen at run time.
type FixedError struct {
	Options  []string // the options that differ, as iptables names them (OptTotalNodes, OptHashSeed, OptHash)
	From, To Match
}

func (e *FixedError) Error() string {
	return fmt.Sprintf("the node count, seed and hash mode cannot change at run time (restart the node): have %s, want %s", e.From, e.To)
}

// OptionError reports an invalid option value: which option, the value and
// what is allowed.
type OptionError struct {
	Option string // option name without dashes, e.g. "cluster-total-nodes"
	Value  string // the value as given or rendered
	Rule   string // what is allowed
}

func (e *OptionError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("--%s: %s", e.Option, e.Rule)
	}
	return fmt.Sprintf("--%s %s: %s", e.Option, e.Value, e.Rule)
}

// Validate checks the match with the kernel's rules: 1..32 nodes, a
// non-zero node mask below 1<<TotalNodes, a known hash mode. (iptables'
// own parser accepts only masks 1..32 for --cluster-local-nodemask; the
// kernel accepts every mask below 1<<total, and so do we.)
func (m Match) Validate() error {
	if m.TotalNodes < 1 || m.TotalNodes > MaxNodes {
		return &OptionError{"cluster-total-nodes", fmt.Sprint(m.TotalNodes), fmt.Sprintf("must be 1..%d", MaxNodes)}
	}
	if m.NodeMask == 0 {
		return &OptionError{"cluster-local-nodemask", "0x0", "must name at least one node (non-zero)"}
	}
	if uint64(m.NodeMask) >= 1<<m.TotalNodes {
		return &OptionError{"cluster-local-nodemask", fmt.Sprintf("%#x", m.NodeMask),
			fmt.Sprintf("names a node above --cluster-total-nodes %d (mask must be below %#x)", m.TotalNodes, uint64(1)<<m.TotalNodes)}
	}
	if m.Hash > HashFull {
		return &OptionError{"hash", m.Hash.String(), `must be "xt_cluster" or "full"`}
	}
	return nil
}

// KernelCompatible reports whether kernel nodes with the same options make
// the same decisions for every address.
func (m Match) KernelCompatible() bool { return m.Hash == HashXtCluster }

// Bucket4 returns the 0-based node that owns IPv4 source address ip (as
// stored in the packet).
func (m *Match) Bucket4(ip *[4]byte) uint32 {
	w := jhash.Word(ip[:])
	return jhash.ReciprocalScale(jhash.Hash1Word(w, m.Seed), m.TotalNodes)
}

// Bucket16 returns the 0-based node that owns IPv6 source address ip (as
// stored in the packet).
func (m *Match) Bucket16(ip *[16]byte) uint32 {
	w0 := jhash.Word(ip[0:4])
	if m.Hash != HashFull {
		// jhash2(ip, 1, seed) == jhash_1word(ip[0], seed).
		return jhash.ReciprocalScale(jhash.Hash1Word(w0, m.Seed), m.TotalNodes)
	}
	w := [4]uint32{w0, jhash.Word(ip[4:8]), jhash.Word(ip[8:12]), jhash.Word(ip[12:16])}
	return jhash.ReciprocalScale(jhash.Hash2(w[:], m.Seed), m.TotalNodes)
}

// Node returns the 0-based node that owns connections whose original source
// is addr. An IPv4-mapped IPv6 address is IPv6, as it is to the kernel.
// The invalid zero Addr maps to node 0.
func (m *Match) Node(addr netip.Addr) int {
	switch {
	case addr.Is4():
		b := addr.As4()
		return int(m.Bucket4(&b))
	case addr.Is6():
		b := addr.As16()
		return int(m.Bucket16(&b))
	}
	return 0
}

// OwnsNode reports whether this match accepts connections hashed to the
// 0-based node n: the node-mask test XOR the invert flag.
func (m *Match) OwnsNode(n int) bool {
	return (n >= 0 && n < 32 && m.NodeMask>>uint(n)&1 == 1) != m.Invert
}

// Owns reports whether this match accepts connections whose original
// source is addr.
func (m *Match) Owns(addr netip.Addr) bool { return m.OwnsNode(m.Node(addr)) }

// Nodes returns the 1-based node numbers in the node mask (before invert).
func (m Match) Nodes() []int {
	var out []int
	for n := 0; n < MaxNodes; n++ {
		if m.NodeMask>>uint(n)&1 == 1 {
			out = append(out, n+1)
		}
	}
	return out
}
