package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/dataplane/xsk"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
)

// TestRenamedIOKey: dataplane.backend (the I/O kind, not the back-end
// role) is now dataplane.io; a file still using the old key is refused
// with the new name, not as an unknown key.
func TestRenamedIOKey(t *testing.T) {
	s, err := Parse([]byte(strings.Replace(example, "io: auto", "io: afpacket", 1)))
	if err != nil || s.IO != "afpacket" {
		t.Fatalf("dataplane.io: afpacket: %v, %+v", err, s)
	}
	_, err = Parse([]byte(strings.Replace(example, "io: auto", "backend: afpacket", 1)))
	want := "line 19, column 3: key dataplane.backend was renamed to dataplane.io (same values); rename it in the file"
	if err == nil || err.Error() != want {
		t.Errorf("dataplane.backend: %v, want %q", err, want)
	}
	// A key named backend elsewhere is still just unknown.
	_, err = Parse([]byte(strings.Replace(example, "format: text", "format: text\n  backend: x", 1)))
	if err == nil || !strings.Contains(err.Error(), `unknown key "backend" in log`) {
		t.Errorf("log.backend: %v", err)
	}
}

// TestSettings: the file is converted once into the roles' values.
func TestSettings(t *testing.T) {
	in := strings.Replace(example, "  tcp_loose: false\n", `  tcp_loose: true
  timeouts:
    tcp_established: 1h
    tcp_time_wait: 2s
    udp_unreplied: 3s
    udp_replied: 4s
    icmp: 5s
    generic: 6s
`, 1)
	in = strings.Replace(in, "io: auto", "io: afxdp\n  xdp_mode: generic\n  queues: 2\n  batch_size: 16\n  frames: 4096\n  ring_size: 1024\n  zero_copy: off", 1)
	s, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	def := conntrack.DefaultTimeouts()
	wantT := def
	wantT.Established, wantT.TimeWait, wantT.UDPUnreplied, wantT.UDPReplied, wantT.ICMP, wantT.Generic = time.Hour, 2*time.Second, 3*time.Second, 4*time.Second, 5*time.Second, 6*time.Second
	got := s.Conntrack.Timeouts
	// The keys left out stay zero: the tracker's default.
	for _, nt := range got.Named() {
		if *nt.Value == 0 {
			for _, d := range def.Named() {
				if d.Name == nt.Name {
					*nt.Value = *d.Value
				}
			}
		}
	}
	if got != wantT || s.Conntrack.MaxEntries != 1048576 || !s.Conntrack.TCPLoose {
		t.Errorf("conntrack %+v, want timeouts %+v", s.Conntrack, wantT)
	}
	if s.IO != "afxdp" || s.XDPMode != bpfutil.ModeGeneric || s.Queues != 2 || s.BatchSize != 16 ||
		s.Port != (xsk.PortOptions{NumFrames: 4096, FrameSize: 2048, RingSize: 1024, ZeroCopy: "off"}) {
		t.Errorf("dataplane settings %+v", s)
	}
	if s.Match != (cluster.Match{TotalNodes: 3, NodeMask: 1, Seed: 0xdeadbeef}) || len(s.Interfaces) != 2 ||
		s.Interfaces[0].ClusterMAC.String() != "01:00:5e:00:01:01" || s.Interfaces[0].IPv6[0].String() != "2001:db8:1::1" {
		t.Errorf("match %+v, interfaces %+v", s.Match, s.Interfaces)
	}
	if s.ControlSocket != "/run/xdpcluster/control.sock" || s.MetricsListen != "127.0.0.1:9477" || s.StateDir != "/run/xdpcluster" || s.Role != "gateway" {
		t.Errorf("daemon settings %+v", s)
	}
}

// TestTimeoutKeys: every key of conntrack.timeouts names a conntrack
// timeout (the conversion goes by name), and sets it.
func TestTimeoutKeys(t *testing.T) {
	typ := reflect.TypeOf(Timeouts{})
	for i := 0; i < typ.NumField(); i++ {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
		c := Defaults()
		reflect.ValueOf(&c.Conntrack.Timeouts).Elem().Field(i).Set(reflect.ValueOf(Duration(7 * time.Second)))
		ct, errs := c.conntrack()
		if errs != nil {
			t.Fatalf("%s: %v", name, errs)
		}
		set := 0
		for _, nt := range ct.Timeouts.Named() {
			if *nt.Value == 7*time.Second {
				set++
				if nt.Name != name {
					t.Errorf("key %s set conntrack timeout %s", name, nt.Name)
				}
			}
		}
		if set != 1 {
			t.Errorf("key %s set %d conntrack timeouts, want 1", name, set)
		}
	}
}

// TestErrorKeys: the errors of the packages that validate (cluster, node,
// conntrack) are named by the file's keys.
func TestErrorKeys(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{"local_node: 1", "", "cluster.local_node: required: local_node or local_nodemask (which node or nodes this is)"},
		{"  total_nodes: 3\n  local_node: 1\n  hash_seed: 0xdeadbeef\n  invert: false\n  hash: xt_cluster", `  iptables: "--cluster-total-nodes 2"`, "cluster.iptables \"--cluster-total-nodes 2\": invalid cluster match"},
		{"    cluster_mac: \"01:00:5e:00:01:02\"", "    cluster_mac: \"01:00:5e:00:01:01\"\n    nd_mac: \"01:02\"", `interfaces[1].nd_mac "01:02": must be a multicast Ethernet address`},
		{"name: eth2", "name: eth1", `interfaces[1].name "eth1": listed twice`},
		{"name: eth2", "name: ''", `interfaces[1].name: required`},
		{"tcp_loose: false", "tcp_loose: false\n  timeouts: {icmp: 87601h}", "conntrack.timeouts.icmp 87601h0m0s: must be at most 87600h0m0s (10 years)"},
	} {
		in := strings.Replace(example, tc.from, tc.to, 1)
		if in == example {
			t.Fatalf("%q: replacement did not apply", tc.from)
		}
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.to, err, tc.want)
		}
	}
	// A configuration built in code goes through the same conversion.
	c := Defaults()
	if _, err := c.Settings(); err == nil || !strings.Contains(err.Error(), "interfaces: at least one data interface is required") {
		t.Errorf("no interfaces: %v", err)
	}
}
