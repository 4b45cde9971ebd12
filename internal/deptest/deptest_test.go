package deptest

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

var (
	graphOnce sync.Once
	theGraph  *graph
	graphErr  error
)

// moduleGraph loads the module's import graph once per test binary.
func moduleGraph(t *testing.T) *graph {
	t.Helper()
	graphOnce.Do(func() { theGraph, graphErr = loadGraph() })
	if graphErr != nil {
		t.Fatal(graphErr)
	}
	return theGraph
}

// TestImports applies the table to every package of the module.
func TestImports(t *testing.T) {
	g := moduleGraph(t)
	if len(g.module) < 2 {
		t.Fatalf("go list found %d packages in %s: the pattern or the working directory is wrong", len(g.module), mod)
	}
	res := check(g, table, globals, tolerated)
	for _, n := range res.notes {
		t.Log(n)
	}
	for _, p := range res.problems {
		t.Error(p)
	}
	t.Logf("%d packages of the module checked", len(g.module))
}

// fake builds a graph: module packages are named relative to mod; a
// name with a dot in its first element is third-party; the rest are
// standard.
func fake(imports map[string][]string) *graph {
	g := &graph{pkgs: map[string]*pkgInfo{}}
	full := func(n string) string {
		if strings.Contains(strings.Split(n, "/")[0], ".") || isStd(n) {
			return n
		}
		return m(n)
	}
	for p, is := range imports {
		info := &pkgInfo{std: isStd(p)}
		for _, i := range is {
			info.imports = append(info.imports, full(i))
		}
		g.pkgs[full(p)] = info
		if !isStd(p) && !strings.Contains(strings.Split(p, "/")[0], ".") {
			g.module = append(g.module, full(p))
		}
	}
	sort.Strings(g.module)
	return g
}

func isStd(n string) bool {
	return slices.Contains([]string{"fmt", "log", "log/slog", "testing", "net/http"}, n)
}

// TestCheck runs the checker on small made-up graphs: each case is a
// way the old test let a regression through, or a rule kind.
func TestCheck(t *testing.T) {
	base := map[string][]string{
		"core":                      {"fmt"},
		"port":                      {"core", "example.com/netlink"},
		"example.com/netlink":       {"log"},
		"role":                      {"port", "core", "fmt"},
		"fmt":                       nil,
		"log":                       nil,
		"log/slog":                  nil,
		"testing":                   nil,
		"net/http":                  nil,
		"example.com/other":         {"log"},
		"example.com/netlink/inner": nil,
	}
	// with returns base with some packages' imports replaced (or added).
	with := func(over map[string][]string) map[string][]string {
		out := map[string][]string{}
		for k, v := range base {
			out[k] = v
		}
		for k, v := range over {
			out[k] = v
		}
		return out
	}
	type imports = map[string][]string
	tab := map[string]entry{
		"core": {layer: "core layer", forbid: []rule{{dep: "log/slog", trans: true, why: "no slog"}}},
		"port": {imports: []string{"core"}, layer: "port layer",
			forbid: []rule{{dep: "log", trans: true, via: []string{"example.com/netlink/..."}, why: "no log"}}},
		"role": {imports: []string{"port", "core"}, layer: "role layer"},
	}
	cases := []struct {
		name      string
		graph     map[string][]string
		table     map[string]entry
		tolerated []tolerance
		want      []string // substrings, one problem each
	}{
		{name: "clean", graph: base, table: tab},
		{name: "package without an entry", graph: with(imports{"newpkg": {"fmt"}}), table: tab,
			want: []string{"package newpkg has no entry"}},
		{name: "entry for a package that is gone (renamed)", graph: base,
			table: mapWith(tab, "old", entry{layer: "x"}), want: []string{"lists old, which is no longer a package"}},
		{name: "rule about a package that is gone", graph: base,
			table: mapWith(tab, "core", entry{layer: "core layer", forbid: []rule{{dep: m("renamed"), why: "x"}}}),
			want:  []string{"forbids renamed, which nothing in the module's import graph is"}},
		{name: "upward import", graph: with(imports{"core": {"fmt", "role"}}), table: tab,
			want: []string{"core imports role (core -> role): core layer"}},
		{name: "transitive slog, with the chain", graph: with(imports{"core": {"example.com/other2"}, "example.com/other2": {"log/slog"}}),
			table: tab, want: []string{"core depends on log/slog (core -> example.com/other2 -> log/slog): no slog"}},
		{name: "log via an allowed third party", graph: base, table: tab},
		{name: "log via another third party", graph: with(imports{"port": {"core", "example.com/other"}}), table: tab,
			want: []string{"port depends on log (port -> example.com/other -> log): no log"}},
		{name: "log imported by the package itself", graph: with(imports{"port": {"core", "log"}}), table: tab,
			want: []string{"port depends on log (port -> log): no log"}},
		{name: "third-party code in a standard-library-only package", graph: with(imports{"core": {"fmt", "example.com/netlink"}}),
			table: mapWith(tab, "core", entry{layer: "core layer", forbid: []rule{{dep: nonStd, trans: true, except: []string{m("...")}, why: "std only"}}}),
			want:  []string{"core depends on example.com/netlink (core -> example.com/netlink): std only"}},
		{name: "module packages excepted from a standard-library-only rule", graph: with(imports{"core": {"fmt", "port"}, "port": {"fmt"}}),
			table: mapWith(tab, "core", entry{imports: []string{"port"}, layer: "core layer", forbid: []rule{{dep: nonStd, trans: true, except: []string{m("...")}, why: "std only"}}})},
		{name: "tolerated violation", graph: with(imports{"core": {"fmt", "role"}}), table: tab,
			tolerated: []tolerance{{pkg: "core", dep: "role", why: "for now"}}},
		{name: "tolerance that outlived its violation", graph: base, table: tab,
			tolerated: []tolerance{{pkg: "core", dep: "role", why: "for now"}},
			want:      []string{"core no longer imports role: remove the tolerance"}},
	}
	gl := []global{{rule: rule{dep: "testing", trans: true, why: "no testing"}}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := check(fake(c.graph), c.table, gl, c.tolerated)
			if len(res.problems) != len(c.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(res.problems), len(c.want), strings.Join(res.problems, "\n"))
			}
			for i, w := range c.want {
				if !strings.Contains(res.problems[i], w) {
					t.Errorf("problem %d:\n got %s\nwant it to contain %q", i, res.problems[i], w)
				}
			}
		})
	}
	t.Run("global rule", func(t *testing.T) {
		res := check(fake(with(imports{"role": {"port", "testing"}})), tab, gl, nil)
		if len(res.problems) != 1 || !strings.Contains(res.problems[0], "role depends on testing (role -> testing): no testing") {
			t.Fatalf("got %q", res.problems)
		}
		exempt := []global{{rule: gl[0].rule, exempt: []string{"role"}}}
		if res := check(fake(with(imports{"role": {"port", "testing"}})), tab, exempt, nil); len(res.problems) != 0 {
			t.Fatalf("exempt package: got %q", res.problems)
		}
	})
}

func mapWith(t map[string]entry, k string, e entry) map[string]entry {
	out := map[string]entry{}
	for kk, v := range t {
		out[kk] = v
	}
	out[k] = e
	return out
}
