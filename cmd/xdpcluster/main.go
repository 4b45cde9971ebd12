// Command xdpcluster shares traffic between Linux gateways or back-end
// servers without a load balancer, deciding like the kernel's
// `iptables -m cluster` match, in user space at AF_XDP speed.
//
// Run `xdpcluster help` for the list of commands and `xdpcluster CMD --help`
// for each command's options.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// env is what a command gets from the process, so tests can run commands
// in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

type command struct {
	name    string
	summary string
	run     func(e env, args []string) int
}

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1 // the command ran but found bad input or failed
	exitUsage = 2 // the command line itself is wrong
)

func commands() []command {
	return []command{
		{"demo", "a live 3-node cluster in network namespaces on this machine (root)", runDemo},
		{"run", "run the daemon: dataplane, ARP/ND, metrics, control API", runRun},
		{"check", "validate a configuration file and print the effective configuration", runCheck},
		{"ctl", "control a running daemon: status, takeover N, release N, set-mask M, reload", runCtl},
		{"owner", "print which node owns each address (1-based, as --cluster-local-node)", runOwner},
		{"simulate", "replay a capture: each node's share, imbalance, failover, seed choice", runSimulate},
		{"version", "print the version and build information", runVersion},
	}
}

func main() {
	os.Exit(dispatch(env{os.Stdin, os.Stdout, os.Stderr}, os.Args[1:]))
}

func dispatch(e env, args []string) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return dispatch(e, []string{args[1], "--help"})
		}
		usage(e.stdout)
		return exitOK
	case "--version", "-version":
		return runVersion(e, nil)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(e, args[1:])
		}
	}
	fmt.Fprintf(e.stderr, "xdpcluster: unknown command %q; run 'xdpcluster help' for the list\n", args[0])
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "xdpcluster: share traffic between nodes like iptables -m cluster, at AF_XDP speed\n\n")
	fmt.Fprintf(w, "Usage: xdpcluster COMMAND [OPTIONS]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'xdpcluster COMMAND --help' for a command's options.\n")
}

// newFlags returns a flag set whose --help prints the synopsis, the
// description and the options, to stdout, and whose errors go to stderr.
func newFlags(e env, name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: xdpcluster %s %s\n\n%s\n", name, synopsis, strings.TrimSpace(description))
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(w, "\nOptions:\n")
			fs.VisitAll(func(f *flag.Flag) {
				name, help := flag.UnquoteUsage(f)
				fmt.Fprintf(w, "  --%s %s\n    \t%s", f.Name, name, help)
				if f.DefValue != "" && f.DefValue != "false" {
					fmt.Fprintf(w, " (default %s)", f.DefValue)
				}
				fmt.Fprintln(w)
			})
		}
	}
	return fs
}

// parseFlags parses args; it reports whether the command should go on and,
// if not, the exit status (0 for --help).
func parseFlags(e env, fs *flag.FlagSet, args []string) (bool, int) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(e.stdout)
			fs.Usage()
			return false, exitOK
		}
	}
	if err := fs.Parse(args); err != nil {
		return false, exitUsage
	}
	return true, exitOK
}

func runVersion(e env, args []string) int {
	fs := newFlags(e, "version", "", "Print the version and build information.")
	if ok, code := parseFlags(e, fs, args); !ok {
		return code
	}
	fmt.Fprintf(e.stdout, "xdpcluster %s\n", version)
	if bi, ok := debug.ReadBuildInfo(); ok {
		fmt.Fprintf(e.stdout, "go: %s\n", bi.GoVersion)
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" || s.Key == "vcs.time" || s.Key == "vcs.modified" {
				fmt.Fprintf(e.stdout, "%s: %s\n", s.Key, s.Value)
			}
		}
	}
	return exitOK
}
