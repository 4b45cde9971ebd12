// Package daemontest starts a daemon in-process for tests of the daemon
// and of what it serves (metrics, control API).
package daemontest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/xdpcluster/xdpcluster/config"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
)

// Start writes cfgText to dir/config.yaml, starts a daemon's dataplane on
// node and serves it; Stop is left to the caller (and done at cleanup).
func Start(t testing.TB, node *netns.NS, dir, cfgText string) *daemon.Daemon {
	t.Helper()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d := daemon.New(path, cfg, nil)
	if err := node.Do(d.StartDataplane); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	if err := d.Serve(); err != nil {
		t.Fatal(err)
	}
	return d
}
