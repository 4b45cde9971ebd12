package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/config"
)

const checkBase = `cluster:
  total_nodes: 2
  local_node: 1
  hash_seed: 0xdeadbeef
interfaces:
  - name: eth1
    cluster_mac: "01:00:5e:00:01:01"
    nd_mac: "33:33:00:00:01:01"
    cluster_addresses: ["10.1.0.1"]
conntrack:
  max_entries: 1048576
  timeouts:
    udp_replied: 3m
dataplane:
  frames: 16384
`

// TestCheckAndRunAgree: each configuration is refused by `check` (exit 1,
// the message naming the YAML key) and, with the same message, by
// config.Load, which `run` and reloads use: the two cannot drift. Each was
// once accepted by `check` and then failed, or misbehaved, in `run`.
func TestCheckAndRunAgree(t *testing.T) {
	// A 1 GiB machine: a full table may take 512 MiB.
	saved := config.SystemMemory
	config.SystemMemory = func() (uint64, error) { return 1 << 30, nil }
	t.Cleanup(func() { config.SystemMemory = saved })

	tests := []struct {
		name, from, to, want string
	}{
		{"hash_seed missing", "  hash_seed: 0xdeadbeef\n", "",
			"cluster.hash_seed: required (the --cluster-hash-seed of the cluster's rules, 0..0xffffffff; write 0 if that is the seed)"},
		{"hash_seed null", "hash_seed: 0xdeadbeef", "hash_seed:",
			"cluster.hash_seed: required"},
		{"negative timeout", "udp_replied: 3m", "tcp_established: -5s",
			"conntrack.timeouts.tcp_established -5s: must be positive (leave the key out for the kernel's default, 120h0m0s)"},
		{"zero timeout", "udp_replied: 3m", "udp_replied: 0s",
			"conntrack.timeouts.udp_replied 0s: must be positive (leave the key out for the kernel's default, 2m0s)"},
		{"negative icmp", "udp_replied: 3m", "icmp: -1ns",
			"conntrack.timeouts.icmp -1ns: must be positive"},
		{"huge timeout", "udp_replied: 3m", "generic: 2562047h",
			"conntrack.timeouts.generic 2562047h0m0s: must be at most 87600h0m0s (10 years)"},
		{"frames 0x10000000", "frames: 16384", "frames: 0x10000000",
			"dataplane.frames 268435456: must be at most 524288 with frame_size 2048 (the UMEM, frames × frame_size, is at most 1024 MiB per socket)"},
		{"frames 2^63", "frames: 16384", "frames: 0x8000000000000000",
			"dataplane.frames 9223372036854775808: must be at most 524288 with frame_size 2048"},
		{"frames not a power of two", "frames: 16384", "frames: 10000",
			"dataplane.frames 10000: must be a power of two"},
		{"frame_size 8192", "frames: 16384", "frames: 16384\n  frame_size: 8192",
			"dataplane.frame_size 8192: must be 2048 or 4096"},
		{"ring_size above frames/2", "frames: 16384", "frames: 16384\n  ring_size: 16384",
			"dataplane.ring_size 16384: must be at most frames/2 (8192)"},
		{"broadcast cluster_mac", `"01:00:5e:00:01:01"`, `"ff:ff:ff:ff:ff:ff"`,
			`interfaces[0].cluster_mac "ff:ff:ff:ff:ff:ff": must be a multicast Ethernet address, not the broadcast address, e.g. 01:00:5e:00:01:01`},
		{"zero cluster_mac", `"01:00:5e:00:01:01"`, `"00:00:00:00:00:00"`,
			`interfaces[0].cluster_mac "00:00:00:00:00:00": must be a multicast Ethernet address (first byte odd)`},
		{"broadcast nd_mac", `"33:33:00:00:01:01"`, `"FF:FF:FF:FF:FF:FF"`,
			`interfaces[0].nd_mac "FF:FF:FF:FF:FF:FF": must be a multicast Ethernet address, not the broadcast address`},
		{"loopback", "name: eth1", "name: lo",
			`interfaces[0].name "lo": the loopback interface cannot be a data interface (name an Ethernet interface)`},
		{"max_entries beyond RAM", "max_entries: 1048576\n  timeouts:\n    udp_replied: 3m\ndataplane:\n  frames: 16384",
			"max_entries: 16777216\n  timeouts:\n    udp_replied: 3m\ndataplane:\n  frames: 16384\n  fast_path: off",
			"conntrack.max_entries 16777216: a full connection table takes 2147483648 bytes (2048 MiB), more than half of this machine's 1073741824 bytes (1024 MiB) of RAM; lower it"},
		{"max_entries and the flow cache beyond RAM", "max_entries: 1048576", "max_entries: 2097152",
			"conntrack.max_entries 2097152: a full connection table takes 268435456 bytes (256 MiB) and the fast path's flow cache for 2097152 connections (dataplane.fast_path_entries) 570425344 bytes (544 MiB), together more than half of this machine's 1073741824 bytes (1024 MiB) of RAM; lower conntrack.max_entries, or dataplane.fast_path_entries"},
		{"fast_path on", "frames: 16384", "frames: 16384\n  fast_path: on",
			`dataplane.fast_path "on": must be auto or off`},
		{"fast_path_entries 0", "frames: 16384", "frames: 16384\n  fast_path_entries: 0",
			"dataplane.fast_path_entries 0: must be 1..1048576 (at most conntrack.max_entries: the cache holds tracked connections only; leave the key out for conntrack.max_entries)"},
		{"fast_path_entries above max_entries", "frames: 16384", "frames: 16384\n  fast_path_entries: 2000000",
			"dataplane.fast_path_entries 2000000: must be 1..1048576"},
		{"iptables and hash_seed 0", "  local_node: 1\n  hash_seed: 0xdeadbeef\n", "  hash_seed: 0\n  iptables: \"-m cluster --cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 1\"\n",
			"cluster.total_nodes: give either cluster.iptables or the separate keys, not both"},
	}
	dir := t.TempDir()
	for i, tc := range tests {
		in := strings.Replace(checkBase, tc.from, tc.to, 1)
		if in == checkBase {
			t.Fatalf("%s: replacement did not apply", tc.name)
		}
		path := filepath.Join(dir, fmt.Sprintf("%02d.yaml", i))
		if err := os.WriteFile(path, []byte(in), 0o644); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := runCmd("", "check", "--config", path)
		if code != exitFail || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("%s: check exit %d, stderr %q; want exit %d naming %q", tc.name, code, errOut, exitFail, tc.want)
		}
		_, err := config.Load(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: config.Load (run): %v; want %q", tc.name, err, tc.want)
		}
	}

	// What is valid passes both: a seed written as 0, the largest UMEM,
	// the largest table this machine allows.
	for _, tc := range []struct{ from, to string }{
		{"hash_seed: 0xdeadbeef", "hash_seed: 0"},
		{"frames: 16384", "frames: 262144\n  frame_size: 4096\n  ring_size: 131072"},
		{"max_entries: 1048576\n  timeouts:\n    udp_replied: 3m\ndataplane:\n  frames: 16384",
			"max_entries: 4194304\n  timeouts:\n    udp_replied: 3m\ndataplane:\n  frames: 16384\n  fast_path: off"}, // 512 MiB
		{"max_entries: 1048576", "max_entries: 1310720"}, // with the flow cache: 128 + 364 MiB
		{"udp_replied: 3m", "tcp_established: 87600h"},
	} {
		path := filepath.Join(dir, "good.yaml")
		os.WriteFile(path, []byte(strings.Replace(checkBase, tc.from, tc.to, 1)), 0o644)
		if out, errOut, code := runCmd("", "check", "--config", path); code != exitOK || !strings.Contains(out, "is valid") {
			t.Errorf("%s: check exit %d: %s", tc.to, code, errOut)
		}
		if _, err := config.Load(path); err != nil {
			t.Errorf("%s: config.Load: %v", tc.to, err)
		}
	}
}

// TestCheckPrintsFastPath: check prints dataplane.fast_path and
// dataplane.fast_path_entries with the values in force, the entries
// resolved to conntrack.max_entries when the file leaves them out, and
// the memory the daemon will take (the flow cache's: 272 bytes a
// connection, allocated at start; with io auto and the fast path, both the
// AF_XDP and the raw-socket figures, since auto takes raw sockets on veth).
func TestCheckPrintsFastPath(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, from, to, path, entries, memory string }{
		{"defaults", "", "", "auto", "1048576", "# memory: connection table up to 128 MiB, flow cache 272 MiB (allocated at start), AF_XDP 32 MiB per interface and receive queue (on veth, where io auto takes raw sockets: raw-socket rings 32 MiB per interface)\n"},
		{"afxdp", "frames: 16384", "frames: 16384\n  io: afxdp", "auto", "1048576", "AF_XDP 32 MiB per interface and receive queue\n"},
		{"auto, xdp_mode native", "frames: 16384", "frames: 16384\n  xdp_mode: native", "auto", "1048576", "AF_XDP 32 MiB per interface and receive queue\n"},
		{"auto, fast_path off", "frames: 16384", "frames: 16384\n  fast_path: off", `"off"`, "1048576", "flow cache 0 MiB (allocated at start), AF_XDP 32 MiB per interface and receive queue\n"},
		{"entries follow max_entries", "max_entries: 1048576", "max_entries: 65536", "auto", "65536", "flow cache 17 MiB"},
		{"both set", "frames: 16384", "frames: 16384\n  fast_path: off\n  fast_path_entries: 0x1000", `"off"`, "0x1000", "flow cache 0 MiB"},
		// Raw sockets: the fast path in tc, two sockets of 16 MiB of rings per interface.
		{"afpacket", "frames: 16384", "frames: 16384\n  io: afpacket", "auto", "1048576", "flow cache 272 MiB (allocated at start), raw-socket rings 32 MiB per interface"},
		{"afpacket, fast_path off", "frames: 16384", "frames: 16384\n  io: afpacket\n  fast_path: off", `"off"`, "1048576", "flow cache 0 MiB (allocated at start), raw-socket rings 16 MiB per interface"},
	} {
		path := filepath.Join(dir, "fp.yaml")
		if err := os.WriteFile(path, []byte(strings.Replace(checkBase, tc.from, tc.to, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := runCmd("", "check", "--config", path)
		if code != exitOK {
			t.Fatalf("%s: check exit %d: %s", tc.name, code, errOut)
		}
		for _, want := range []string{"\n    fast_path: " + tc.path + "\n", "\n    fast_path_entries: " + tc.entries + "\n", tc.memory} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: check output lacks %q:\n%s", tc.name, want, out)
			}
		}
	}
}

// TestCheckEffective: check prints every key with the value in force
// (the conntrack timeouts it left out were missing) and numbers as the
// file writes them (hash_seed: 0xdeadbeef was printed 3735928559); its
// output is itself a valid configuration that checks to the same output.
// A number with a leading 0 and a digit 8 or 9 is refused with the reason.
func TestCheckEffective(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, from, to string
		code           int
		want           []string // in standard output (exit 0) or standard error
	}{
		{"as written", "", "", exitOK, []string{"\n    hash_seed: 0xdeadbeef\n", "\n    max_entries: 1048576\n", "\n    frames: 16384\n",
			"\n    timeouts:\n        tcp_established: 120h0m0s\n        tcp_time_wait: 2m0s\n        udp_unreplied: 30s\n        udp_replied: 3m0s\n        icmp: 30s\n        generic: 10m0s\n",
			"--cluster-hash-seed 0xdeadbeef",
			"\n# conntrack timeouts no key sets (the kernel's defaults): tcp_syn_sent 2m0s, tcp_syn_recv 1m0s, tcp_fin_wait 2m0s, tcp_close_wait 1m0s, tcp_last_ack 30s, tcp_close 10s, tcp_syn_sent2 2m0s\n"}},
		{"decimal stays decimal", "hash_seed: 0xdeadbeef", "hash_seed: 3735928559", exitOK, []string{"\n    hash_seed: 3735928559\n"}},
		{"octal stays octal", "hash_seed: 0xdeadbeef", "hash_seed: 0777", exitOK, []string{"\n    hash_seed: 0777\n", "--cluster-hash-seed 0x000001ff"}},
		{"hex frames", "frames: 16384", "frames: 0x4000", exitOK, []string{"\n    frames: 0x4000\n", "\n    ring_size: 8192\n"}},
		{"leading 0 with a 9", "hash_seed: 0xdeadbeef", "hash_seed: 0199", exitFail,
			[]string{`"0199" is not a number (decimal, 0x hex, or 0-prefixed octal): a leading 0 means octal, which has no digit 8 or 9 (for decimal 199 write 199)`}},
	}
	for i, tc := range tests {
		path := filepath.Join(dir, fmt.Sprintf("%d.yaml", i))
		if err := os.WriteFile(path, []byte(strings.Replace(checkBase, tc.from, tc.to, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := runCmd("", "check", "--config", path)
		got := out
		if tc.code != exitOK {
			got = errOut
		}
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d\n%s%s", tc.name, code, tc.code, out, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.name, w, got)
			}
		}
		if code != exitOK {
			continue
		}
		// The output checks to the same output.
		again := filepath.Join(dir, fmt.Sprintf("%d-again.yaml", i))
		os.WriteFile(again, []byte(out), 0o644)
		out2, errOut2, code2 := runCmd("", "check", "--config", again)
		_, body, _ := strings.Cut(out, "\n")
		_, body2, _ := strings.Cut(out2, "\n")
		if code2 != exitOK || body2 != body {
			t.Errorf("%s: the effective configuration checks differently (exit %d, %s):\n%s\nthen\n%s", tc.name, code2, errOut2, out, out2)
		}
	}
	// Options anywhere, as one word, and extra arguments refused.
	path := filepath.Join(dir, "0.yaml")
	for _, args := range [][]string{{"check", "--config=" + path}, {"check", "--config", path, "--"}} {
		if out, errOut, code := runCmd("", args...); code != exitOK || !strings.Contains(out, "is valid") {
			t.Errorf("%q: exit %d: %s", args, code, errOut)
		}
	}
	if _, errOut, code := runCmd("", "check", "--config", path, "extra"); code != exitUsage || !strings.Contains(errOut, `unexpected argument "extra"`) {
		t.Errorf("check with an extra argument: exit %d: %s", code, errOut)
	}
}

// TestNumberHints: the command-line options take numbers as iptables
// does, and say why 09 is not one.
func TestNumberHints(t *testing.T) {
	const hint = "a leading 0 means octal, which has no digit 8 or 9 (for decimal 9 write 9)"
	pcap := writeCapture(t, 1)
	for _, args := range [][]string{
		{"owner", "--cluster-total-nodes", "2", "--cluster-hash-seed", "09", "10.0.0.1"},
		{"owner", "10.0.0.1", "--cluster-hash-seed", "1", "--cluster-total-nodes", "09"},
		{"owner", "--iptables", "-m cluster --cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed 09", "10.0.0.1"},
		{"simulate", "--pcap", pcap, "--cluster-total-nodes", "2", "--cluster-hash-seed", "09"},
		{"ctl", "--socket", "/nonexistent", "takeover", "09"},
	} {
		_, errOut, code := runCmd("", args...)
		if code != exitUsage || !strings.Contains(errOut, "09") || !strings.Contains(errOut, hint) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", args, code, errOut, hint)
		}
	}
	// 010 is octal, as in iptables: node 8.
	out, _, _ := runCmd("", "owner", "--cluster-total-nodes", "010", "--cluster-hash-seed", "0", "10.0.0.1")
	want, _, _ := runCmd("", "owner", "--cluster-total-nodes", "8", "--cluster-hash-seed", "0", "10.0.0.1")
	if out != want || out == "" {
		t.Errorf("total 010: %q; total 8: %q", out, want)
	}
}
