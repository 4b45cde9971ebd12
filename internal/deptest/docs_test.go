package deptest

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// docRow is a row of docs/architecture.md's package table:
// | `pkg` | what it owns | `a`, `b` (or —) |
var docRow = regexp.MustCompile("^\\| `([^`]+)` \\|[^|]*\\|([^|]*)\\|")
var backticked = regexp.MustCompile("`([^`]+)`")

// TestArchitectureDoc checks that docs/architecture.md's package table
// has one row per package of the module, each with the module imports
// the table allows (those that exist), so the map stays the house.
func TestArchitectureDoc(t *testing.T) {
	g := moduleGraph(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		mm := docRow.FindStringSubmatch(line)
		if mm == nil {
			continue
		}
		if _, dup := rows[mm[1]]; dup {
			t.Errorf("docs/architecture.md: %s has two rows", mm[1])
		}
		var imps []string
		for _, x := range backticked.FindAllStringSubmatch(mm[2], -1) {
			imps = append(imps, x[1])
		}
		sort.Strings(imps)
		rows[mm[1]] = imps
	}
	for _, p := range g.module {
		r := rel(p)
		got, ok := rows[r]
		if !ok {
			t.Errorf("docs/architecture.md: no row for package %s in the package table", r)
			continue
		}
		var want []string
		for _, i := range table[r].imports {
			if g.exists(m(i)) {
				want = append(want, i)
			}
		}
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("docs/architecture.md: %s may import %q, the table says %q", r, got, want)
		}
		delete(rows, r)
	}
	for r := range rows {
		t.Errorf("docs/architecture.md: the package table lists %s, which is not a package of the module", r)
	}
}

// TestLayout checks that the Layout section of docs/architecture.md
// lists every package of the module, and nothing else.
func TestLayout(t *testing.T) {
	g := moduleGraph(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Layout\n")
	if !ok {
		t.Fatal("docs/architecture.md has no '## Layout' section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	listed := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if f := strings.Fields(line); strings.HasPrefix(line, "    ") && len(f) > 0 {
			listed[strings.TrimSuffix(f[0], "/")] = true
		}
	}
	for _, p := range g.module {
		if !listed[rel(p)] {
			t.Errorf("docs/architecture.md, Layout: package %s is not listed", rel(p))
		}
		delete(listed, rel(p))
	}
	for p := range listed {
		t.Errorf("docs/architecture.md, Layout: lists %s, which is not a package of the module", p)
	}
}
