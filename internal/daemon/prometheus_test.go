package daemon_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/daemon/daemontest"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestDashboardQueries starts a real Prometheus scraping three daemons in
// the netns cluster while traffic flows, and evaluates the PromQL of every
// panel of deploy/grafana/xdpcluster.json through its HTTP API, with the
// dashboard's variables substituted as Grafana does ($__rate_interval,
// $job, $instance): each must return data. The same Prometheus evaluates
// deploy/prometheus/rules.yml on the daemons' metrics: every rule
// evaluates without error, the bucket sums are 1 while the three serve,
// and stopping node 3 raises XdpclusterNodeDown and
// XdpclusterBucketUnserved for its bucket (pending: their `for` is longer
// than the test).
func TestDashboardQueries(t *testing.T) {
	nstest.Require(t)
	dash := readDashboard(t)
	if len(dash.Panels) < 10 {
		t.Fatalf("dashboard: %d panels", len(dash.Panels))
	}

	cl := nstest.Cluster(t, "xc-prom", netns.ClusterOptions{Nodes: 3, Clients4: 10, Clients6: 2})
	dir := t.TempDir()
	var targets []string
	var daemons []*daemon.Daemon
	for i, ns := range cl.Nodes {
		nd := filepath.Join(dir, fmt.Sprintf("node%d", i+1))
		if err := os.Mkdir(nd, 0o755); err != nil {
			t.Fatal(err)
		}
		cfg := strings.Replace(nodeConfig(cl, filepath.Join(nd, "control.sock"), fmt.Sprintf("  local_node: %d", i+1)), "total_nodes: 2", "total_nodes: 3", 1)
		d := daemontest.Start(t, ns, nd, cfg)
		targets = append(targets, `"`+d.MetricsAddr()+`"`)
		daemons = append(daemons, d)
	}
	// Prometheus, scraping every second.
	promAddr := startPrometheus(t, fmt.Sprintf("  - job_name: xdpcluster\n    static_configs:\n      - targets: [%s]\n", strings.Join(targets, ", ")), rulesFile)

	// Traffic for the rates: TCP echoes from every client address.
	nstest.Echo(t, cl.Server, ":8080", "")
	stop := time.Now().Add(8 * time.Second)
	for time.Now().Before(stop) {
		for _, a := range append(append([]netip.Addr(nil), cl.Clients4...), cl.Clients6...) {
			// A failed exchange only lowers the rates; the queries
			// below check what the nodes counted.
			cl.Client.Exchange("tcp", a, netip.AddrPortFrom(cl.ServerFor(a), 8080), []byte("hello"), 2*time.Second)
		}
	}
	query := func(expr string) (int, error) {
		res, err := promQuery(promAddr, expr)
		return len(res), err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := query(`up{job="xdpcluster"} == 1`)
		if err == nil && n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus does not scrape the three nodes: %d up, %v", n, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			expr := grafanaExpr(tg.Expr, promScrape)
			n, err := query(expr)
			if err != nil || n == 0 {
				t.Errorf("panel %q query %s: %d series, %v\n  %s", p.Title, tg.RefID, n, err, expr)
			}
		}
	}

	// The job and instance variables list the values the panels filter
	// on: Grafana's label_values(selector, label) is the label's values
	// over the selector's series.
	labelValues := regexp.MustCompile(`^label_values\((.+), *([a-z_]+)\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: definition %q is not label_values(selector, label)", v.Name, v.Definition)
			continue
		}
		res, err := promQuery(promAddr, fmt.Sprintf("count by (%s) (%s)", m[2], grafanaExpr(m[1], promScrape)))
		want := map[string]int{"job": 1, "instance": 3}[v.Name]
		if err != nil || len(res) != want {
			t.Errorf("variable %s (%s): %d values, %v; want %d", v.Name, v.Definition, len(res), err, want)
		}
	}

	// The rules on the daemons' metrics.
	rules, err := promRules(promAddr)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) < 10 {
		t.Errorf("prometheus loaded %d rules from %s", len(rules), rulesFile)
	}
	for _, r := range rules {
		if r.Health == "err" {
			t.Errorf("rule %s: %s", r.Name, r.LastError)
		}
	}
	waitFor := func(what string, ok func() (bool, string)) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			good, got := ok()
			if good {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: got %s", what, got)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	bucketSums := func(want map[string]float64) func() (bool, string) {
		return func() (bool, string) {
			res, err := promQuery(promAddr, `bucket:xdpcluster_servers:sum{job="xdpcluster"}`)
			got := map[string]float64{}
			for _, r := range res {
				got[r.Metric["bucket"]] = r.Value
			}
			return err == nil && fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprint(got, err)
		}
	}
	waitFor("bucket sums of three serving nodes", bucketSums(map[string]float64{"1": 1, "2": 1, "3": 1}))

	// Node 3 stops: nobody takes its bucket over (no membership here).
	daemons[2].Stop()
	node3 := strings.Trim(targets[2], `"`)
	waitFor("bucket sums without node 3", bucketSums(map[string]float64{"1": 1, "2": 1, "3": 0}))
	waitFor("alerts for node 3", func() (bool, string) {
		alerts, err := promAlerts(promAddr)
		down, lost := false, false
		for _, a := range alerts {
			switch {
			case a.Labels["alertname"] == "XdpclusterNodeDown" && a.Labels["instance"] == node3:
				down = true
			case a.Labels["alertname"] == "XdpclusterBucketUnserved" && a.Labels["bucket"] == "3":
				lost = true
			case a.Labels["alertname"] == "XdpclusterBucketUnserved" || a.Labels["alertname"] == "XdpclusterBucketDuplicated" || a.Labels["alertname"] == "XdpclusterNodeDown":
				return false, fmt.Sprintf("unexpected %v", a.Labels)
			}
		}
		return err == nil && down && lost, fmt.Sprint(alerts, err)
	})
}
