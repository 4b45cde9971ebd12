package daemon_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestDashboardProvisionable: deploy/grafana/xdpcluster.json works under
// Grafana's file provisioning, which loads the JSON as it is (no import
// step fills ${DS_...} inputs): the data source is a template variable
// that every panel and query uses, job and instance are variables that
// every query filters on, every range is $__rate_interval, and the
// connection-table panel shows each of its four counters (it once added
// three of them times 0 to the first).
func TestDashboardProvisionable(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/grafana/xdpcluster.json")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`\$\{DS_[A-Za-z0-9_]*\}`).FindString(string(raw)); m != "" {
		t.Errorf("unresolved import input %s: file provisioning leaves it as is", m)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	if _, ok := top["__inputs"]; ok {
		t.Error("__inputs: only the UI's import fills them")
	}
	if _, ok := top["id"]; ok {
		t.Error("a numeric id: provisioning assigns one (keep uid only)")
	}
	dash := readDashboard(t)

	// The variables.
	vars := map[string]int{}
	for i, v := range dash.Templating.List {
		vars[v.Name] = i
	}
	if i, ok := vars["datasource"]; !ok {
		t.Error("no datasource variable")
	} else if v := dash.Templating.List[i]; v.Type != "datasource" || v.Query != "prometheus" {
		t.Errorf("datasource variable: type %q query %v, want datasource, prometheus", v.Type, v.Query)
	}
	for _, name := range []string{"job", "instance"} {
		i, ok := vars[name]
		if !ok {
			t.Errorf("no %s variable", name)
			continue
		}
		v := dash.Templating.List[i]
		q, _ := json.Marshal(v.Query)
		if v.Type != "query" || !strings.Contains(string(q), "label_values(") || !strings.Contains(string(q), ", "+name+")") {
			t.Errorf("%s variable: type %q query %s, want a query variable on label_values(..., %s)", name, v.Type, q, name)
		}
		if !isDSVar(v.Datasource) {
			t.Errorf("%s variable: datasource %+v, want the datasource variable", name, v.Datasource)
		}
		if !v.IncludeAll || v.AllValue != ".*" {
			t.Errorf("%s variable: includeAll %v allValue %q, want All as .*", name, v.IncludeAll, v.AllValue)
		}
	}

	selector := regexp.MustCompile(`\b(xdpcluster_[a-z0-9_]+)(\{[^}]*\})?`)
	rangeRe := regexp.MustCompile(`\[([^\]]*)\]`)
	zeroTimes := regexp.MustCompile(`(^|[^0-9.])0\s*\*`)
	ids := map[int]string{}
	for _, p := range dash.Panels {
		if prev, ok := ids[p.ID]; ok {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if !isDSVar(p.Datasource) {
			t.Errorf("panel %q: datasource %+v, want {prometheus ${datasource}}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no queries", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			where := fmt.Sprintf("panel %q query %s", p.Title, tg.RefID)
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("%s: refId empty or repeated", where)
			}
			refs[tg.RefID] = true
			if !isDSVar(tg.Datasource) {
				t.Errorf("%s: datasource %+v, want {prometheus ${datasource}}", where, tg.Datasource)
			}
			sels := selector.FindAllStringSubmatch(tg.Expr, -1)
			if len(sels) == 0 {
				t.Errorf("%s: no xdpcluster metric: %s", where, tg.Expr)
			}
			for _, s := range sels {
				if !strings.Contains(s[2], `job=~"$job"`) || !strings.Contains(s[2], `instance=~"$instance"`) {
					t.Errorf("%s: %s%s is not filtered by job=~\"$job\", instance=~\"$instance\"", where, s[1], s[2])
				}
			}
			for _, r := range rangeRe.FindAllStringSubmatch(tg.Expr, -1) {
				if r[1] != "$__rate_interval" {
					t.Errorf("%s: range [%s], want [$__rate_interval]", where, r[1])
				}
			}
			if zeroTimes.MatchString(tg.Expr) {
				t.Errorf("%s: multiplies by 0, hiding a series: %s", where, tg.Expr)
			}
		}
	}

	// The connection-table panel: one query per counter, each its own.
	found := false
	for _, p := range dash.Panels {
		if !strings.HasPrefix(p.Title, "Connections: inserts") {
			continue
		}
		found = true
		want := []string{"xdpcluster_conntrack_inserts_total", "xdpcluster_conntrack_expired_total", "xdpcluster_conntrack_evictions_total", "xdpcluster_conntrack_table_full_total"}
		var got []string
		for _, tg := range p.Targets {
			names := map[string]bool{}
			for _, s := range selector.FindAllStringSubmatch(tg.Expr, -1) {
				names[s[1]] = true
			}
			for n := range names {
				got = append(got, n)
			}
			if len(names) != 1 {
				t.Errorf("panel %q query %s: %d metrics in one series: %s", p.Title, tg.RefID, len(names), tg.Expr)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("panel %q: queries of %v, want one each of %v", p.Title, got, want)
		}
	}
	if !found {
		t.Error("no panel \"Connections: inserts, expiries, evictions, table full\"")
	}
}

// isDSVar: a data source reference to the datasource variable.
func isDSVar(ds *grafanaDSRef) bool {
	return ds != nil && ds.Type == "prometheus" && (ds.UID == "${datasource}" || ds.UID == "$datasource")
}

// TestGrafanaProvisioningExample: the provisioning files under
// deploy/grafana/provisioning are Grafana's format (apiVersion 1), the
// data source is a Prometheus, and the dashboard provider is a file
// provider with a path.
func TestGrafanaProvisioningExample(t *testing.T) {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, Type, URL, Access string
		} `yaml:"datasources"`
	}
	var prov struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name, Type string
			Options    struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	for _, f := range []struct {
		path string
		v    any
	}{
		{"../../deploy/grafana/provisioning/datasources/xdpcluster.yaml", &ds},
		{"../../deploy/grafana/provisioning/dashboards/xdpcluster.yaml", &prov},
	} {
		raw, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(raw, f.v); err != nil {
			t.Fatalf("%s: %v", f.path, err)
		}
	}
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL == "" {
		t.Errorf("datasources: %+v, want apiVersion 1 and one prometheus with a url", ds)
	}
	if prov.APIVersion != 1 || len(prov.Providers) != 1 || prov.Providers[0].Type != "file" || prov.Providers[0].Options.Path == "" {
		t.Errorf("dashboard providers: %+v, want apiVersion 1 and one file provider with a path", prov)
	}
}
