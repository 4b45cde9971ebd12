package metrics

import (
	"runtime/debug"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdpcluster/xdpcluster/node/backend"
)

var icmpInnerDesc = desc("icmp_errors_by_inner_total", "Back-end mode: ICMP errors decided by the destination of the packet they embed.", "interface")

// Backend is a prometheus.Collector over a back-end node: the program's
// verdicts as xdpcluster_packets_total{path="xdp",verdict="owned"|"foreign"|
// "passed"|"malformed"}, so the same dashboards show each node's share.
type Backend struct {
	n       *backend.Node
	version string
}

// NewBackend returns a collector for n.
func NewBackend(n *backend.Node, version string) *Backend { return &Backend{n: n, version: version} }

// Describe implements prometheus.Collector.
func (c *Backend) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packetsDesc, icmpInnerDesc, arpDesc, maskDesc, totalDesc, localDesc, infoDesc, modeDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Backend) Collect(ch chan<- prometheus.Metric) {
	names, modes := c.n.Interfaces(), c.n.InterfaceModes()
	for i, p := range c.n.Programs() {
		st, err := p.Stats()
		if err != nil {
			continue
		}
		for _, v := range []int{backend.StatOwned, backend.StatForeign, backend.StatOther, backend.StatMalformed} {
			ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(st[v]), names[i], PathXDP, backend.StatNames[v])
		}
		ch <- prometheus.MustNewConstMetric(icmpInnerDesc, prometheus.CounterValue, float64(st[backend.StatICMPInner]), names[i])
		ch <- prometheus.MustNewConstMetric(modeDesc, prometheus.GaugeValue, 1, modeValues(names[i], modes[i])...)
	}
	for _, r := range c.n.Responders() {
		s := r.Stats()
		for _, e := range []struct {
			proto, event string
			v            uint64
		}{{"arp", "requests", s.ARPRequests}, {"arp", "replies", s.ARPReplies}, {"nd", "requests", s.NSRequests}, {"nd", "replies", s.NAReplies},
			{"any", "announcements", s.Announcements}, {"any", "rate_limited", s.RateLimited}, {"any", "ignored", s.Ignored}, {"any", "errors", s.Errors},
			{"any", "socket_drops", s.SocketDrops}} {
			ch <- prometheus.MustNewConstMetric(arpDesc, prometheus.CounterValue, float64(e.v), r.Interface(), e.proto, e.event)
		}
	}
	m := c.n.Match()
	ch <- prometheus.MustNewConstMetric(maskDesc, prometheus.GaugeValue, float64(m.NodeMask))
	ch <- prometheus.MustNewConstMetric(totalDesc, prometheus.GaugeValue, float64(m.TotalNodes))
	for n := 0; n < int(m.TotalNodes); n++ {
		v := 0.0
		if m.OwnsNode(n) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(localDesc, prometheus.GaugeValue, v, strconv.Itoa(n+1))
	}
	gover := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		gover = bi.GoVersion
	}
	ch <- prometheus.MustNewConstMetric(infoDesc, prometheus.GaugeValue, 1, c.version, gover, m.Hash.String())
}
