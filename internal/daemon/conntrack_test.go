package daemon_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/daemon/daemontest"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// metric reads one sample (name with labels, exactly as exposed) from the
// daemon's metrics endpoint; -1 when absent.
// metric returns the value of a series of the daemon's metrics named
// like `name{label="value",...}`, summed over the labels the name leaves
// out (as PromQL's sum without(...) does: e.g. the path of
// xdpcluster_packets_total), or -1 when no series matches.
func metric(t *testing.T, d *daemon.Daemon, name string) float64 {
	t.Helper()
	family, want, _ := strings.Cut(strings.TrimSuffix(name, "}"), "{")
	var wantLabels []string
	if want != "" {
		wantLabels = strings.Split(want, ",")
	}
	sum, found := 0.0, false
	sc := bufio.NewScanner(strings.NewReader(get(t, "http://"+d.MetricsAddr()+"/metrics")))
	for sc.Scan() {
		series, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(series, "#") {
			continue
		}
		fam, labels, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
		if fam != family {
			continue
		}
		match := true
		for _, l := range wantLabels {
			if !strings.HasPrefix(labels, l+",") && !strings.Contains(labels, ","+l+",") && !strings.HasSuffix(labels, ","+l) && labels != l {
				match = false
			}
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("%s: %v", sc.Text(), err)
		}
		sum, found = sum+f, true
	}
	if !found {
		return -1
	}
	return sum
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
	d := daemontest.Start(t, cl.Nodes[0], dir, nodeConfig(cl, filepath.Join(dir, "control.sock"), "  local_node: 1")+
		"conntrack:\n  timeouts:\n    udp_unreplied: 2s\n    udp_replied: 2s\n")
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

// TestDaemonRestartKeepsConnections: an established TCP connection (the
// kernel's, in namespaces) through its owner node survives a restart of
// the daemon there: the graceful stop saves the connection table in
// state_dir, the start restores it, and the connection's mid-stream
// packets are forwarded again instead of being INVALID (tcp_no_syn, loose
// pickup being off). The control case removes the snapshot between stop
// and start and sees the connection stall, so the first case proves
// something. With the fast path on (the default) the restored connection
// is installed in the new flow cache again; with fast_path: off the
// restore works through the workers alone.
func TestDaemonRestartKeepsConnections(t *testing.T) {
	nstest.Require(t)
	for _, tc := range []struct {
		name    string
		restore bool
		extra   string // appended to the configuration
	}{{"restored", true, ""}, {"restored, fast path off", true, "dataplane:\n  fast_path: off\n"}, {"without snapshot", false, ""}} {
		t.Run(tc.name, func(t *testing.T) {
			cl := nstest.Cluster(t, "xc-ctrst", netns.ClusterOptions{Nodes: 2, Clients4: 8, Clients6: 1})
			m := cluster.LocalNode(2, 1, 0xdeadbeef)
			var client netip.Addr
			for _, a := range cl.Clients4 {
				if m.Node(a) == 0 { // node 1 owns the connection
					client = a
					break
				}
			}
			if !client.IsValid() {
				t.Fatal("no client address owned by node 1")
			}
			nstest.Echo(t, cl.Server, ":7000", "")
			dir := t.TempDir()
			sock := filepath.Join(dir, "control.sock")
			cfgText := nodeConfig(cl, sock, "  local_node: 1") + tc.extra
			snap := filepath.Join(sock+".state", daemon.SnapshotFile)

			d1 := daemontest.Start(t, cl.Nodes[0], dir, cfgText)
			conn, err := cl.Client.Dial("tcp", client, netip.AddrPortFrom(cl.Server4, 7000), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			echo := func(msg string, timeout time.Duration) error {
				conn.SetDeadline(time.Now().Add(timeout))
				if _, err := conn.Write([]byte(msg)); err != nil {
					return err
				}
				buf := make([]byte, len(msg))
				if _, err := io.ReadFull(conn, buf); err != nil {
					return err
				}
				if string(buf) != msg {
					return fmt.Errorf("echo %q, want %q", buf, msg)
				}
				return nil
			}
			if err := echo("before the restart", 5*time.Second); err != nil {
				t.Fatal(err)
			}
			stopped := time.Now()
			if err := d1.Stop(); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(snap)
			if err != nil {
				t.Fatalf("no snapshot after a graceful stop: %v", err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("snapshot mode %v, want 0600", st.Mode().Perm())
			}
			if !tc.restore {
				os.Remove(snap)
			}
			d2 := daemontest.Start(t, cl.Nodes[0], dir, cfgText)
			t.Logf("daemon down for %v", time.Since(stopped).Round(time.Millisecond))
			if _, err := os.Stat(snap); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the snapshot is still there after the start (%v): it could be restored twice", err)
			}
			noSyn := `xdpcluster_invalid_packets_total{interface="front",reason="tcp_no_syn"}`
			if !tc.restore {
				if err := echo("after the restart", 4*time.Second); err == nil {
					t.Fatal("the connection survived a restart without a snapshot: this test cannot tell")
				}
				if n := metric(t, d2, noSyn); n < 1 {
					t.Errorf("%s %v, want the stalled connection's packets there", noSyn, n)
				}
				return
			}
			for i := 0; i < 5; i++ {
				if err := echo(fmt.Sprintf("after the restart, message %d", i), 10*time.Second); err != nil {
					t.Fatalf("the connection did not survive the restart: %v", err)
				}
			}
			if n := metric(t, d2, noSyn); n != 0 {
				t.Errorf("%s %v after the restart, want 0", noSyn, n)
			}
			if n := metric(t, d2, `xdpcluster_packets_total{interface="front",verdict="forwarded"}`); n < 5 {
				t.Errorf("the restarted node forwarded %v of the client's packets, want at least 5", n)
			}
			// With the fast path on, the restored connection is back in
			// the flow cache: its packets are forwarded in XDP again.
			on := metric(t, d2, "xdpcluster_fast_path_enabled")
			if want := float64(btoi(tc.extra == "")); on != want {
				t.Fatalf("xdpcluster_fast_path_enabled %v, want %v", on, want)
			}
			installs := metric(t, d2, "xdpcluster_flow_cache_installs_total")
			// The fast path runs in tc on this veth (io auto), in XDP
			// where auto chose AF_XDP.
			fast := metric(t, d2, `xdpcluster_packets_total{path="tc",verdict="forwarded"}`)
			if fast == -1 {
				fast = metric(t, d2, `xdpcluster_packets_total{path="xdp",verdict="forwarded"}`)
			}
			if on == 1 && (installs < 1 || fast < 1) {
				t.Errorf("the restored connection is not back on the fast path: %v installs, %v packets forwarded by the fast path", installs, fast)
			}
			if on == 0 && (installs != -1 || fast != -1) {
				t.Errorf("fast path off: the flow cache series are there (%v installs, %v packets forwarded by the fast path)", installs, fast)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
