package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// The command line is a cobra command tree: GNU-style options (--name
// value or --name=value) anywhere on the line, -h/--help everywhere,
// shell completions and man pages generated from the same tree. Each
// command's RunE calls the command's run function, which prints its own
// messages and returns an exit status; dispatch turns everything else
// cobra reports (an unknown option or command, a missing value, an
// unexpected argument) into a one-line error, a pointer to --help and
// exit status 2.

// exitError carries a run function's exit status through cobra; the run
// function has printed its messages already.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// status turns a run function's exit status into RunE's error.
func status(code int) error {
	if code == exitOK {
		return nil
	}
	return exitError(code)
}

// usageError is a wrong command line: dispatch prints it with a pointer
// to the command's --help and exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// noArgs refuses positional arguments (a command that takes none used to
// ignore them).
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q (%s takes no arguments, only options)", args[0], cmd.Name())
	}
	return nil
}

func init() {
	cobra.EnableCommandSorting = false // newRoot's order: the demo first
}

// rootDescription opens `xdpcluster --help`.
const rootDescription = "xdpcluster: share traffic between nodes like iptables -m cluster, at AF_XDP speed"

// newRoot builds the command tree for one dispatch; the commands write to
// e's streams.
func newRoot(e env) *cobra.Command {
	root := &cobra.Command{
		Use:   "xdpcluster COMMAND [options]",
		Short: "share traffic between nodes like iptables -m cluster, at AF_XDP speed",
		Long: `xdpcluster shares traffic between Linux gateways or back-end servers
without a load balancer, deciding like the kernel's iptables -m cluster
match, in user space at AF_XDP speed.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	showVersion := root.Flags().Bool("version", false, "print the version and build information, as the version command")
	root.RunE = func(cmd *cobra.Command, args []string) error {
		if *showVersion {
			return status(runVersion(e))
		}
		// No command: the list of commands, on standard error, exit 2.
		cmd.SetOut(e.stderr)
		cmd.HelpFunc()(cmd, args)
		return exitError(exitUsage)
	}
	root.AddCommand(demoCmd(e), runCmdLine(e), checkCmd(e), ctlCmd(e), ownerCmd(e), simulateCmd(e), versionCmd(e), genManCmd())
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetHelpFunc(printHelp)
	root.SetHelpCommand(helpCmd())
	root.SetUsageFunc(func(cmd *cobra.Command) error { printHelp(cmd, nil); return nil })
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return &usageError{err.Error()} })
	return root
}

// finish sets what every command of the tree has: the synopsis as written
// (no "[flags]" appended), -h/--help described alike.
func finish(c *cobra.Command) {
	c.DisableFlagsInUseLine = true
	c.DisableAutoGenTag = true    // no "auto generated" section in the man pages
	c.Short = lowerFirst(c.Short) // cobra's own commands' too
	if c.Flags().Lookup("help") == nil {
		c.Flags().BoolP("help", "h", false, "show this help and exit")
	}
	for _, sub := range c.Commands() {
		finish(sub)
	}
}

// dispatch runs the command line args (without the program name) and
// returns the exit status: main's entry and the tests'.
func dispatch(e env, args []string) int {
	if args == nil {
		args = []string{} // cobra reads os.Args for a nil slice
	}
	root := newRoot(e)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd(args...)
	finish(root)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	var ee exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return int(ee)
	}
	// A wrong command line: cobra's own errors (an unknown command, a
	// missing option value) and ours.
	msg, suggest, _ := strings.Cut(err.Error(), "\n\nDid you mean this?\n")
	msg, _, _ = strings.Cut(msg, "\n")
	if s := strings.Fields(suggest); len(s) > 0 {
		msg += " (did you mean " + strings.Join(s, " or ") + "?)"
	}
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(e.stderr, "%s: %s\n", cmd.CommandPath(), strings.TrimRight(msg, "\n"))
	if cmd == root || cmd.Name() == "help" && cmd.Parent() == root {
		fmt.Fprintf(e.stderr, "Run 'xdpcluster help' for the list of commands.\n")
	} else {
		fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return exitUsage
}

// printHelp is every command's --help: the synopsis, the description,
// examples, the options (the command's and those it inherits, in one
// list), the subcommands, to standard output (exit 0).
func printHelp(cmd *cobra.Command, _ []string) {
	w := cmd.OutOrStdout()
	if !cmd.HasParent() {
		fmt.Fprintf(w, "%s\n\n", rootDescription)
	}
	fmt.Fprintf(w, "Usage: %s\n", cmd.UseLine())
	desc := strings.TrimSpace(cmd.Long)
	if desc == "" {
		desc = upperFirst(cmd.Short) + "."
	}
	if cmd.HasParent() {
		fmt.Fprintf(w, "\n%s\n", desc)
	}
	if cmd.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\nCommands:\n")
		width := 0
		for _, c := range cmd.Commands() {
			if c.IsAvailableCommand() || c.Name() == "help" {
				width = max(width, len(c.Name()))
			}
		}
		for _, c := range cmd.Commands() {
			if c.IsAvailableCommand() || c.Name() == "help" {
				fmt.Fprintf(w, "  %-*s  %s\n", width, c.Name(), c.Short)
			}
		}
	}
	if cmd.Example != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(cmd.Example, "\n"))
	}
	fs := pflag.NewFlagSet(cmd.Name(), pflag.ContinueOnError)
	fs.AddFlagSet(cmd.NonInheritedFlags())
	fs.AddFlagSet(cmd.InheritedFlags())
	if fs.HasAvailableFlags() {
		fmt.Fprintf(w, "\nOptions:\n%s", fs.FlagUsagesWrapped(100))
	}
	switch {
	case !cmd.HasParent():
		fmt.Fprintf(w, "\nRun 'xdpcluster COMMAND --help' for a command's options.\n")
	case cmd.HasAvailableSubCommands():
		fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's options.\n", cmd.CommandPath())
	}
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// helpCmd is `xdpcluster help [COMMAND...]`: the command's --help; an
// unknown command is a usage error (cobra's own help printed the list of
// commands, exit 0).
func helpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND]",
		Short: "show the help of a command (as COMMAND --help)",
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			if err != nil || target == nil || len(rest) > 0 {
				return usagef("unknown command %q", strings.Join(args, " "))
			}
			printHelp(target, nil)
			return nil
		},
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			target, _, err := c.Root().Find(args)
			if err != nil || target == nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range target.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
	}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func versionCmd(e env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version and build information",
		Args:  noArgs,
		RunE:  func(*cobra.Command, []string) error { return status(runVersion(e)) },
	}
}

func checkCmd(e env) *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "check [--config FILE]",
		Short: "validate a configuration file and print the effective configuration",
		Long: `Validate a configuration file and print the effective configuration: every
key with the value in force, defaults filled in (conntrack timeouts
included), numbers as the file writes them (hash_seed: 0xdeadbeef stays
hex), and the cluster match it describes. The output is itself a valid
configuration file with the same settings. Exit status 0 when the file is
valid, 1 with every problem named by its key when it is not.`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error { return status(runCheck(e, path)) },
	}
	c.Flags().StringVar(&path, "config", defaultConfig, "configuration `FILE`")
	return c
}

func runCmdLine(e env) *cobra.Command {
	var o runOptions
	c := &cobra.Command{
		Use:   "run [--config FILE]",
		Short: "run the daemon: dataplane, ARP/ND, metrics, control API",
		Long: `Run the daemon: attach the dataplane to the data interfaces, answer ARP/ND
for the cluster addresses, serve Prometheus metrics and the control API.
SIGHUP re-reads the configuration (a bad file keeps the running one; the
node mask and invert flag change without a restart); SIGINT and SIGTERM
detach everything and exit. Signals that arrive while the daemon starts
are acted on once it has started. Needs root (or CAP_NET_ADMIN,
CAP_NET_RAW, CAP_BPF, CAP_PERFMON, CAP_IPC_LOCK; CAP_SYS_ADMIN for kernels before 5.8).`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error { return status(runRun(e, &o)) },
	}
	c.Flags().StringVar(&o.config, "config", defaultConfig, "configuration `FILE`")
	return c
}

func demoCmd(e env) *cobra.Command {
	var o demoOptions
	c := &cobra.Command{
		Use:   "demo [--nodes N] [--clients N] [--duration D] [--io auto|afxdp|afpacket]",
		Short: "a live 3-node cluster in network namespaces on this machine (root)",
		Long:  strings.TrimSpace(demoDescription),
		Args:  noArgs,
		RunE:  func(*cobra.Command, []string) error { return status(runDemo(e, &o)) },
	}
	f := c.Flags()
	f.IntVar(&o.nodes, "nodes", 3, "cluster nodes, 1..8")
	f.IntVar(&o.clients, "clients", 40, "IPv4 client addresses (plus a few IPv6 ones), 1..200")
	f.DurationVar(&o.duration, "duration", 0, "stop the traffic after this long (0: run until Ctrl-C)")
	f.StringVar(&o.seed, "seed", "0xdeadbeef", "cluster hash seed")
	f.IntVar(&o.port, "metrics-port", 9477, "first metrics port on 127.0.0.1 (node N uses port+N-1)")
	f.StringVar(&o.io, "io", "auto", "the nodes' dataplane.io: afxdp (AF_XDP, the fast path in XDP), afpacket (raw sockets, the fast path in tc) or auto (on the demo's veths: afpacket)")
	return c
}

// demoOptions are demo's options.
type demoOptions struct {
	nodes, clients, port int
	duration             time.Duration
	seed, io             string
}

// runOptions are run's options.
type runOptions struct{ config string }

// genManCmd writes a man page for every command (hidden: the build uses
// it, `make man`).
func genManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "write the man pages of every command into DIR",
		Hidden: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("want one argument, the directory to write the man pages into; got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "xdpcluster gen-man: %v\n", err)
				return exitError(exitFail)
			}
			root := cmd.Root()
			// The pages document the command line, not this command.
			header := &doc.GenManHeader{Section: "1", Source: "xdpcluster " + version, Manual: "xdpcluster manual"}
			if err := doc.GenManTree(root, header, dir); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "xdpcluster gen-man: %s: %v\n", dir, err)
				return exitError(exitFail)
			}
			return nil
		},
	}
}
