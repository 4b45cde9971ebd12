package bench

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/xdpcluster/xdpcluster/internal/netns"
)

// Fatal carries an error from deep inside a harness (bench/e2e,
// bench/tcp) to its main, which recovers it and cleans up (namespaces,
// XDP programs) before exiting.
type Fatal struct{ Err error }

// Must panics with Fatal when err is not nil.
func Must(err error) {
	if err != nil {
		panic(Fatal{err})
	}
}

// Run runs a command in ns and returns its trimmed output; a failure is
// Fatal.
func Run(ns *netns.NS, args ...string) string {
	out, err := ns.Run(args[0], args[1:]...)
	Must(err)
	return strings.TrimSpace(string(out))
}

// Recover is a harness main's deferred handler: a Fatal raised by Must is
// printed under name and makes *code 1; cleanup (namespaces, XDP
// programs) runs either way; any other panic goes on.
func Recover(name string, code *int, cleanup func()) {
	r := recover()
	cleanup()
	if r == nil {
		return
	}
	f, ok := r.(Fatal)
	if !ok {
		panic(r)
	}
	fmt.Fprintln(os.Stderr, name+":", f.Err)
	*code = 1
}

// Spread returns the minimum, median and maximum of f over samples (at
// least one): the harnesses' min/median/max over a scenario's runs.
func Spread[S any](samples []S, f func(S) float64) (lo, mid, hi float64) {
	xs := make([]float64, len(samples))
	for i, s := range samples {
		xs[i] = f(s)
	}
	sort.Float64s(xs)
	return xs[0], xs[len(xs)/2], xs[len(xs)-1]
}
