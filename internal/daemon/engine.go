package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/metrics"
	"github.com/xdpcluster/xdpcluster/node/backend"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

// engine is what a role runs: the gateway dataplane or a back-end node.
type engine interface {
	Match() cluster.Match
	SetMatch(cluster.Match) error
	Modes() map[string]string
	Connections() int // tracked connections; -1 for the stateless back end
	Packets() map[string]uint64
	Announce()
	// Health is nil when the dataplane can serve (interfaces up, our XDP
	// program attached), else what is wrong.
	Health() error
	Collector(version string) prometheus.Collector
	Close() error
}

type gatewayEngine struct{ g *gateway.Gateway }

func (e gatewayEngine) Match() cluster.Match           { return e.g.Dataplane().Match() }
func (e gatewayEngine) SetMatch(m cluster.Match) error { return e.g.Dataplane().SetMatch(m) }
func (e gatewayEngine) Connections() int               { return e.g.Tracker().Len() }
func (e gatewayEngine) Close() error                   { return e.g.Close() }
func (e gatewayEngine) Health() error                  { return e.g.Health() }
func (e gatewayEngine) MaxConnections() int            { return e.g.MaxConnections() }
func (e gatewayEngine) ExportConnections(emit func([]byte) error) (int, error) {
	return e.g.ExportConnections(emit)
}
func (e gatewayEngine) MergeConnections(recs []byte) (conntrack.MergeStats, error) {
	return e.g.MergeConnections(recs)
}
func (e gatewayEngine) Collector(v string) prometheus.Collector {
	return metrics.New(e.g, v)
}
func (e gatewayEngine) Modes() map[string]string {
	out, modes := map[string]string{}, e.g.Modes()
	for i, ifc := range e.g.Dataplane().Ifaces() {
		out[ifc.Name] = modes[i]
	}
	return out
}
func (e gatewayEngine) Packets() map[string]uint64 {
	out := map[string]uint64{}
	pkts, _, _ := e.g.Dataplane().Totals(-1)
	for v, n := range pkts {
		if n != 0 {
			out[dataplane.Verdict(v).String()] = n
		}
	}
	return out
}
func (e gatewayEngine) Announce() {
	for _, r := range e.g.Responders() {
		r.Announce()
	}
}

type backendEngine struct{ n *backend.Node }

func (e backendEngine) Match() cluster.Match           { return e.n.Match() }
func (e backendEngine) SetMatch(m cluster.Match) error { return e.n.SetMatch(m) }
func (e backendEngine) Connections() int               { return -1 }
func (e backendEngine) Close() error                   { return e.n.Close() }
func (e backendEngine) Health() error                  { return e.n.Health() }
func (e backendEngine) Collector(v string) prometheus.Collector {
	return metrics.NewBackend(e.n, v)
}
func (e backendEngine) Modes() map[string]string {
	out, modes := map[string]string{}, e.n.Modes()
	for i, name := range e.n.Interfaces() {
		out[name] = modes[i]
	}
	return out
}
func (e backendEngine) Packets() map[string]uint64 {
	out := map[string]uint64{}
	for _, p := range e.n.Programs() {
		if st, err := p.Stats(); err == nil {
			for i, v := range st {
				if v != 0 {
					out[backend.StatNames[i]] += v
				}
			}
		}
	}
	return out
}
func (e backendEngine) Announce() {
	for _, r := range e.n.Responders() {
		r.Announce()
	}
}
