package config

import (
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	a, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from, to string
		diff     []string // Diff
		restart  []string // RestartKeys
	}{
		{"local_node: 1", "local_node: 2", []string{"cluster.local_node"}, nil},
		{"local_node: 1\n  hash_seed: 0xdeadbeef\n  invert: false", "local_nodemask: 3\n  hash_seed: 0xdeadbeef\n  invert: true", []string{"cluster.local_node", "cluster.local_nodemask", "cluster.invert"}, nil},
		{"hash_seed: 0xdeadbeef", "hash_seed: 1", []string{"cluster.hash_seed"}, []string{"cluster.hash_seed"}},
		{"total_nodes: 3\n  local_node: 1\n  hash_seed: 0xdeadbeef\n  invert: false\n  hash: xt_cluster",
			`iptables: "-m cluster --cluster-total-nodes 3 --cluster-local-node 2 --cluster-hash-seed 0xdeadbeef"`,
			[]string{"cluster.total_nodes", "cluster.local_node", "cluster.hash_seed", "cluster.iptables"}, nil},
		{"total_nodes: 3\n  local_node: 1\n  hash_seed: 0xdeadbeef\n  invert: false\n  hash: xt_cluster",
			`iptables: "-m cluster --cluster-total-nodes 4 --cluster-local-node 1 --cluster-hash-seed 0xdeadbeef"`,
			[]string{"cluster.total_nodes", "cluster.local_node", "cluster.hash_seed", "cluster.iptables"}, []string{"cluster.total_nodes"}},
		{`"01:00:5e:00:01:02"`, `"01:00:5e:00:01:03"`, []string{"interfaces[1].cluster_mac"}, []string{"interfaces[1].cluster_mac"}},
		{`["10.2.0.1", "2001:db8:2::1"]`, `["10.2.0.1"]`, []string{"interfaces[1].cluster_addresses"}, []string{"interfaces[1].cluster_addresses"}},
		{"  - name: eth2\n    cluster_mac: \"01:00:5e:00:01:02\"\n    cluster_addresses: [\"10.2.0.1\", \"2001:db8:2::1\"]\n", "", []string{"interfaces"}, []string{"interfaces"}},
		{"tcp_loose: false", "tcp_loose: false\n  timeouts: {icmp: 5s}", []string{"conntrack.timeouts.icmp"}, []string{"conntrack.timeouts.icmp"}},
		{"io: auto", "io: auto\n  frames: 32768\n  ring_size: 8192\n  zero_copy: on", []string{"dataplane.zero_copy", "dataplane.frames"}, []string{"dataplane.zero_copy", "dataplane.frames"}},
		{"io: auto", "io: auto\n  frames: 8192", []string{"dataplane.frames", "dataplane.ring_size"}, []string{"dataplane.frames", "dataplane.ring_size"}},
		{"format: text", "format: json", []string{"log.format"}, []string{"log.format"}},
		// The flow cache is made when the gateway starts: both keys need a
		// restart. Entries left out follow conntrack.max_entries; writing
		// the value in force is no change.
		{"io: auto", "io: auto\n  fast_path: off", []string{"dataplane.fast_path"}, []string{"dataplane.fast_path"}},
		{"io: auto", "io: auto\n  fast_path: auto", nil, nil},
		{"io: auto", "io: auto\n  fast_path_entries: 4096", []string{"dataplane.fast_path_entries"}, []string{"dataplane.fast_path_entries"}},
		{"io: auto", "io: auto\n  fast_path_entries: 1048576", nil, nil},
		{"max_entries: 1048576", "max_entries: 2097152", []string{"conntrack.max_entries", "dataplane.fast_path_entries"}, []string{"conntrack.max_entries", "dataplane.fast_path_entries"}},
	}
	for _, tc := range tests {
		in := strings.Replace(example, tc.from, tc.to, 1)
		if in == example {
			t.Fatalf("%q: replacement did not apply", tc.from)
		}
		b, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("%q: %v", tc.to, err)
		}
		if got := Diff(&a.file, &b.file); strings.Join(got, " ") != strings.Join(tc.diff, " ") {
			t.Errorf("%q: Diff %q, want %q", tc.to, got, tc.diff)
		}
		if got := RestartKeys(a, b); strings.Join(got, " ") != strings.Join(tc.restart, " ") {
			t.Errorf("%q: RestartKeys %q, want %q", tc.to, got, tc.restart)
		}
	}
	if got := Diff(&a.file, &a.file); len(got) != 0 {
		t.Errorf("Diff of a config with itself: %q", got)
	}
}
