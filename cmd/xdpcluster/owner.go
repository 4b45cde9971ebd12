package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/xdpcluster/xdpcluster/cluster"
)

const ownerDescription = `
Print, for each address, the node that owns connections from it: one line
"ADDR NODE", NODE 1-based as in --cluster-local-node (with --json, one JSON
object a line: {"address":"ADDR","node":NODE}). The decision is the
kernel's xt_cluster hash (IPv6: only the first 32 bits, as the kernel does),
unless --hash full is given.

Addresses come from the arguments or, with none, from standard input, one
per line (blank lines and lines starting with # are skipped). A line that
is not an address is reported on standard error with its line number, the
other lines are still answered, and the exit status is 1.

Numbers are read as iptables reads them: decimal, 0x hex, or 0-prefixed
octal. Instead of the options, --iptables takes a rule as iptables -S
prints it.`

const ownerExamples = `  xdpcluster owner --cluster-total-nodes 3 --cluster-hash-seed 0xdeadbeef 10.0.0.1 2001:db8::1
  xdpcluster owner 10.0.0.1 --cluster-total-nodes 3 --cluster-hash-seed 0xdeadbeef --json
  xdpcluster owner --iptables "$(iptables -t mangle -S PREROUTING | grep -m1 cluster)" < clients.txt`

// ownerOptions are owner's options.
type ownerOptions struct {
	total, seed, hash, rule string
	json                    bool
}

func ownerCmd(e env) *cobra.Command {
	var o ownerOptions
	c := &cobra.Command{
		Use:     "owner --cluster-total-nodes N --cluster-hash-seed S [--hash MODE] [--json] [ADDR ...]",
		Short:   "print which node owns each address (1-based, as --cluster-local-node)",
		Long:    strings.TrimSpace(ownerDescription),
		Example: ownerExamples,
		Args:    cobra.ArbitraryArgs,
		RunE:    func(_ *cobra.Command, args []string) error { return status(runOwner(e, &o, args)) },
	}
	f := c.Flags()
	f.StringVar(&o.total, cluster.OptTotalNodes, "", "number of nodes in the cluster, `N` = 1..32 (required)")
	f.StringVar(&o.seed, cluster.OptHashSeed, "", "hash seed `S`, 0..0xffffffff (required)")
	f.StringVar(&o.hash, "hash", "xt_cluster", "hash `MODE`: \"xt_cluster\" (kernel-exact) or \"full\" (whole IPv6 address)")
	f.StringVar(&o.rule, "iptables", "", "take the options from this iptables `RULE` or option text instead")
	f.BoolVar(&o.json, "json", false, `print one JSON object a line, {"address":"ADDR","node":NODE}`)
	return c
}

func runOwner(e env, o *ownerOptions, args []string) int {
	m, err := ownerMatch(o.total, o.seed, o.hash, o.rule)
	if err != nil {
		fmt.Fprintf(e.stderr, "xdpcluster owner: %v\n", err)
		return exitUsage
	}
	out := bufio.NewWriterSize(e.stdout, 64<<10)
	defer out.Flush()
	if len(args) > 0 {
		status := exitOK
		for _, a := range args {
			if err := ownerLine(out, &m, []byte(a), o.json); err != nil {
				fmt.Fprintf(e.stderr, "xdpcluster owner: argument %s: %v\n", echo([]byte(a)), err)
				status = exitFail
			}
		}
		return status
	}
	return ownerStream(e, out, &m, o.json)
}

// ownerMatch builds the match from the flags (cluster.Options.Match).
// Only total, seed and hash matter for ownership; the node is node 1, to
// make the match valid.
func ownerMatch(total, seed, hash, rule string) (cluster.Match, error) {
	o := cluster.Options{Iptables: rule, Hash: hash}
	switch {
	case rule != "" && (total != "" || seed != ""):
		return cluster.Match{}, errors.New("--iptables cannot be combined with --cluster-total-nodes or --cluster-hash-seed")
	case rule != "":
	case total == "":
		return cluster.Match{}, fmt.Errorf("--%s is required (1..32)", cluster.OptTotalNodes)
	case seed == "":
		return cluster.Match{}, fmt.Errorf("--%s is required (0..0xffffffff; the seed of your -m cluster rules)", cluster.OptHashSeed)
	default:
		o.LocalNode = 1
		for _, f := range []struct {
			opt, text string
			v         *uint64
		}{{cluster.OptTotalNodes, total, &o.TotalNodes}, {cluster.OptHashSeed, seed, &o.Seed}} {
			n, err := cluster.ParseNumber(f.text)
			if err != nil {
				return cluster.Match{}, &cluster.OptionError{Option: f.opt, Value: f.text, Rule: "not a number (decimal, 0x hex, or 0-prefixed octal)" + cluster.OctalHint(f.text)}
			}
			*f.v = n
		}
	}
	return o.Match()
}

// ownerStream answers one address per line of standard input.
func ownerStream(e env, out *bufio.Writer, m *cluster.Match, asJSON bool) int {
	in := bufio.NewReaderSize(e.stdin, 64<<10)
	status := exitOK
	for lineNo := 1; ; lineNo++ {
		line, err := in.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// An absurdly long line: report it once, with its start and
			// length, and skip to its end without keeping it.
			head := fmt.Sprintf("%q...", line[:echoMax])
			n := len(line)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = in.ReadSlice('\n')
				n += len(line)
			}
			if len(line) > 0 && line[len(line)-1] == '\n' {
				n--
			}
			fmt.Fprintf(e.stderr, "xdpcluster owner: line %d: %d bytes, over the %d-byte limit, not an address: %s\n", lineNo, n, in.Size()-1, head)
			status = exitFail
			line = nil // nothing of it is answered
		}
		if len(line) > 0 {
			text := bytes.TrimSpace(line)
			if len(text) > 0 && text[0] != '#' {
				if perr := ownerLine(out, m, text, asJSON); perr != nil {
					fmt.Fprintf(e.stderr, "xdpcluster owner: line %d: %s: %v\n", lineNo, echo(text), perr)
					status = exitFail
				}
			}
		}
		if err == io.EOF {
			return status
		}
		if err != nil {
			fmt.Fprintf(e.stderr, "xdpcluster owner: reading standard input: %v\n", err)
			return exitFail
		}
	}
}

// echoMax is how much of a bad line or argument an error message quotes.
const echoMax = 64

// echo quotes text for an error message: whole if short, else its first
// echoMax bytes, "..." and its length, so a huge line cannot flood the
// terminal.
func echo(text []byte) string {
	if len(text) <= echoMax {
		return fmt.Sprintf("%q", text)
	}
	return fmt.Sprintf("%q... (%d bytes)", text[:echoMax], len(text))
}

var errNotAddr = errors.New("not an IPv4 or IPv6 address")

// ownerLine writes "ADDR NODE\n" for one address, or with asJSON
// {"address":"ADDR","node":NODE}.
func ownerLine(out *bufio.Writer, m *cluster.Match, text []byte, asJSON bool) error {
	var node uint32
	if ip, ok := parseIPv4(text); ok {
		node = m.Bucket4(&ip)
	} else {
		a, err := netip.ParseAddr(string(text))
		if err != nil {
			return errNotAddr
		}
		if a.Is4() {
			ip := a.As4()
			node = m.Bucket4(&ip)
		} else {
			ip := a.As16()
			node = m.Bucket16(&ip)
		}
	}
	if asJSON {
		out.WriteString(`{"address":`)
		writeJSONString(out, text)
		out.WriteString(`,"node":`)
	} else {
		out.Write(text)
		out.WriteByte(' ')
	}
	if n := node + 1; n >= 10 {
		out.WriteByte(byte('0' + n/10))
		out.WriteByte(byte('0' + n%10))
	} else {
		out.WriteByte(byte('0' + n))
	}
	if asJSON {
		out.WriteByte('}')
	}
	return out.WriteByte('\n')
}

// writeJSONString writes text as a JSON string. An address is plain
// ASCII but for an IPv6 zone, which may hold anything: that is escaped.
func writeJSONString(out *bufio.Writer, text []byte) {
	for _, c := range text {
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			b, _ := json.Marshal(string(text))
			out.Write(b)
			return
		}
	}
	out.WriteByte('"')
	out.Write(text)
	out.WriteByte('"')
}

// parseIPv4 is an allocation-free strict dotted-quad parser (no leading
// zeros, as net/netip) for the common case; everything else goes to netip.
func parseIPv4(b []byte) (ip [4]byte, ok bool) {
	part, digits, val := 0, 0, 0
	for i := 0; i <= len(b); i++ {
		if i == len(b) || b[i] == '.' {
			if digits == 0 || part > 3 {
				return ip, false
			}
			ip[part] = byte(val)
			part, digits, val = part+1, 0, 0
			continue
		}
		c := b[i]
		if c < '0' || c > '9' || (digits == 1 && val == 0) {
			return ip, false
		}
		val = val*10 + int(c-'0')
		digits++
		if val > 255 {
			return ip, false
		}
	}
	return ip, part == 4
}
