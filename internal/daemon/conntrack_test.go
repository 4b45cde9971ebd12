package daemon_test

import (
	"bufio"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/config"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// startDaemon writes cfgText to dir/config.yaml, starts a daemon on node
// and serves it; Stop is left to the caller (and done at cleanup).
func startDaemon(t *testing.T, node *netns.NS, dir, cfgText string) *daemon.Daemon {
	t.Helper()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d := daemon.New(path, cfg, nil)
	if err := node.Do(d.StartDataplane); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	if err := d.Serve(); err != nil {
		t.Fatal(err)
	}
	return d
}

// metric reads one sample (name with labels, exactly as exposed) from the
// daemon's metrics endpoint; -1 when absent.
func metric(t *testing.T, d *daemon.Daemon, name string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(get(t, "http://"+d.MetricsAddr()+"/metrics")))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			return f
		}
	}
	return -1
}

// TestDaemonExpiry: the daemon removes timed-out connections by itself.
// UDP flows through the node, with a 2 s unreplied timeout configured,
// show in xdpcluster_conntrack_entries and then leave it: the gauge is
// back to zero within the timeout plus one sweep period, with no packet
// left to trigger a lookup.
func TestDaemonExpiry(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-ctexp", netns.ClusterOptions{Nodes: 2, Clients4: 4, Clients6: 1})
	dir := t.TempDir()
	const timeout = 2 * time.Second
	d := startDaemon(t, cl.Nodes[0], dir, nodeConfig(cl, filepath.Join(dir, "control.sock"), "  local_node: 1")+
		"conntrack:\n  timeouts:\n    udp_unreplied: 2s\n    udp_replied: 2s\nstate_dir: "+dir+"\n")
	// Unreplied flows: nothing listens on the server's port 9 (its
	// port-unreachable errors are RELATED and refresh nothing).
	dst := netip.AddrPortFrom(cl.Server4, 9)
	seen := map[string]bool{} // distinct flows (a source port may repeat)
	send := func(i int) {
		c, err := cl.Client.Dial("udp", cl.Clients4[i%len(cl.Clients4)], dst, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("flow"))
		seen[c.LocalAddr().String()] = true
		c.Close()
	}
	send(0) // resolves the cluster address first
	time.Sleep(300 * time.Millisecond)
	for i := 1; i < 200; i++ {
		send(i)
	}
	flows := float64(len(seen))
	sent := time.Now()
	var peak float64
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline) && peak < flows; time.Sleep(50 * time.Millisecond) {
		peak = max(peak, metric(t, d, "xdpcluster_conntrack_entries"))
	}
	if peak < flows {
		t.Fatalf("xdpcluster_conntrack_entries reached %v, want %v: the flows did not reach the node", peak, flows)
	}
	// Gone within the timeout and a sweep period (plus slack for a loaded
	// machine); not before the timeout.
	limit := timeout + 2*time.Second + 3*time.Second
	for {
		n := metric(t, d, "xdpcluster_conntrack_entries")
		if n == 0 {
			break
		}
		if time.Since(sent) > limit {
			t.Fatalf("xdpcluster_conntrack_entries still %v %v after the last packet (timeout %v): entries do not expire",
				n, time.Since(sent).Round(time.Millisecond), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(sent)
	if took < timeout-200*time.Millisecond {
		t.Fatalf("the gauge fell to zero %v after the last packet, before the %v timeout", took, timeout)
	}
	if exp := metric(t, d, "xdpcluster_conntrack_expired_total"); exp < flows {
		t.Errorf("xdpcluster_conntrack_expired_total %v, want at least %v", exp, flows)
	}
	t.Logf("%v connections tracked, all expired %v after the last packet", peak, took.Round(time.Millisecond))
}
