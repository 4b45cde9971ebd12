package gateway

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
)

// snapshotParams are the values every connection's stored bucket depends on.
func snapshotParams(m cluster.Match) conntrack.SnapshotParams {
	return conntrack.SnapshotParams{TotalNodes: m.TotalNodes, Seed: m.Seed, Hash: uint8(m.Hash)}
}

// restoreSnapshot fills the (new, empty) connection table from the
// snapshot at path, before the workers run. The file is renamed first and
// removed after reading, so it is never restored twice. A snapshot that
// cannot be used leaves the table empty and is logged with the reason.
func (g *Gateway) restoreSnapshot(path string, m cluster.Match, maxAge time.Duration) {
	notRestored := func(err error) {
		g.log.Warn("connection table snapshot not restored: starting with an empty table", "path", path, "reason", err)
	}
	claimed := path + ".reading"
	if err := os.Rename(path, claimed); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			g.log.Info("no connection table snapshot: starting with an empty table", "path", path)
		} else {
			notRestored(err)
		}
		return
	}
	defer os.Remove(claimed)
	f, err := os.Open(claimed)
	if err != nil {
		notRestored(err)
		return
	}
	defer f.Close()
	info, err := g.tracker.ReadSnapshot(f, snapshotParams(m), g.clock.Now(), time.Now(), maxAge)
	if err != nil {
		notRestored(err)
		return
	}
	g.log.Info("connection table restored", "path", path, "connections", info.Restored, "expired_while_down", info.Expired,
		"saved_ago", time.Since(info.Saved).Round(time.Millisecond).String())
}

// saveSnapshot writes the connection table to path, atomically (a
// temporary file in the same directory, mode 0600, synced, then renamed),
// once the workers have stopped.
func (g *Gateway) saveSnapshot(path string, m cluster.Match) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("save connection table snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("save connection table snapshot to %s: %w", path, err)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	n, err := g.tracker.WriteSnapshot(f, snapshotParams(m), g.clock.Now(), time.Now())
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	g.log.Info("connection table saved", "path", path, "connections", n)
	return nil
}
