package deptest

import (
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"sort"
	"strings"
)

// mod is the module's path; the table names its packages relative to it.
const mod = "github.com/xdpcluster/xdpcluster"

// nonStd is a rule pattern that matches every package outside the
// standard library (the module's own included: list them in except).
const nonStd = "(any package outside the standard library)"

// m turns a module-relative package name into its import path; a
// trailing "/..." is kept.
func m(rel string) string { return mod + "/" + rel }

// rule forbids one dependency of a package.
type rule struct {
	// dep is an import path, "P/..." for P and every package below it, or
	// nonStd.
	dep string
	// trans checks every dependency (go list -deps) rather than the
	// package's own imports.
	trans bool
	// except are patterns dep does not cover.
	except []string
	// via, for a transitive rule, are patterns of the packages through
	// which dep may still arrive: third-party code that uses it for its
	// own purposes, off our path. An importer outside via is a violation.
	via []string
	why string
}

// entry is what one package of the module may import.
type entry struct {
	// imports are the module packages (relative names) it may import
	// directly. Any other import of a module package is refused with
	// layer as the reason. Every package has an entry, so the allowed
	// graph is closed: the layering needs no transitive check.
	imports []string
	layer   string
	forbid  []rule
}

// global is a rule for every package but the exempt ones.
type global struct {
	rule
	exempt []string // relative names
}

// tolerance accepts one known violation until it is fixed; the check
// fails once the violation is gone, so the entry does not outlive it.
type tolerance struct {
	pkg, dep string // relative names
	why      string
}

// pkgInfo is one package of the import graph (test files excluded).
type pkgInfo struct {
	std     bool
	imports []string
}

// graph is the import graph of the module's packages and all of their
// dependencies.
type graph struct {
	pkgs   map[string]*pkgInfo
	module []string // the module's packages, import paths, sorted
}

// loadGraph runs go list once over the whole module.
func loadGraph() (*graph, error) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}\t{{.Standard}}\t{{.DepOnly}}\t{{join .Imports \",\"}}", mod+"/...")
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, fmt.Errorf("go list %s/...: %w\n%s", mod, err, ee.Stderr)
		}
		return nil, fmt.Errorf("go list %s/...: %w", mod, err)
	}
	g := &graph{pkgs: map[string]*pkgInfo{}}
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		// (Not TrimSpace: a last package without imports ends in a tab.)
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			return nil, fmt.Errorf("go list: unexpected line %q", line)
		}
		p := &pkgInfo{std: f[1] == "true"}
		if f[3] != "" {
			p.imports = strings.Split(f[3], ",")
		}
		g.pkgs[f[0]] = p
		if f[2] == "false" {
			g.module = append(g.module, f[0])
		}
	}
	sort.Strings(g.module)
	return g, nil
}

// deps returns every package path imports, directly or not, sorted.
func (g *graph) deps(path string) []string {
	seen := map[string]bool{}
	var walk func(string)
	walk = func(p string) {
		info := g.pkgs[p]
		if info == nil {
			return
		}
		for _, d := range info.imports {
			if !seen[d] {
				seen[d] = true
				walk(d)
			}
		}
	}
	walk(path)
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// chain is a shortest import chain from one package to another, for the
// error message.
func (g *graph) chain(from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == to {
			var c []string
			for ; p != ""; p = prev[p] {
				c = append(c, p)
			}
			slices.Reverse(c)
			return c
		}
		if info := g.pkgs[p]; info != nil {
			for _, d := range info.imports {
				if _, ok := prev[d]; !ok {
					prev[d] = p
					queue = append(queue, d)
				}
			}
		}
	}
	return []string{from, "?", to}
}

// match reports whether pattern covers the package at path.
func (g *graph) match(pattern, path string) bool {
	if pattern == nonStd {
		info := g.pkgs[path]
		return info != nil && !info.std
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}

func (g *graph) matchAny(patterns []string, path string) bool {
	for _, p := range patterns {
		if g.match(p, path) {
			return true
		}
	}
	return false
}

// exists reports whether pattern covers at least one package of the
// graph (for module patterns: of the module).
func (g *graph) exists(pattern string) bool {
	if pattern == nonStd {
		return true
	}
	if strings.HasPrefix(pattern, mod+"/") || pattern == mod {
		for _, p := range g.module {
			if g.match(pattern, p) {
				return true
			}
		}
		return false
	}
	for p := range g.pkgs {
		if g.match(pattern, p) {
			return true
		}
	}
	return false
}

func rel(path string) string {
	if r, ok := strings.CutPrefix(path, mod+"/"); ok {
		return r
	}
	return path
}

// result is what check found.
type result struct {
	problems []string // each fails the test
	notes    []string // logged
}

func (r *result) fail(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

func (r *result) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// rules returns the rules of the package at relative name p: its own,
// the one that holds its module imports to e.imports, and the globals.
func rules(p string, e entry, globals []global) []rule {
	var allowed []string
	for _, i := range e.imports {
		allowed = append(allowed, m(i))
	}
	rs := append([]rule{{dep: m("..."), except: allowed, why: e.layer}}, e.forbid...)
	for _, gl := range globals {
		if !slices.Contains(gl.exempt, p) {
			rs = append(rs, gl.rule)
		}
	}
	return rs
}

// check applies the table to the graph.
func check(g *graph, table map[string]entry, globals []global, tolerated []tolerance) result {
	var res result
	inModule := map[string]bool{}
	for _, p := range g.module {
		inModule[p] = true
		if _, ok := table[rel(p)]; !ok {
			res.fail("package %s has no entry in the table (rules_test.go): classify it (which module packages it may import, what it must not depend on, and why) and add it to docs/architecture.md", rel(p))
		}
	}
	names := make([]string, 0, len(table))
	for p := range table {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		if !inModule[m(p)] {
			res.fail("the table lists %s, which is no longer a package of the module: renamed or removed? Update the table", p)
		}
	}
	// Rules must name what exists: a rule about a renamed package would
	// pass silently forever.
	checked := map[string]bool{}
	missing := map[string][]string{} // allowed imports that do not exist: name -> packages
	for _, p := range names {
		for _, i := range table[p].imports {
			checked[m(i)] = true
			if !g.exists(m(i)) {
				missing[i] = append(missing[i], p)
			}
		}
	}
	for _, i := range slices.Sorted(maps.Keys(missing)) {
		res.note("%s may be imported by %s, but does not exist (yet)", i, strings.Join(missing[i], ", "))
	}
	for _, p := range names {
		for _, r := range rules(p, table[p], globals) {
			if !checked[r.dep] && !g.exists(r.dep) {
				res.fail("%s: a rule forbids %s, which nothing in the module's import graph is any more: renamed? Update the rule", p, rel(r.dep))
			}
			checked[r.dep] = true
			for _, pat := range append(append([]string(nil), r.except...), r.via...) {
				if !checked[pat] && !g.exists(pat) {
					res.note("%s: a rule's exception names %s, which does not exist (yet)", p, rel(pat))
				}
				checked[pat] = true
			}
		}
	}
	used := make([]bool, len(tolerated))
	for _, p := range names {
		path := m(p)
		if !inModule[path] {
			continue
		}
		direct := g.pkgs[path].imports
		all := g.deps(path)
		seen := map[string]bool{}
		for _, r := range rules(p, table[p], globals) {
			cands := direct
			if r.trans {
				cands = all
			}
			for _, d := range cands {
				if seen[d] || !g.match(r.dep, d) || g.matchAny(r.except, d) {
					continue
				}
				if r.trans && len(r.via) > 0 && onlyVia(g, path, all, d, r.via) {
					continue
				}
				seen[d] = true
				if i := slices.IndexFunc(tolerated, func(t tolerance) bool { return t.pkg == p && m(t.dep) == d }); i >= 0 {
					used[i] = true
					res.note("%s imports %s: tolerated for now (%s)", p, rel(d), tolerated[i].why)
					continue
				}
				how := "imports"
				if r.trans {
					how = "depends on"
				}
				var c []string
				for _, x := range g.chain(path, d) {
					c = append(c, rel(x))
				}
				res.fail("%s %s %s (%s): %s", p, how, rel(d), strings.Join(c, " -> "), r.why)
			}
		}
	}
	for i, t := range tolerated {
		if !used[i] {
			res.fail("%s no longer imports %s: remove the tolerance for it from the table", t.pkg, t.dep)
		}
	}
	return res
}

// onlyVia reports whether every package in path's dependency graph that
// imports dep directly (path itself included) matches one of via.
func onlyVia(g *graph, path string, all []string, dep string, via []string) bool {
	for _, q := range append([]string{path}, all...) {
		if info := g.pkgs[q]; info != nil && slices.Contains(info.imports, dep) && !g.matchAny(via, q) {
			return false
		}
	}
	return true
}
