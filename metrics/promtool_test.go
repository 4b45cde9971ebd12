package metrics_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/internal/daemon/daemontest"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// daemonConfig is a node's configuration: role and dataplane lines as
// given, one interface per name in ifaces (front, back), metrics on a
// free port, the control socket and state_dir under dir.
func daemonConfig(cl *netns.Cluster, dir, role, dataplane string, ifaces ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "role: %s\ncluster:\n  total_nodes: 2\n  local_node: 1\n  hash_seed: 0xdeadbeef\n", role)
	if dataplane != "" {
		fmt.Fprintf(&b, "dataplane:\n  %s\n", dataplane)
	}
	b.WriteString("interfaces:\n")
	for _, name := range ifaces {
		mac, a4, a6 := cl.FrontMAC, cl.ClusterFront4, cl.ClusterFront6
		if name == "back" {
			mac, a4, a6 = cl.BackMAC, cl.ClusterBack4, cl.ClusterBack6
		}
		fmt.Fprintf(&b, "  - name: %s\n    cluster_mac: \"%s\"\n    cluster_addresses: [\"%s\", \"%s\"]\n", name, mac, a4, a6)
	}
	fmt.Fprintf(&b, "metrics:\n  listen: \"127.0.0.1:0\"\ncontrol:\n  socket: %s\nstate_dir: %s\n",
		filepath.Join(dir, "control.sock"), filepath.Join(dir, "state"))
	return b.String()
}

// scrapeDaemon starts a daemon in the first node of a fresh cluster
// topology with the given configuration and returns one /metrics body.
func scrapeDaemon(t *testing.T, role, dataplane string, ifaces ...string) string {
	t.Helper()
	cl := nstest.Cluster(t, "xc-promtool", netns.ClusterOptions{Nodes: 2, Clients4: 1, Clients6: 1})
	dir := t.TempDir()
	d := daemontest.Start(t, cl.Nodes[0], dir, daemonConfig(cl, dir, role, dataplane, ifaces...))
	resp, err := http.Get("http://" + d.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s, %v", resp.Status, err)
	}
	return string(body)
}

// TestDaemonMetricsPromtool scrapes a real daemon's /metrics in each role
// and I/O and pipes it to `promtool check metrics` (the Debian package
// prometheus ships it), which must find nothing; the process_* and go_*
// families are there, ring events and interface_info carry the split
// labels, and no series has the old port= or mode= label.
func TestDaemonMetricsPromtool(t *testing.T) {
	nstest.Require(t)
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("skipping: promtool not found (install the Debian package prometheus to run this test)")
	}
	for _, tc := range []struct {
		name, role, dataplane string
		ifaces                []string
		want                  []string // substrings of the exposition
		wantRe                []string // regular expressions (one line each)
	}{
		{
			name: "gateway afxdp", role: "gateway", dataplane: "io: afxdp", ifaces: []string{"front", "back"},
			want: []string{
				`xdpcluster_ring_events_total{event="rx_dropped",interface="front",queue="0"} `,
				`xdpcluster_ring_events_total{event="tx_errors",interface="back",queue="0"} `,
				`xdpcluster_batch_size_sum{interface="front"} `,
			},
			wantRe: []string{`(?m)^xdpcluster_interface_info\{copy="(copy|zerocopy)",interface="front",io="afxdp",queues="[1-9][0-9]*",role="gateway",xdp_mode="(native|generic)"\} 1$`},
		},
		{
			// The fast path in tc: one socket per family, queues 0 and 1.
			name: "gateway afpacket", role: "gateway", dataplane: "io: afpacket", ifaces: []string{"front", "back"},
			want: []string{
				`xdpcluster_ring_events_total{event="rx_dropped",interface="back",queue="0"} `,
				`xdpcluster_ring_events_total{event="rx_dropped",interface="back",queue="1"} `,
				`xdpcluster_interface_info{copy="copy",interface="front",io="afpacket",queues="2",role="gateway",xdp_mode="none"} 1`,
				"xdpcluster_fast_path_enabled 1",
				`xdpcluster_tc_packets_total{interface="back",verdict="to_socket"} `,
			},
		},
		{
			name: "gateway afpacket fast_path off", role: "gateway", dataplane: "io: afpacket\n  fast_path: off", ifaces: []string{"front", "back"},
			want: []string{
				`xdpcluster_ring_events_total{event="rx_dropped",interface="back",queue="0"} `,
				`xdpcluster_interface_info{copy="copy",interface="front",io="afpacket",queues="1",role="gateway",xdp_mode="none"} 1`,
				"xdpcluster_fast_path_enabled 0",
			},
		},
		{
			name: "backend", role: "backend", ifaces: []string{"front"},
			wantRe: []string{`(?m)^xdpcluster_interface_info\{copy="none",interface="front",io="none",queues="0",role="backend",xdp_mode="(native|generic)"\} 1$`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := scrapeDaemon(t, tc.role, tc.dataplane, tc.ifaces...)
			cmd := exec.Command(promtool, "check", "metrics")
			cmd.Stdin = strings.NewReader(body)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil || strings.TrimSpace(out.String()) != "" {
				t.Errorf("promtool check metrics: %v\n%s", err, out.String())
			}
			for _, w := range append([]string{
				"\nprocess_cpu_seconds_total ", "\nprocess_resident_memory_bytes ", "\nprocess_open_fds ",
				"\ngo_goroutines ", "\ngo_memstats_alloc_bytes ", "\ngo_info{",
				"\nxdpcluster_build_info{",
			}, tc.want...) {
				if !strings.Contains(body, w) {
					t.Errorf("metrics lack %q", strings.TrimSpace(w))
				}
			}
			for _, re := range tc.wantRe {
				if !regexp.MustCompile(re).MatchString(body) {
					t.Errorf("no line matches %s", re)
				}
			}
			if m := regexp.MustCompile(`(?m)^xdpcluster_\w+\{[^}]*\b(port|mode)="[^}]*`).FindString(body); m != "" {
				t.Errorf("a series still has a port or mode label: %s", m)
			}
			if t.Failed() {
				t.Logf("exposition:\n%s", body)
			}
		})
	}
}
