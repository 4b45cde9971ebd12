// Command summary reads `go test -bench` output and prints one table:
// benchmark, ns/op, allocations, and the custom metrics (pps, ns/pkt ...).
// make bench pipes the benchmarks through it.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
)

func main() {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "benchmark\tns/op\tB/op\tallocs/op\tother metrics")
	pkg := ""
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = p[strings.LastIndex(p, "/")+1:]
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		vals := map[string]string{}
		var other []string
		for i := 2; i+1 < len(f); i += 2 {
			switch unit := f[i+1]; unit {
			case "ns/op", "B/op", "allocs/op":
				vals[unit] = f[i]
			case "MB/s":
			default:
				other = append(other, f[i]+" "+unit)
			}
		}
		fmt.Fprintf(tw, "%s.%s\t%s\t%s\t%s\t%s\n", pkg, name, vals["ns/op"], vals["B/op"], vals["allocs/op"], strings.Join(other, ", "))
	}
	tw.Flush()
}
