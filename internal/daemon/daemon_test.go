package daemon_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/config"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// nodeConfig is a gateway's configuration; its state_dir is the socket's
// path with ".state" appended (one per node).
func nodeConfig(cl *netns.Cluster, sock, extra string) string {
	return fmt.Sprintf(`cluster:
  total_nodes: 2
%s
  hash_seed: 0xdeadbeef
interfaces:
  - name: front
    cluster_mac: "%s"
    cluster_addresses: ["%s", "%s"]
  - name: back
    cluster_mac: "%s"
    cluster_addresses: ["%s", "%s"]
metrics:
  listen: "127.0.0.1:0"
control:
  socket: %s
state_dir: %s
`, extra, cl.FrontMAC, cl.ClusterFront4, cl.ClusterFront6, cl.BackMAC, cl.ClusterBack4, cl.ClusterBack6, sock, sock+".state")
}

func get(t *testing.T, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	return string(b)
}

// afxdp is the configuration's line for AF_XDP (on the test clusters'
// veths io auto takes raw sockets and tc): for the tests of AF_XDP's
// series.
const afxdp = "dataplane:\n  io: afxdp\n"

// TestDaemon: a gateway daemon with AF_XDP (io afxdp) serves its metrics,
// control socket and reloads.
func TestDaemon(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-daemon", netns.ClusterOptions{Nodes: 2, Clients4: 2, Clients6: 1})
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "control.sock")
	path := filepath.Join(dir, "config.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(nodeConfig(cl, sock, "  local_node: 1") + afxdp)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d := daemon.New(path, cfg, nil)
	if err := cl.Nodes[0].Do(d.StartDataplane); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	if err := d.Serve(); err != nil {
		t.Fatal(err)
	}
	base := "http://" + d.MetricsAddr()
	if get(t, base+"/healthz") != "ok\n" || get(t, base+"/readyz") != "ready\n" {
		t.Error("health endpoints")
	}
	m := get(t, base+"/metrics")
	for _, want := range []string{
		`xdpcluster_packets_total{interface="front",path="afxdp",verdict="forwarded"}`,
		`xdpcluster_bytes_total{interface="back",path="afxdp",verdict="foreign"}`,
		`xdpcluster_owner_packets_total{interface="front",node="2",path="afxdp"}`,
		`xdpcluster_invalid_packets_total{interface="front",reason="tcp_no_syn"}`,
		`xdpcluster_conntrack_entries`, `xdpcluster_conntrack_max_entries 1.048576e+06`, `xdpcluster_conntrack_reset_total`, `xdpcluster_conntrack_fragment_evictions_total`, `xdpcluster_kernel_follow_restarts_total 0`,
		`xdpcluster_ring_events_total{event="tx_errors",interface="back",queue="0"}`,
		`xdpcluster_xdp_packets_total{interface="front",verdict="passed"}`,
		`xdpcluster_neighbour_messages_total{event="announcements",interface="front",protocol="any"} 2`,
		`xdpcluster_neighbour_messages_total{event="socket_drops",interface="front",protocol="any"} 0`,
		`xdpcluster_batch_size_bucket{interface="front",le="64"}`,
		`xdpcluster_node_mask 1`, `xdpcluster_total_nodes 2`, `xdpcluster_local_node{node="1"} 1`,
		`xdpcluster_build_info{`, `xdpcluster_interface_info{copy="`, `interface="front",io="afxdp",queues="1",role="gateway",xdp_mode="generic"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The control socket.
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("control socket %v, %v: want mode 0600", st, err)
	}
	c := daemon.NewClient(sock)
	for _, step := range []struct {
		method, path, wantMask, wantErr string
	}{
		{"GET", "/status", "0x1", ""},
		{"POST", "/takeover?node=2", "0x3", ""},
		{"POST", "/release?node=2", "0x1", ""},
		{"POST", "/release?node=1", "", "would serve no share"},
		{"POST", "/takeover?node=3", "", "node 3: must be 1..2"},
		{"POST", "/mask?mask=4", "", "names a node above"},
		{"POST", "/mask?mask=0x2", "0x2", ""},
		{"POST", "/mask?mask=1", "0x1", ""},
	} {
		st, err := c.Do(step.method, step.path)
		if step.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), step.wantErr) {
				t.Errorf("%s: error %v, want %q", step.path, err, step.wantErr)
			}
			continue
		}
		if err != nil || st.NodeMask != step.wantMask {
			t.Errorf("%s: mask %s, %v; want %s", step.path, st.NodeMask, err, step.wantMask)
		}
	}
	// Reloads: a bad file keeps the running configuration; a mask change
	// applies at once; a seed change is refused.
	write("cluster: [broken")
	if err := d.Reload(); err == nil || !strings.Contains(err.Error(), "keeping the running configuration") {
		t.Errorf("bad reload: %v", err)
	}
	write(nodeConfig(cl, sock, "  local_nodemask: 3") + afxdp)
	if err := d.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if st := d.Status(); st.NodeMask != "0x3" {
		t.Errorf("after reload mask %s", st.NodeMask)
	}
	write(strings.Replace(nodeConfig(cl, sock, "  local_node: 1"), "0xdeadbeef", "0x1", 1) + afxdp)
	if err := d.Reload(); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Errorf("seed change reload: %v", err)
	}
	if st := d.Status(); st.NodeMask != "0x3" {
		t.Errorf("a refused reload changed the mask to %s", st.NodeMask)
	}
	// A second daemon on the same socket is refused.
	d2 := daemon.New(path, cfg, nil)
	if err := d2.Serve(); err == nil {
		t.Error("serve without a dataplane accepted")
	}
}

// TestDaemonBackend runs the daemon in back-end role in a namespace:
// status, metrics with the owned/foreign verdicts, a takeover through the
// control API that reaches the XDP program's map, and Stop from outside
// the namespace restoring lo.
func TestDaemonBackend(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-dbe", netns.ClusterOptions{Nodes: 2, Clients4: 2, Clients6: 1})
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	path := filepath.Join(dir, "config.yaml")
	os.WriteFile(path, []byte(fmt.Sprintf(`role: backend
cluster:
  total_nodes: 2
  local_node: 1
  hash_seed: 0xdeadbeef
interfaces:
  - name: front
    cluster_mac: "%s"
    cluster_addresses: ["%s", "%s"]
metrics:
  listen: "127.0.0.1:0"
control:
  socket: %s
state_dir: %s
`, cl.FrontMAC, cl.ClusterFront4, cl.ClusterFront6, sock, filepath.Join(dir, "state"))), 0o644)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d := daemon.New(path, cfg, nil)
	if err := cl.Nodes[0].Do(d.StartDataplane); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			d.Stop()
		}
	})
	if err := d.Serve(); err != nil {
		t.Fatal(err)
	}
	st, err := daemon.NewClient(sock).Do("POST", "/takeover?node=2")
	if err != nil || st.NodeMask != "0x3" || st.Role != "backend" || !strings.HasPrefix(st.Interfaces["front"], "backend xdp") {
		t.Fatalf("takeover: %+v %v", st, err)
	}
	m := get(t, "http://"+d.MetricsAddr()+"/metrics")
	for _, want := range []string{`xdpcluster_packets_total{interface="front",path="xdp",verdict="owned"}`, `xdpcluster_packets_total{interface="front",path="xdp",verdict="foreign"}`,
		`xdpcluster_icmp_errors_by_inner_total{interface="front"}`, `xdpcluster_node_mask 3`, `xdpcluster_neighbour_messages_total`,
		`xdpcluster_neighbour_messages_total{event="socket_drops",interface="front",protocol="any"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if out := nstest.Run(t, cl.Nodes[0], "ip", "addr", "show", "lo"); !strings.Contains(out, cl.ClusterFront4.String()) {
		t.Fatalf("cluster address not on lo:\n%s", out)
	}
	stopped = true
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if out := nstest.Run(t, cl.Nodes[0], "ip", "addr", "show", "lo"); strings.Contains(out, cl.ClusterFront4.String()) {
		t.Fatalf("cluster address left on lo after Stop:\n%s", out)
	}
}
