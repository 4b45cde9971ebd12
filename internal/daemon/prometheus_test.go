package daemon_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/config"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestDashboardQueries starts a real Prometheus scraping three daemons in
// the netns cluster while traffic flows, and evaluates the PromQL of every
// panel of deploy/grafana/xdpcluster.json through its HTTP API: each must
// return data.
func TestDashboardQueries(t *testing.T) {
	nstest.Require(t)
	dash := readDashboard(t)
	if len(dash.Panels) < 10 {
		t.Fatalf("dashboard: %d panels", len(dash.Panels))
	}

	cl := nstest.Cluster(t, "xc-prom", netns.ClusterOptions{Nodes: 3, Clients4: 10, Clients6: 2})
	dir := t.TempDir()
	var targets []string
	for i, ns := range cl.Nodes {
		path := filepath.Join(dir, fmt.Sprintf("node%d.yaml", i+1))
		cfg := strings.Replace(nodeConfig(cl, filepath.Join(dir, fmt.Sprintf("n%d.sock", i+1)), fmt.Sprintf("  local_node: %d", i+1)), "total_nodes: 2", "total_nodes: 3", 1)
		os.WriteFile(path, []byte(cfg), 0o644)
		c, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		d := daemon.New(path, c, nil)
		if err := ns.Do(d.StartDataplane); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Stop() })
		if err := d.Serve(); err != nil {
			t.Fatal(err)
		}
		targets = append(targets, `"`+d.MetricsAddr()+`"`)
	}
	// Prometheus, scraping every second.
	promAddr := startPrometheus(t, fmt.Sprintf("  - job_name: xdpcluster\n    static_configs:\n      - targets: [%s]\n", strings.Join(targets, ", ")))

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
			n, err := query(tg.Expr)
			if err != nil || n == 0 {
				t.Errorf("panel %q: %d series, %v\n  %s", p.Title, n, err, tg.Expr)
			}
		}
	}
}
