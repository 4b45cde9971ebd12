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
	"strings"
	"testing"
	"time"
)

// dashboard is the part of deploy/grafana/xdpcluster.json the dashboard
// tests read: every panel's queries and data source, the template
// variables.
type dashboard struct {
	Panels []struct {
		ID         int               `json:"id"`
		Title      string            `json:"title"`
		Datasource *grafanaDSRef     `json:"datasource"`
		Targets    []dashboardTarget `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name       string        `json:"name"`
			Type       string        `json:"type"`
			Query      any           `json:"query"`
			Definition string        `json:"definition"`
			Datasource *grafanaDSRef `json:"datasource"`
			IncludeAll bool          `json:"includeAll"`
			AllValue   string        `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
}

// dashboardTarget is one query of a panel.
type dashboardTarget struct {
	RefID      string        `json:"refId"`
	Expr       string        `json:"expr"`
	Datasource *grafanaDSRef `json:"datasource"`
}

// grafanaDSRef is a panel's or query's data source reference.
type grafanaDSRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// grafanaExpr substitutes the dashboard's variables in a query the way
// Grafana does before sending it to Prometheus, for a Prometheus that
// scrapes every scrape: $__rate_interval is max($__interval + scrape,
// 4 * scrape), here its lower bound 4 * scrape (the shortest window, the
// one most likely to hold too few samples); $job and $instance with "All"
// selected are their allValue, ".*"; $datasource only picks the server.
// Any other variable is left, so that Prometheus refuses the query.
func grafanaExpr(expr string, scrape time.Duration) string {
	r := strings.NewReplacer(
		"${__rate_interval}", fmt.Sprintf("%ds", int(4*scrape/time.Second)),
		"$__rate_interval", fmt.Sprintf("%ds", int(4*scrape/time.Second)),
		"${job}", ".*", "$job", ".*",
		"${instance}", ".*", "$instance", ".*",
	)
	return r.Replace(expr)
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

// promScrape is the scrape (and rule evaluation) interval of the tests'
// Prometheus.
const promScrape = time.Second

// startPrometheus runs a real Prometheus (the Debian package the README's
// test command installs) scraping every second with the given
// scrape_configs entries (YAML, indented as list items), evaluating the
// given rule files every second, until the test ends, and returns its
// HTTP address.
func startPrometheus(t *testing.T, scrapeConfigs string, ruleFiles ...string) string {
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
	if err := os.WriteFile(pcfg, []byte(promConfig(scrapeConfigs, ruleFiles)), 0o644); err != nil {
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

// promConfig is the tests' Prometheus configuration.
func promConfig(scrapeConfigs string, ruleFiles []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\n", promScrape, promScrape)
	if len(ruleFiles) > 0 {
		b.WriteString("rule_files:\n")
		for _, f := range ruleFiles {
			abs, err := filepath.Abs(f)
			if err != nil {
				abs = f
			}
			fmt.Fprintf(&b, "  - %q\n", abs)
		}
	}
	b.WriteString("scrape_configs:\n" + scrapeConfigs)
	return b.String()
}

// rulesFile is the shipped rules file, from this package's directory.
const rulesFile = "../../deploy/prometheus/rules.yml"

// promRule is one rule as Prometheus's rules API reports it.
type promRule struct {
	Name      string `json:"name"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// promRules lists the rules the Prometheus at addr has loaded.
func promRules(addr string) ([]promRule, error) {
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Groups []struct {
				Rules []promRule `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := promGet(addr, "/api/v1/rules", &r); err != nil {
		return nil, err
	}
	var out []promRule
	for _, g := range r.Data.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// promAlert is one pending or firing alert.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// promAlerts lists the pending and firing alerts of the Prometheus at addr.
func promAlerts(addr string) ([]promAlert, error) {
	var r struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := promGet(addr, "/api/v1/alerts", &r); err != nil {
		return nil, err
	}
	return r.Data.Alerts, nil
}

// promGet decodes the JSON answer of a GET of path on the Prometheus at addr.
func promGet(addr, path string, v any) error {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}
