package daemon_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// dashboard is the part of deploy/grafana/xdpcluster.json the dashboard
// tests read: every panel's queries.
type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// readDashboard reads the shipped dashboard.
func readDashboard(t *testing.T) dashboard {
	t.Helper()
	var dash dashboard
	raw, err := os.ReadFile("../../deploy/grafana/xdpcluster.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	return dash
}

// startPrometheus runs a real Prometheus (the Debian package the README's
// test command installs) scraping every second with the given
// scrape_configs entries (YAML, indented as list items), until the test
// ends, and returns its HTTP address.
func startPrometheus(t *testing.T, scrapeConfigs string) string {
	t.Helper()
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found (the README's test command installs the Debian package): %v", err)
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	pcfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(pcfg, []byte("global:\n  scrape_interval: 1s\nscrape_configs:\n"+scrapeConfigs), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prom, "--config.file="+pcfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return addr
}

// promSample is one series of an instant query's result.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// promQuery evaluates an instant query against the Prometheus at addr.
func promQuery(addr, expr string) ([]promSample, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s", r.Error)
	}
	out := make([]promSample, 0, len(r.Data.Result))
	for _, res := range r.Data.Result {
		s, _ := res.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("value %v: %w", res.Value, err)
		}
		out = append(out, promSample{Metric: res.Metric, Value: v})
	}
	return out, nil
}
