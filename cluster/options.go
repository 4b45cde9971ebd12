package cluster

import "fmt"

// Options are a cluster match as a configuration file or a command line
// gives it: either the text of an iptables rule, or the options one by
// one (a zero number is an option not given). Hash, unless "" or
// "xt_cluster", overrides the hash mode of either.
type Options struct {
	Iptables      string
	TotalNodes    uint64
	LocalNode     uint64 // 1-based
	LocalNodemask uint64
	Seed          uint64
	Invert        bool
	Hash          string
}

// OptIptables names Options.Iptables in an *OptionError.
const OptIptables = "iptables"

// Match returns the valid match the options describe. Every error is an
// *OptionError naming the option (OptTotalNodes, OptLocalNode,
// OptLocalNodemask, OptHashSeed, "hash" or OptIptables; for the iptables
// text, its Rule is ParseIptables' error).
func (o Options) Match() (Match, error) {
	m, err := o.match()
	if err != nil {
		return Match{}, err
	}
	if o.Hash != "" && o.Hash != HashXtCluster.String() {
		if m.Hash, err = ParseHashMode(o.Hash); err != nil {
			return Match{}, err
		}
	}
	return m, m.Validate()
}

func (o Options) match() (Match, error) {
	if o.Iptables != "" {
		if o.TotalNodes != 0 || o.LocalNode != 0 || o.LocalNodemask != 0 || o.Seed != 0 || o.Invert {
			return Match{}, &OptionError{Option: OptIptables, Rule: "give either the iptables text or the separate options, not both"}
		}
		m, err := ParseIptables(o.Iptables)
		if err != nil {
			return Match{}, &OptionError{Option: OptIptables, Rule: err.Error()}
		}
		return m, nil
	}
	if o.TotalNodes < 1 || o.TotalNodes > MaxNodes {
		return Match{}, &OptionError{OptTotalNodes, fmt.Sprint(o.TotalNodes), fmt.Sprintf("must be 1..%d", MaxNodes)}
	}
	if o.Seed > 0xffffffff {
		return Match{}, &OptionError{OptHashSeed, fmt.Sprintf("%#x", o.Seed), "must be 0..0xffffffff"}
	}
	m := Match{TotalNodes: uint32(o.TotalNodes), Seed: uint32(o.Seed), Invert: o.Invert}
	switch {
	case o.LocalNode != 0 && o.LocalNodemask != 0:
		return Match{}, &OptionError{Option: OptLocalNode, Rule: "give one, not both: --" + OptLocalNode + " or --" + OptLocalNodemask}
	case o.LocalNode != 0:
		mask, err := NodeMask(o.LocalNode, o.TotalNodes)
		if err != nil {
			return Match{}, err
		}
		m.NodeMask = mask
	case o.LocalNodemask != 0:
		if o.LocalNodemask >= 1<<o.TotalNodes {
			return Match{}, &OptionError{OptLocalNodemask, fmt.Sprintf("%#x", o.LocalNodemask),
				fmt.Sprintf("names a node above --%s %d (must be below %#x)", OptTotalNodes, o.TotalNodes, uint64(1)<<o.TotalNodes)}
		}
		m.NodeMask = uint32(o.LocalNodemask)
	default:
		return Match{}, &OptionError{Option: OptLocalNode, Rule: "required: --" + OptLocalNode + " or --" + OptLocalNodemask + " (which node or nodes this is)"}
	}
	return m, nil
}
