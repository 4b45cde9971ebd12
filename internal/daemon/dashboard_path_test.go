package daemon_test

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestDashboardSumsPaths: the dashboard's share, imbalance and rate
// panels count a node's packets on every path. A real Prometheus scrapes
// two exporters that serve xdpcluster_packets_total, bytes_total and
// owner_packets_total with counters growing at known rates, split
// between path="xdp" (the kernel fast path) and path="afxdp" (the
// workers) unevenly; each panel must give the value of the sums. A panel
// that took the largest series per node (max by (node) of a family with
// a path label) or one path only would be off by a third or more.
func TestDashboardSumsPaths(t *testing.T) {
	dash := readDashboard(t)

	// Per second. Node 1 forwards 400 packets/s (100 by the workers, 300
	// in XDP), node 2 200 (150 and 50). Both see the cluster's split of
	// owned packets, node 1's 400 and node 2's 200, split between the
	// paths differently on each.
	type series struct {
		labels string
		rate   float64
	}
	exporters := [][]series{
		{
			{`xdpcluster_packets_total{interface="front",path="afxdp",verdict="forwarded"}`, 100},
			{`xdpcluster_packets_total{interface="front",path="xdp",verdict="forwarded"}`, 300},
			{`xdpcluster_packets_total{interface="front",path="xdp",verdict="foreign"}`, 200},
			{`xdpcluster_bytes_total{interface="front",path="afxdp",verdict="forwarded"}`, 100 * 64},
			{`xdpcluster_bytes_total{interface="front",path="xdp",verdict="forwarded"}`, 300 * 64},
			{`xdpcluster_owner_packets_total{interface="front",node="1",path="afxdp"}`, 200},
			{`xdpcluster_owner_packets_total{interface="front",node="1",path="xdp"}`, 200},
			{`xdpcluster_owner_packets_total{interface="front",node="2",path="afxdp"}`, 200},
			{`xdpcluster_owner_packets_total{interface="front",node="2",path="xdp"}`, 0},
		},
		{
			{`xdpcluster_packets_total{interface="front",path="afxdp",verdict="forwarded"}`, 150},
			{`xdpcluster_packets_total{interface="front",path="xdp",verdict="forwarded"}`, 50},
			{`xdpcluster_packets_total{interface="front",path="afxdp",verdict="foreign"}`, 100},
			{`xdpcluster_packets_total{interface="front",path="xdp",verdict="foreign"}`, 300},
			{`xdpcluster_bytes_total{interface="front",path="afxdp",verdict="forwarded"}`, 150 * 64},
			{`xdpcluster_bytes_total{interface="front",path="xdp",verdict="forwarded"}`, 50 * 64},
			{`xdpcluster_owner_packets_total{interface="front",node="1",path="afxdp"}`, 200},
			{`xdpcluster_owner_packets_total{interface="front",node="1",path="xdp"}`, 200},
			{`xdpcluster_owner_packets_total{interface="front",node="2",path="afxdp"}`, 100},
			{`xdpcluster_owner_packets_total{interface="front",node="2",path="xdp"}`, 100},
		},
	}
	// One target serves both nodes' series (instance labels kept:
	// honor_labels), so that every series has samples at the same times
	// and rate() extrapolates them alike: the panels' ratios are exact,
	// and their rates, over a window longer than the series, off by one
	// factor for all.
	start := time.Now()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secs := time.Since(start).Seconds()
		for i, ss := range exporters {
			for _, s := range ss {
				labels := strings.Replace(s.labels, "{", fmt.Sprintf(`{instance="%d",`, i+1), 1)
				fmt.Fprintf(w, "%s %g\n", labels, s.rate*secs)
			}
		}
	}))
	t.Cleanup(srv.Close)

	promAddr := startPrometheus(t, fmt.Sprintf("  - job_name: xdpcluster\n    honor_labels: true\n    static_configs:\n      - targets: [%q]\n", strings.TrimPrefix(srv.URL, "http://")))

	// query returns the values of an instant query by the label named by.
	query := func(expr, by string) (map[string]float64, error) {
		res, err := promQuery(promAddr, expr)
		if err != nil {
			return nil, err
		}
		out := map[string]float64{}
		for _, r := range res {
			key := r.Metric[by]
			if by == "instance path" {
				key = r.Metric["instance"] + " " + r.Metric["path"]
			}
			out[key] = r.Value
		}
		return out, nil
	}

	for _, tc := range []struct {
		title string // prefix
		by    string
		want  map[string]float64
	}{
		{"Share of forwarded packets per node", "instance", map[string]float64{"1": 2.0 / 3, "2": 1.0 / 3}},
		{"Share of forwarded bytes per node", "instance", map[string]float64{"1": 2.0 / 3, "2": 1.0 / 3}},
		{"Share of packets by owning node", "node", map[string]float64{"1": 2.0 / 3, "2": 1.0 / 3}},
		{"Imbalance", "", map[string]float64{"": 400.0 / 300}},
		// Rates as parts of their sum (see above).
		{"Packets per second by path", "instance path", map[string]float64{"1 afxdp": 100.0 / 1200, "1 xdp": 500.0 / 1200, "2 afxdp": 250.0 / 1200, "2 xdp": 350.0 / 1200}},
	} {
		expr := ""
		for _, p := range dash.Panels {
			if strings.HasPrefix(p.Title, tc.title) && len(p.Targets) > 0 {
				expr = grafanaExpr(p.Targets[0].Expr, promScrape)
			}
		}
		if expr == "" {
			t.Errorf("no panel %q", tc.title)
			continue
		}
		// Two scrapes of every target make a rate.
		deadline := time.Now().Add(30 * time.Second)
		var got map[string]float64
		var err error
		for {
			got, err = query(expr, tc.by)
			if err == nil && len(got) == len(tc.want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if tc.by == "instance path" {
			sum := 0.0
			for _, v := range got {
				sum += v
			}
			for k := range got {
				got[k] /= sum
			}
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("panel %q: %v, %v; want %v\n  %s", tc.title, got, err, tc.want, expr)
			continue
		}
		for k, w := range tc.want {
			if g, ok := got[k]; !ok || math.Abs(g-w) > 0.001*w {
				t.Errorf("panel %q: %q = %v, want %v (all: %v)\n  %s", tc.title, k, g, w, got, expr)
			}
		}
	}
}
