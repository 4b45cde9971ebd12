package daemon

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/xdpcluster/xdpcluster/config"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

// SnapshotFile is the connection table snapshot's name in state_dir: the
// gateway writes it at a graceful stop and reads (then removes) it at the
// next start, so established connections survive a restart of the daemon.
const SnapshotFile = "conntrack.snap"

// withState makes sure state_dir exists and points the gateway's
// connection table snapshot and GRO record into it.
func withState(gc *gateway.Config, c *config.Settings) error {
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return fmt.Errorf("state_dir %s: %w", c.StateDir, err)
	}
	gc.Snapshot = filepath.Join(c.StateDir, SnapshotFile)
	gc.GROState = filepath.Join(c.StateDir, GROStateFile)
	return nil
}

// GROStateFile is, in state_dir, the gateway's record of the interfaces
// whose GRO it turned off (raw sockets), which the next start turns back
// on if the run did not stop cleanly.
const GROStateFile = "gro-off.json"
