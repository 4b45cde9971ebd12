// Command xdpcluster shares traffic between Linux gateways or back-end
// servers without a load balancer, deciding like the kernel's
// `iptables -m cluster` match, in user space at AF_XDP speed.
//
// Run `xdpcluster help` for the list of commands and `xdpcluster CMD --help`
// for each command's options.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// env is what a command gets from the process, so tests can run commands
// in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1 // the command ran but found bad input or failed
	exitUsage = 2 // the command line itself is wrong
)

func main() {
	os.Exit(dispatch(env{os.Stdin, os.Stdout, os.Stderr}, os.Args[1:]))
}

func runVersion(e env) int {
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
