package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/cluster"
)

const example = `
cluster:
  total_nodes: 3
  local_node: 1
  hash_seed: 0xdeadbeef
  invert: false
  hash: xt_cluster
interfaces:
  - name: eth1
    cluster_mac: "01:00:5e:00:01:01"
    cluster_addresses: ["10.1.0.1", "2001:db8:1::1"]
  - name: eth2
    cluster_mac: "01:00:5e:00:01:02"
    cluster_addresses: ["10.2.0.1", "2001:db8:2::1"]
conntrack:
  max_entries: 1048576
  tcp_loose: false
dataplane:
  io: auto
metrics:
  listen: "127.0.0.1:9477"
control:
  socket: /run/xdpcluster/control.sock
log:
  format: text
`

func TestExample(t *testing.T) {
	c, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if m := c.Match; m != (cluster.Match{TotalNodes: 3, NodeMask: 1, Seed: 0xdeadbeef}) {
		t.Errorf("match %+v", m)
	}
	ifs := c.Interfaces
	if len(ifs) != 2 || ifs[1].IPv4[0].String() != "10.2.0.1" || ifs[1].IPv6[0].String() != "2001:db8:2::1" {
		t.Errorf("interfaces %+v", ifs)
	}
	if c.Port.NumFrames != 16384 || c.Log.Level != "info" {
		t.Errorf("defaults not applied: %+v", c.Port)
	}
	// The effective configuration parses back to the same thing.
	again, err := Parse([]byte(c.YAML()))
	if err != nil || again.YAML() != c.YAML() {
		t.Errorf("round trip: %v\n%s", err, c.YAML())
	}
}

func TestIptablesAndNumbers(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(example, `  total_nodes: 3
  local_node: 1
  hash_seed: 0xdeadbeef
  invert: false
  hash: xt_cluster`, `  iptables: "-m cluster --cluster-total-nodes 2 ! --cluster-local-node 1 --cluster-hash-seed 010"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if m := c.Match; m != (cluster.Match{TotalNodes: 2, NodeMask: 1, Seed: 8, Invert: true}) {
		t.Errorf("match %+v", m)
	}
	c, err = Parse([]byte(strings.Replace(example, "local_node: 1", `local_nodemask: "0x5"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if m := c.Match; m.NodeMask != 5 {
		t.Errorf("mask %#x", m.NodeMask)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name, from, to, want string
	}{
		{"unknown key", "  invert: false", "  invrt: false", `line 6, column 3: unknown key "invrt" in cluster (allowed: total_nodes, local_node, local_nodemask, hash_seed, invert, hash, iptables)`},
		{"unknown top key", "log:", "logs:", `unknown key "logs" at the top level`},
		{"unknown interface key", "    cluster_mac: \"01:00:5e:00:01:02\"", "    clustermac: x", `unknown key "clustermac" in interfaces[1]`},
		{"too many nodes", "total_nodes: 3", "total_nodes: 33", "cluster.total_nodes 33: must be 1..32"},
		{"node above total", "local_node: 1", "local_node: 4", "cluster.local_node 4: must be 1..3"},
		{"both node and mask", "local_node: 1", "local_node: 1\n  local_nodemask: 3", "give one, not both"},
		{"mask too big", "local_node: 1", "local_nodemask: 8", "cluster.local_nodemask 0x8: names a node above total_nodes 3"},
		{"bad seed", "hash_seed: 0xdeadbeef", "hash_seed: 0x1ffffffff", "cluster.hash_seed 0x1ffffffff: must be 0..0xffffffff"},
		{"not a number", "hash_seed: 0xdeadbeef", "hash_seed: beef", `"beef" is not a number`},
		{"bad hash", "hash: xt_cluster", "hash: fast", `cluster.hash "fast": must be "xt_cluster"`},
		{"unicast cluster MAC", `"01:00:5e:00:01:01"`, `"02:00:5e:00:01:01"`, `interfaces[0].cluster_mac "02:00:5e:00:01:01": must be a multicast Ethernet address`},
		{"bad address", `"10.1.0.1"`, `"10.1.0.300"`, `interfaces[0].cluster_addresses[0] "10.1.0.300": must be an IPv4 or IPv6 address`},
		{"bad io", "io: auto", "io: dpdk", `dataplane.io "dpdk": must be one of auto, afxdp, afpacket`},
		{"bad listen", `listen: "127.0.0.1:9477"`, `listen: "9477"`, `metrics.listen "9477": must be host:port`},
		{"bad log", "format: text", "format: xml", `log.format "xml": must be one of text, json`},
		{"max entries", "max_entries: 1048576", "max_entries: 0", "conntrack.max_entries 0: must be 1..268435456"},
		{"zero copy", "io: auto", "io: auto\n  zero_copy: maybe", `dataplane.zero_copy "maybe": must be one of auto, on, off`},
		{"batch size", "io: auto", "io: auto\n  batch_size: 65", "dataplane.batch_size 65: must be 1..64"},
	}
	for _, tc := range tests {
		in := strings.Replace(example, tc.from, tc.to, 1)
		if in == example {
			t.Fatalf("%s: replacement did not apply", tc.name)
		}
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := Parse(nil); err == nil {
		t.Error("empty config accepted")
	}
	if _, err := Parse([]byte("cluster: [")); err == nil || !strings.Contains(err.Error(), "invalid YAML") {
		t.Errorf("broken YAML: %v", err)
	}
}

func TestDeployExamples(t *testing.T) {
	for _, f := range []string{"../deploy/examples/two-node-ipv4.yaml", "../deploy/examples/three-node-dual-stack.yaml", "../deploy/examples/backend-three-servers.yaml", "../deploy/examples/three-node-membership.yaml", "../deploy/examples/three-node-keepalived-membership.yaml"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if strings.Contains(f, "membership") {
			// Its secret file lives on the machines; check it with one.
			data, _ := os.ReadFile(f)
			key := filepath.Join(t.TempDir(), "cluster.key")
			os.WriteFile(key, []byte(strings.Repeat("s", 32)), 0o600)
			tmp := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(tmp, []byte(strings.Replace(string(data), "/etc/xdpcluster/cluster.key", key, -1)), 0o600)
			f = tmp
		}
		if _, err := Load(f); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("cluster: {total_nodes: 2}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err == nil {
			if err := c.Match.Validate(); err != nil {
				t.Fatalf("accepted a config whose match is invalid: %v", err)
			}
		}
	})
}
