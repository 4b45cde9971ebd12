package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/dataplane"
)

// An abridged iperf3 3.12 --json report of a 2-stream client run.
const iperfReport = `{"start":{"connected":[]},"intervals":[],
"end":{"streams":[],
"sum_sent":{"start":0,"end":10.0,"seconds":10.0,"bytes":1250000000,"bits_per_second":1.0e9,"retransmits":42,"sender":true},
"sum_received":{"start":0,"end":10.0,"seconds":10.0,"bytes":1237500000,"bits_per_second":9.9e8,"sender":true}}}`

func TestParseIperf(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		gbps     float64
		retrans  uint64
		err      string
	}{
		{name: "report", in: iperfReport, gbps: 0.99, retrans: 42},
		{name: "iperf3 error", in: `{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}`, err: "unable to connect"},
		{name: "nothing received", in: `{"end":{"sum_received":{"seconds":0,"bytes":0}}}`, err: "no received bytes"},
		{name: "not json", in: "iperf3: error - the server is busy running a test", err: "--json output"},
		{name: "empty", in: "", err: "--json output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseIperf([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.End.SumReceived.BitsPerSecond / 1e9; got != tc.gbps {
				t.Errorf("Gb/s = %v, want %v", got, tc.gbps)
			}
			if r.End.SumSent.Retransmits != tc.retrans {
				t.Errorf("retransmits = %d, want %d", r.End.SumSent.Retransmits, tc.retrans)
			}
		})
	}
}

// clients4 are the netns.Cluster's client addresses (198.51.100.10 + i).
func clients4(n int) []netip.Addr {
	var out []netip.Addr
	for i := 0; i < n; i++ {
		out = append(out, netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}))
	}
	return out
}

func TestPickSources(t *testing.T) {
	got, err := pickSources(clients4(20), nodes, sources/nodes)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != sources {
		t.Fatalf("%d sources, want %d", len(got), sources)
	}
	m := cluster.LocalNode(nodes, 1, seed)
	per := map[int]int{}
	seen := map[netip.Addr]bool{}
	for _, a := range got {
		if seen[a] {
			t.Fatalf("source %s twice", a)
		}
		seen[a] = true
		per[m.Node(a)]++
	}
	for n := 0; n < nodes; n++ {
		if per[n] != sources/nodes {
			t.Errorf("node %d owns %d sources, want %d (%v)", n+1, per[n], sources/nodes, got)
		}
	}
	if _, err := pickSources(clients4(1), nodes, 2); err == nil || !strings.Contains(err.Error(), "want 2 each") {
		t.Errorf("one address for 3 nodes: err = %v, want a shortage", err)
	}
}

func TestCountersSub(t *testing.T) {
	var a, b nodeCounters
	a.workers[dataplane.NoNeighbour], b.workers[dataplane.NoNeighbour] = 10, 3
	a.rxDropped, b.rxDropped = 7, 2
	a.rxFillEmpty, b.rxFillEmpty = 5, 5
	a.fast.Forwarded, b.fast.Forwarded = 100, 40
	a.fast.Slow[0], b.fast.Slow[0] = 9, 1
	a.kForwarded, b.kForwarded = 50, 20
	d := a.sub(b)
	if d.workers[dataplane.NoNeighbour] != 7 || d.ringDrops() != 5 || d.rxFillEmpty != 0 || d.fast.Forwarded != 60 || d.fast.Slow[0] != 8 || d.kForwarded != 30 {
		t.Errorf("a - b = %+v", d)
	}
	if s := d.String(false); !strings.Contains(s, "no_neighbour 7") || !strings.Contains(s, "rx_dropped 5") {
		t.Errorf("String(false) = %q", s)
	}
	if s := d.String(true); !strings.Contains(s, "kernel forwarded 30") {
		t.Errorf("String(true) = %q", s)
	}
}

func TestCheck(t *testing.T) {
	run := func(noNeigh, fast uint64) sample {
		var c nodeCounters
		c.workers[dataplane.NoNeighbour] = noNeigh
		c.fast.Forwarded = fast
		return sample{perNode: []nodeCounters{c}, dlNode: []nodeCounters{{}}}
	}
	auto, off, kernel := scenarios[1], scenarios[2], scenarios[0]
	for _, tc := range []struct {
		name string
		r    result
		err  string
	}{
		{"auto, clean", result{sc: auto, samples: []sample{run(0, 10)}}, ""},
		{"auto, no_neighbour", result{sc: auto, samples: []sample{run(3, 10)}}, "3 packets dropped as no_neighbour"},
		{"auto, fast path idle", result{sc: auto, samples: []sample{run(0, 0)}}, "forwarded nothing"},
		{"off, no fast path expected", result{sc: off, samples: []sample{run(0, 0)}}, ""},
		{"kernel", result{sc: kernel, samples: []sample{run(0, 0)}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check([]result{tc.r})
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want one containing %q", err, tc.err)
			}
		})
	}
}
