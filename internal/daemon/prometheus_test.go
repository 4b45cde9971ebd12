package daemon_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
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
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found (the README's test command installs the Debian package): %v", err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	raw, err := os.ReadFile("../../deploy/grafana/xdpcluster.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil || len(dash.Panels) < 10 {
		t.Fatalf("dashboard: %v, %d panels", err, len(dash.Panels))
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
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	promAddr := ln.Addr().String()
	ln.Close()
	pcfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(pcfg, []byte(fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: xdpcluster\n    static_configs:\n      - targets: [%s]\n", strings.Join(targets, ", "))), 0o644)
	cmd := exec.Command(prom, "--config.file="+pcfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+promAddr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

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
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(expr))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return 0, err
		}
		if r.Status != "success" {
			return 0, fmt.Errorf("%s", r.Error)
		}
		return len(r.Data.Result), nil
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
