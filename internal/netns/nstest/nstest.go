// Package nstest adapts package netns to tests: namespaces that are
// removed by t.Cleanup even when the test fails, and a skip with the remedy
// when the test does not run as root.
package nstest

import (
	"testing"

	"github.com/xdpcluster/xdpcluster/internal/netns"
)

// Require skips the test, saying why and what to do, unless namespaces can
// be created.
func Require(t testing.TB) {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v; run the tests as root (sudo make test) to include this one", err)
	}
}

// New creates a namespace prefix-RANDOM that is deleted when the test ends.
func New(t testing.TB, prefix string) *netns.NS {
	t.Helper()
	Require(t)
	ns, err := netns.Create(prefix)
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return ns
}

// Run runs a command in ns and fails the test if it fails.
func Run(t testing.TB, ns *netns.NS, name string, args ...string) string {
	t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
