package gateway

import "github.com/xdpcluster/xdpcluster/conntrack"

// ExportConnections streams the connection table as records for a peer's
// state resync (conntrack.Table.Export), while the workers run.
func (g *Gateway) ExportConnections(emit func(recs []byte) error) (int, error) {
	return g.tracker.Export(g.clock.Now(), emit)
}

// MergeConnections merges records a peer exported into the running
// connection table (conntrack.Table.Merge).
func (g *Gateway) MergeConnections(recs []byte) (conntrack.MergeStats, error) {
	return g.tracker.Merge(recs, snapshotParams(g.dp.Match()), g.clock.Now())
}

// MaxConnections is the connection table's size limit.
func (g *Gateway) MaxConnections() int {
	if n := g.cfg.Conntrack.MaxEntries; n > 0 {
		return n
	}
	return conntrack.DefaultMaxEntries
}
