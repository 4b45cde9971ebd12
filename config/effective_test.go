package config

import (
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
)

// TestEffectiveConfiguration: the effective configuration (what `check`
// prints) shows every conntrack timeout in force (the defaults were
// missing) and numbers as the file wrote them (hash_seed: 0xdeadbeef was
// printed 3735928559); it reads back to the same settings and renders the
// same again.
func TestEffectiveConfiguration(t *testing.T) {
	tests := []struct {
		name, from, to string
		want           []string // lines of the effective configuration
		seed           uint32
	}{
		{"hex seed", "", "", []string{"    hash_seed: 0xdeadbeef\n", "    total_nodes: 3\n"}, 0xdeadbeef},
		{"decimal seed", "hash_seed: 0xdeadbeef", "hash_seed: 3735928559", []string{"    hash_seed: 3735928559\n"}, 0xdeadbeef},
		{"octal seed", "hash_seed: 0xdeadbeef", "hash_seed: 010", []string{"    hash_seed: 010\n"}, 8},
		{"quoted hex", "hash_seed: 0xdeadbeef", `hash_seed: "0XBEEF"`, []string{"    hash_seed: 0XBEEF\n"}, 0xbeef},
		{"upper-case hex", "hash_seed: 0xdeadbeef", "hash_seed: 0xDEADBEEF", []string{"    hash_seed: 0xDEADBEEF\n"}, 0xdeadbeef},
		{"plus sign", "hash_seed: 0xdeadbeef", "hash_seed: +7", []string{"    hash_seed: +7\n"}, 7},
		{"hex mask", "local_node: 1", `local_nodemask: "0x5"`, []string{"    local_nodemask: 0x5\n"}, 0xdeadbeef},
		{"hex everywhere", "max_entries: 1048576", "max_entries: 0x100000", []string{"    max_entries: 0x100000\n", "    fast_path_entries: 1048576\n"}, 0xdeadbeef},
		{"hex frames", "io: auto", "io: auto\n  frames: 0x2000", []string{"    frames: 0x2000\n", "    ring_size: 4096\n"}, 0xdeadbeef},
		{"timeouts: defaults", "", "", []string{"    timeouts:\n        tcp_established: 120h0m0s\n        tcp_time_wait: 2m0s\n        udp_unreplied: 30s\n        udp_replied: 2m0s\n        icmp: 30s\n        generic: 10m0s\n"}, 0xdeadbeef},
		{"timeouts: some set", "tcp_loose: false", "tcp_loose: false\n  timeouts: {icmp: 5s, tcp_established: 1h}",
			[]string{"        tcp_established: 1h0m0s\n        tcp_time_wait: 2m0s\n", "        icmp: 5s\n"}, 0xdeadbeef},
		{"iptables rule", "total_nodes: 3\n  local_node: 1\n  hash_seed: 0xdeadbeef\n  invert: false\n",
			"iptables: \"-m cluster --cluster-total-nodes 3 --cluster-local-node 1 --cluster-hash-seed 0xdeadbeef\"\n",
			[]string{"    iptables: -m cluster --cluster-total-nodes 3 --cluster-local-node 1 --cluster-hash-seed 0xdeadbeef\n"}, 0xdeadbeef},
	}
	for _, tc := range tests {
		in := strings.Replace(example, tc.from, tc.to, 1)
		if tc.from != "" && in == example {
			t.Fatalf("%s: replacement did not apply", tc.name)
		}
		s, err := Parse([]byte(in))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		y := s.YAML()
		for _, w := range tc.want {
			if !strings.Contains(y, w) {
				t.Errorf("%s: effective configuration lacks %q:\n%s", tc.name, w, y)
			}
		}
		if s.Match.Seed != tc.seed {
			t.Errorf("%s: seed %#x, want %#x", tc.name, s.Match.Seed, tc.seed)
		}
		again, err := Parse([]byte(y))
		if err != nil {
			t.Errorf("%s: the effective configuration does not read back: %v\n%s", tc.name, err, y)
			continue
		}
		if again.YAML() != y || again.Match != s.Match || again.Port != s.Port || again.FastPathEntries != s.FastPathEntries ||
			again.Conntrack.MaxEntries != s.Conntrack.MaxEntries || len(Diff(&s.file, &again.file)) != 0 {
			t.Errorf("%s: read back differs: %q\n%s\nthen\n%s", tc.name, Diff(&s.file, &again.file), y, again.YAML())
		}
		// The timeouts in force are the same, whether the file left them
		// out or the effective configuration wrote them.
		for _, nt := range again.Conntrack.Timeouts.Named() {
			for _, d := range s.Conntrack.Timeouts.Named() {
				if d.Name == nt.Name && *d.Value != 0 && *d.Value != *nt.Value {
					t.Errorf("%s: timeout %s %v, read back %v", tc.name, d.Name, *d.Value, *nt.Value)
				}
			}
		}
	}
	// Every key of conntrack.timeouts is shown, with the value in force.
	s, _ := Parse([]byte(example))
	if got := s.file.Conntrack.Timeouts; got.ICMP != Duration(30*time.Second) || got.TCPEstablished != Duration(120*time.Hour) || got.Generic != Duration(600*time.Second) {
		t.Errorf("effective timeouts %+v", got)
	}
}

// TestOctalNumbers: a number with a leading 0 and a digit 8 or 9 is
// refused with the reason, in the file as on the command line.
func TestOctalNumbers(t *testing.T) {
	_, err := Parse([]byte(strings.Replace(example, "hash_seed: 0xdeadbeef", "hash_seed: 09", 1)))
	want := `line 5, column 14: "09" is not a number (decimal, 0x hex, or 0-prefixed octal): a leading 0 means octal, which has no digit 8 or 9 (for decimal 9 write 9)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("hash_seed: 09: %v\nwant %s", err, want)
	}
	if cluster.OctalHint("0x09") != "" {
		t.Error("a hint for hex")
	}
}
