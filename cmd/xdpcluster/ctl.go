package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
)

const ctlDescription = `
Talk to a running daemon through its control socket: show its status,
check its health (exit 0 when it serves, 1 with the reason when not: for
keepalived's track_script and other probes), take over or release another
node's share (what keepalived calls on failover), set the node mask, or
reload the configuration. Every command but health prints the daemon's
status afterwards; --json prints the daemon's reply as it sent it
(indented) instead. Node numbers and masks are read as iptables reads
them: decimal, 0x hex, or 0-prefixed octal.`

// ctlOptions are the options every ctl command takes.
type ctlOptions struct {
	socket string
	json   bool
}

// ctlCommands are ctl's commands: name, argument, summary.
var ctlCommands = []struct{ name, arg, short string }{
	{"status", "", "show the daemon's status: match, share, interfaces, packets, membership"},
	{"health", "", "exit 0 if the daemon serves, 1 with the reason if not (for probes)"},
	{"takeover", "N", "serve node N's share too (1-based, as --cluster-local-node)"},
	{"release", "N", "stop serving node N's share"},
	{"set-mask", "M", "serve exactly the nodes of mask M (a non-zero 32-bit mask)"},
	{"reload", "", "re-read the configuration file (as SIGHUP)"},
}

func ctlCmd(e env) *cobra.Command {
	var o ctlOptions
	c := &cobra.Command{
		Use:     "ctl [--socket PATH] [--json] COMMAND [ARG]",
		Short:   "control a running daemon: status, health, takeover N, release N, set-mask M, reload",
		Long:    strings.TrimSpace(ctlDescription),
		Example: "  xdpcluster ctl status\n  xdpcluster ctl status --json | jq .packets\n  xdpcluster ctl --socket /run/xdpcluster/control.sock takeover 2",
		// A command ctl does not have lands here.
		RunE: func(_ *cobra.Command, args []string) error { return status(runCtl(e, &o, args)) },
	}
	pf := c.PersistentFlags()
	pf.StringVar(&o.socket, "socket", "/run/xdpcluster/control.sock", "the daemon's control socket `PATH` (control.socket in its configuration)")
	pf.BoolVar(&o.json, "json", false, "print the daemon's reply as JSON, as it sent it (indented)")
	for _, cc := range ctlCommands {
		use, args := cc.name, cobra.PositionalArgs(noArgs)
		if cc.arg != "" {
			use += " " + cc.arg
			args = cobra.ArbitraryArgs // ctlRequest checks the count and the value
		}
		sub := &cobra.Command{
			Use:   use,
			Short: cc.short,
			Args:  args,
			RunE: func(_ *cobra.Command, args []string) error {
				return status(runCtl(e, &o, append([]string{cc.name}, args...)))
			},
		}
		if cc.arg != "" {
			// "-1" looks like an option to the parser; it is a bad number.
			sub.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
				var ne *pflag.NotExistError
				if errors.As(err, &ne) && ne.GetSpecifiedShortnames() != "" && ne.GetSpecifiedShortnames()[0] >= '0' && ne.GetSpecifiedShortnames()[0] <= '9' {
					_, _, rerr := ctlRequest([]string{cc.name, "-" + ne.GetSpecifiedShortnames()})
					fmt.Fprintf(e.stderr, "xdpcluster ctl: %v\n", rerr)
					return exitError(exitUsage)
				}
				return &usageError{err.Error()}
			})
		}
		c.AddCommand(sub)
	}
	return c
}

// runCtl sends one request and prints the reply.
func runCtl(e env, o *ctlOptions, args []string) int {
	method, path, err := ctlRequest(args)
	if err != nil {
		fmt.Fprintf(e.stderr, "xdpcluster ctl: %v\n", err)
		return exitUsage
	}
	body, err := ctlCall(o.socket, method, path)
	if err != nil {
		fmt.Fprintf(e.stderr, "xdpcluster ctl: %v\n", err)
		return exitFail
	}
	if o.json {
		var out bytes.Buffer
		if err := json.Indent(&out, bytes.TrimSpace(body), "", "  "); err != nil {
			fmt.Fprintf(e.stderr, "xdpcluster ctl: the daemon's reply is not JSON: %v\n", err)
			return exitFail
		}
		out.WriteByte('\n')
		e.stdout.Write(out.Bytes())
		return exitOK
	}
	if path == "/health" {
		fmt.Fprintln(e.stdout, "ready")
		return exitOK
	}
	var st daemon.Status
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(e.stderr, "xdpcluster ctl: the daemon's reply: %v\n", err)
		return exitFail
	}
	printStatus(e.stdout, &st)
	return exitOK
}

// ctlCall sends a request to the control socket and returns the reply's
// body as received; a reply other than 200 is an error with the daemon's
// message.
func ctlCall(sock, method, path string) ([]byte, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	req, err := http.NewRequest(method, "http://xdpcluster"+path, nil)
	if err != nil {
		return nil, fmt.Errorf("control request %s %s: %w", method, path, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w (is xdpcluster running? is --socket right?)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("control socket: reading the reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var m map[string]string
		if json.Unmarshal(body, &m) == nil && m["error"] != "" {
			return nil, errors.New(m["error"])
		}
		return nil, fmt.Errorf("control socket: %s %s: %s", method, path, resp.Status)
	}
	return body, nil
}

// printStatus prints ctl status for people: a header with the daemon's
// version and role, then one "key: value" line each, aligned, and tables
// for the interfaces, the packet counts and the membership, in a stable
// order (by name).
func printStatus(w io.Writer, st *daemon.Status) {
	ver, role, up := st.Version, st.Role, "up "+st.Uptime
	if ver == "" {
		ver = "(version unknown)"
	}
	if role == "" {
		role = "unknown"
	}
	if st.Uptime == "" {
		up = "dataplane not running"
	}
	fmt.Fprintf(w, "xdpcluster %s, role %s, %s\n", ver, role, up)
	mask := "mask " + st.NodeMask
	if st.Invert {
		mask += ", inverted"
	}
	fmt.Fprintf(w, "%-13s%s\n", "match:", st.Match)
	fmt.Fprintf(w, "%-13snode(s) %v of %d (%s)\n", "serves:", st.Serves, st.TotalNodes, mask)
	if st.Connections < 0 {
		fmt.Fprintf(w, "%-13snot tracked (role %s decides each packet in XDP)\n", "connections:", role)
	} else {
		fmt.Fprintf(w, "%-13s%d\n", "connections:", st.Connections)
	}
	if len(st.Interfaces) > 0 {
		fmt.Fprintln(w, "interfaces:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tMODE")
		for _, name := range slices.Sorted(maps.Keys(st.Interfaces)) {
			fmt.Fprintf(tw, "  %s\t%s\n", name, st.Interfaces[name])
		}
		tw.Flush()
	}
	if len(st.Packets) > 0 {
		fmt.Fprintln(w, "packets:")
		names := slices.Sorted(maps.Keys(st.Packets))
		width := len("PACKETS")
		for _, n := range names {
			width = max(width, len(strconv.FormatUint(st.Packets[n], 10)))
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  COUNTER\t%*s\n", width, "PACKETS")
		for _, n := range names {
			fmt.Fprintf(tw, "  %s\t%*d\n", n, width, st.Packets[n])
		}
		tw.Flush()
	}
	if m := st.Membership; m != nil {
		printMembership(w, m)
	}
}

// ctlRequest turns `ctl` arguments into a control API request, checking
// node numbers and masks before anything is sent; values go into the
// query escaped.
func ctlRequest(a []string) (method, path string, err error) {
	switch {
	case len(a) == 1 && a[0] == "status":
		return "GET", "/status", nil
	case len(a) == 1 && a[0] == "health":
		return "GET", "/health", nil
	case len(a) == 1 && a[0] == "reload":
		return "POST", "/reload", nil
	case len(a) == 2 && (a[0] == "takeover" || a[0] == "release"):
		n, err := ctlNumber(a[1], 1, cluster.MaxNodes)
		if err != nil {
			return "", "", fmt.Errorf("%s: node %w", a[0], err)
		}
		return "POST", "/" + a[0] + "?" + url.Values{"node": {strconv.FormatUint(n, 10)}}.Encode(), nil
	case len(a) == 2 && a[0] == "set-mask":
		n, err := ctlNumber(a[1], 1, 0xffffffff)
		if err != nil {
			return "", "", fmt.Errorf("set-mask: mask %w (a non-zero 32-bit mask of nodes)", err)
		}
		return "POST", "/mask?" + url.Values{"mask": {fmt.Sprintf("%#x", n)}}.Encode(), nil
	}
	const want = "want status, health, takeover N, release N, set-mask M or reload"
	switch {
	case len(a) == 0:
		return "", "", errors.New("a command is needed: " + want)
	case a[0] == "takeover" || a[0] == "release":
		return "", "", fmt.Errorf("%s: want one argument, the node N (1..%d); got %d", a[0], cluster.MaxNodes, len(a)-1)
	case a[0] == "set-mask":
		return "", "", fmt.Errorf("set-mask: want one argument, the mask M (0x1..0xffffffff); got %d", len(a)-1)
	case a[0] == "status" || a[0] == "health" || a[0] == "reload":
		return "", "", fmt.Errorf("%s: unexpected argument %q (%s takes none)", a[0], a[1], a[0])
	}
	return "", "", fmt.Errorf("unknown command %q: %s", a[0], want)
}

// ctlNumber reads a number as iptables does and checks it is in lo..hi.
func ctlNumber(s string, lo, hi uint64) (uint64, error) {
	n, err := cluster.ParseNumber(s)
	// A number too big for 64 bits is out of range like any other.
	if err != nil && !strings.Contains(err.Error(), "out of range") {
		return 0, fmt.Errorf("%q: not a number (decimal, 0x hex, or 0-prefixed octal)%s", s, cluster.OctalHint(s))
	}
	if err != nil || n < lo || n > hi {
		if hi > 0xffff {
			return 0, fmt.Errorf("%s: must be %#x..%#x", strings.TrimSpace(s), lo, hi)
		}
		return 0, fmt.Errorf("%s: must be %d..%d", strings.TrimSpace(s), lo, hi)
	}
	return n, nil
}
