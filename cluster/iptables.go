package cluster

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Option names of the cluster match, as iptables spells them.
const (
	OptTotalNodes    = "cluster-total-nodes"
	OptLocalNode     = "cluster-local-node"
	OptLocalNodemask = "cluster-local-nodemask"
	OptHashSeed      = "cluster-hash-seed"
	// OptHash is xdpcluster's own extension naming a non-kernel hash mode.
	// iptables rejects it, so a rule that cannot agree with kernel nodes
	// can never be pasted into one by mistake.
	OptHash = "xdpcluster-hash"
)

// ErrSyntax is wrapped by every error ParseIptables and ParseNumber return.
var ErrSyntax = errors.New("invalid cluster match")

// ParseNumber reads an unsigned number the way iptables does
// (xtables_strtoul_base with base 0, i.e. C strtoul): optional leading
// white space and '+', then "0x"/"0X" for hex, a leading "0" for octal
// ("010" is 8), decimal otherwise; the whole string must be consumed and
// a minus sign is refused.
func ParseNumber(s string) (uint64, error) {
	p := strings.TrimLeft(s, " \t\n\v\f\r")
	p = strings.TrimPrefix(p, "+")
	base := 10
	switch {
	case len(p) > 1 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'):
		base, p = 16, p[2:]
	case len(p) > 1 && p[0] == '0':
		base, p = 8, p[1:]
	}
	if p == "" {
		return 0, fmt.Errorf("%w: %q is not a number", ErrSyntax, s)
	}
	var v uint64
	for i := 0; i < len(p); i++ {
		d := digit(p[i])
		if d >= base {
			return 0, fmt.Errorf("%w: %q is not a number (decimal, 0x hex, or 0-prefixed octal)%s", ErrSyntax, s, OctalHint(s))
		}
		nv := v*uint64(base) + uint64(d)
		if nv/uint64(base) != v {
			return 0, fmt.Errorf("%w: %q is out of range", ErrSyntax, s)
		}
		v = nv
	}
	return v, nil
}

// OctalHint explains why a number such as "09" is refused: it starts
// with 0, so it is octal (as C's strtoul, and iptables, read it), and has
// a digit 8 or 9, which octal lacks. It is "" for any other text, and
// otherwise starts with ": ", to follow a "not a number" message.
func OctalHint(s string) string {
	p := strings.TrimPrefix(strings.TrimLeft(s, " \t\n\v\f\r"), "+")
	if len(p) < 2 || p[0] != '0' || !strings.ContainsAny(p, "89") {
		return ""
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return ""
		}
	}
	dec := strings.TrimLeft(p, "0")
	return fmt.Sprintf(": a leading 0 means octal, which has no digit 8 or 9 (for decimal %s write %s)", dec, dec)
}

func digit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return 99
}

// ParseIptables reads the cluster match out of iptables option text as
// users paste it: the options alone
//
//	--cluster-total-nodes 2 ! --cluster-local-node 1 --cluster-hash-seed 0xdeadbeef
//
// or a whole rule as written or as `iptables -S` prints it
//
//	-A PREROUTING -m cluster --cluster-local-nodemask 0x00000001 --cluster-total-nodes 2 --cluster-hash-seed 0xdeadbeef -j MARK --set-mark 1
//
// Tokens that do not belong to the cluster match (the chain, other matches,
// the target) are skipped. Options take "--opt value" or "--opt=value".
// The rules are iptables' own: --cluster-total-nodes and --cluster-hash-seed
// are required, exactly one of --cluster-local-node and
// --cluster-local-nodemask, each option at most once, only the node options
// may be inverted. Unlike iptables, every non-zero node mask below
// 1<<total-nodes is accepted (iptables limits the mask to 1..32, so its own
// -S output for node 7 and above cannot be restored). The result is valid.
func ParseIptables(s string) (Match, error) {
	toks, err := splitFields(s)
	if err != nil {
		return Match{}, err
	}
	var (
		m        Match
		seen     = map[string]bool{}
		invert   bool // a "!" is pending
		clusterM int  // how many "-m cluster"
		localN   uint64
	)
	fail := func(opt, val, rule string) (Match, error) {
		return Match{}, fmt.Errorf("%w: %w", ErrSyntax, &OptionError{opt, val, rule})
	}
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		if tok == "!" {
			invert = true
			continue
		}
		if tok == "-m" || tok == "--match" {
			if i+1 < len(toks) && toks[i+1] == "cluster" {
				clusterM++
				if clusterM > 1 {
					return Match{}, fmt.Errorf("%w: the rule has more than one -m cluster", ErrSyntax)
				}
			}
			i++
			invert = false
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(tok, "--"), "=")
		if !strings.HasPrefix(tok, "--") || !(strings.HasPrefix(name, "cluster-") || name == OptHash) {
			invert = false // "!" belonged to another match's option
			continue
		}
		switch name {
		case OptTotalNodes, OptLocalNode, OptLocalNodemask, OptHashSeed, OptHash:
		default:
			return fail(name, "", fmt.Sprintf("unknown option; the cluster match takes --%s, [!] --%s, [!] --%s and --%s", OptTotalNodes, OptLocalNode, OptLocalNodemask, OptHashSeed))
		}
		if !hasVal {
			if i+1 >= len(toks) {
				return fail(name, "", "needs a value")
			}
			i++
			val = toks[i]
		}
		if seen[name] {
			return fail(name, val, "can only be used once")
		}
		seen[name] = true
		inv := invert
		invert = false
		if inv && name != OptLocalNode && name != OptLocalNodemask {
			return fail(name, val, "cannot be inverted (only --cluster-local-node and --cluster-local-nodemask can)")
		}
		if name == OptHash {
			h, err := ParseHashMode(val)
			if err != nil {
				return Match{}, fmt.Errorf("%w: %w", ErrSyntax, err)
			}
			m.Hash = h
			continue
		}
		v, err := ParseNumber(val)
		if err != nil {
			return fail(name, val, "not a number (decimal, 0x hex, or 0-prefixed octal, as iptables reads it)"+OctalHint(val))
		}
		switch name {
		case OptTotalNodes:
			if v < 1 || v > MaxNodes {
				return fail(name, val, fmt.Sprintf("must be 1..%d", MaxNodes))
			}
			m.TotalNodes = uint32(v)
		case OptLocalNode:
			if m.NodeMask, err = NodeMask(v, MaxNodes); err != nil {
				return Match{}, fmt.Errorf("%w: %w", ErrSyntax, err)
			}
			localN = v
			m.Invert = inv
		case OptLocalNodemask:
			if v == 0 || v > 0xffffffff {
				return fail(name, val, "must be a non-zero 32-bit mask")
			}
			m.NodeMask = uint32(v)
			m.Invert = inv
		case OptHashSeed:
			if v > 0xffffffff {
				return fail(name, val, "must be 0..4294967295 (0xffffffff)")
			}
			m.Seed = uint32(v)
		}
	}
	if invert {
		return Match{}, fmt.Errorf("%w: a trailing \"!\" inverts nothing", ErrSyntax)
	}
	switch {
	case !seen[OptTotalNodes]:
		return fail(OptTotalNodes, "", "must be specified")
	case !seen[OptHashSeed]:
		return fail(OptHashSeed, "", "must be specified")
	case seen[OptLocalNode] && seen[OptLocalNodemask]:
		return fail(OptLocalNode, "", "cannot be used together with --"+OptLocalNodemask)
	case !seen[OptLocalNode] && !seen[OptLocalNodemask]:
		return fail(OptLocalNode, "", "--"+OptLocalNode+" or --"+OptLocalNodemask+" is missing")
	case seen[OptLocalNode] && localN > uint64(m.TotalNodes):
		return fail(OptLocalNode, strconv.FormatUint(localN, 10), fmt.Sprintf("must be <= --%s %d", OptTotalNodes, m.TotalNodes))
	}
	if err := m.Validate(); err != nil {
		return Match{}, fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	return m, nil
}

// splitFields splits s on white space, honouring single and double quotes
// as a shell would (no escapes inside single quotes).
func splitFields(s string) ([]string, error) {
	var (
		out   []string
		cur   strings.Builder
		in    bool
		quote byte
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else {
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			in = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("%w: unterminated %c quote", ErrSyntax, quote)
	}
	if in {
		out = append(out, cur.String())
	}
	return out, nil
}

// String renders the match as iptables options, in the order users write
// them: "-m cluster --cluster-total-nodes 3 --cluster-local-node 1
// --cluster-hash-seed 0xdeadbeef". A single-node mask is rendered as
// --cluster-local-node (which iptables can restore), any other mask as
// --cluster-local-nodemask 0x...; a non-kernel hash mode adds
// --xdpcluster-hash, which iptables refuses. ParseIptables reads it back.
func (m Match) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "-m cluster --%s %d ", OptTotalNodes, m.TotalNodes)
	if m.Invert {
		b.WriteString("! ")
	}
	if m.NodeMask != 0 && m.NodeMask&(m.NodeMask-1) == 0 {
		n := 1
		for m.NodeMask>>uint(n-1) != 1 {
			n++
		}
		fmt.Fprintf(&b, "--%s %d", OptLocalNode, n)
	} else {
		fmt.Fprintf(&b, "--%s %#x", OptLocalNodemask, m.NodeMask)
	}
	fmt.Fprintf(&b, " --%s 0x%08x", OptHashSeed, m.Seed)
	if m.Hash != HashXtCluster {
		fmt.Fprintf(&b, " --%s %s", OptHash, m.Hash)
	}
	return b.String()
}
