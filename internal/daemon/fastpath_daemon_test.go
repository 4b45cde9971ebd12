package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
	"github.com/xdpcluster/xdpcluster/internal/daemon/daemontest"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// Series of the daemons' metrics the fast path tests read, each summed
// over the interfaces.
const (
	fastOn      = `xdpcluster_fast_path_enabled`
	slowNoNeigh = `xdpcluster_fast_path_slow_total{reason="fib_no_neighbour"}`
	fcInstalls  = `xdpcluster_flow_cache_installs_total`
	fcRemovals  = `xdpcluster_flow_cache_removals_total`
	fcEntries   = `xdpcluster_flow_cache_entries`
	echoPort    = 7001
	bulkBytes   = 200000
	minFastPkts = 20 // of 200 kB each way: ~140 full frames per direction
)

// paths names the series of the fast path's hook and of the workers: the
// XDP program and AF_XDP, or the tc program and raw sockets.
type paths struct{ fast, workers string }

var (
	xdpPaths = paths{"xdp", "afxdp"}
	tcPaths  = paths{"tc", "afpacket"}
)

// fastFwd, fastForeign and fastAll are the fast path's packets forwarded,
// dropped as foreign, and all of them (every verdict).
func (p paths) fastFwd() string {
	return `xdpcluster_packets_total{path="` + p.fast + `",verdict="forwarded"}`
}
func (p paths) fastForeign() string {
	return `xdpcluster_packets_total{path="` + p.fast + `",verdict="foreign"}`
}
func (p paths) fastAll() string { return `xdpcluster_packets_total{path="` + p.fast + `"}` }

// workersFwd and workersAll are the workers' packets forwarded and all
// of them.
func (p paths) workersFwd() string {
	return `xdpcluster_packets_total{path="` + p.workers + `",verdict="forwarded"}`
}
func (p paths) workersAll() string { return `xdpcluster_packets_total{path="` + p.workers + `"}` }

// sent is what a daemon's workers sent: forwarded themselves, or handed to
// the kernel while it resolves the next hop.
func (p paths) sent(t *testing.T, d *daemon.Daemon) float64 {
	t.Helper()
	return metric(t, d, p.workersFwd()) + metric(t, d, `xdpcluster_packets_total{path="`+p.workers+`",verdict="forwarded_kernel"}`)
}

// echoBytes sends n bytes on c and checks they come back intact.
func echoBytes(c net.Conn, n int) error {
	unit := []byte(fmt.Sprintf("%s->%s;", c.LocalAddr(), c.RemoteAddr()))
	msg := bytes.Repeat(unit, n/len(unit)+1)[:n]
	c.SetDeadline(time.Now().Add(10 * time.Second))
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("%s: read: %w", c.LocalAddr(), err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("%s: write: %w", c.LocalAddr(), err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("%s: data corrupted", c.LocalAddr())
	}
	return nil
}

// waitMetric polls a daemon's series until it exceeds floor; false after
// timeout.
func waitMetric(t *testing.T, d *daemon.Daemon, name string, floor float64, timeout time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		if metric(t, d, name) > floor {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// TestDaemonFastPath: through two daemons started from their
// configuration files (io: afxdp, fast_path left at its default, auto),
// an established TCP connection is carried by the XDP fast path: its owner
// (node 2) forwards it in XDP, node 1 drops it in XDP as foreign, and
// neither daemon's AF_XDP workers see its packets; only the handshake and
// the close go through them. Then daemon 2 stops and daemon 1 takes node
// 2's share through its control socket: the next packets of the cached
// connection are forwarded by node 1's fast path, none dropped as foreign
// and none through its workers; the close removes the connection from
// node 1's cache.
func TestDaemonFastPath(t *testing.T) {
	nstest.Require(t)
	testDaemonFastPath(t, "dataplane:\n  io: afxdp\n", true, xdpPaths)
}

// TestDaemonFastPathOff: TestDaemonFastPath's sequence with fast_path: off
// in both files: xdpcluster_fast_path_enabled 0, the connection carried by
// the workers before and after the takeover, no path="xdp" series.
func TestDaemonFastPathOff(t *testing.T) {
	nstest.Require(t)
	testDaemonFastPath(t, "dataplane:\n  fast_path: off\n", false, xdpPaths)
}

// TestDaemonFastPathTC: TestDaemonFastPath's sequence with the default
// configuration, which on veth (io auto) is raw sockets with the fast path
// in tc: its packets counted as path="tc", the handshake and the close
// through the raw-socket workers (path="afpacket").
func TestDaemonFastPathTC(t *testing.T) {
	nstest.Require(t)
	testDaemonFastPath(t, "", true, tcPaths)
}

func testDaemonFastPath(t *testing.T, extra string, on bool, p paths) {
	cl := nstest.Cluster(t, "xc-dfp", netns.ClusterOptions{Nodes: 2, Clients4: 20, Clients6: 1})
	nstest.Echo(t, cl.Server, fmt.Sprintf(":%d", echoPort), "")
	var ds [2]*daemon.Daemon
	var socks [2]string
	for i := range ds {
		dir := t.TempDir()
		socks[i] = filepath.Join(dir, "control.sock")
		ds[i] = daemontest.Start(t, cl.Nodes[i], dir, nodeConfig(cl, socks[i], fmt.Sprintf("  local_node: %d", i+1))+extra)
	}
	d1, d2 := ds[0], ds[1]
	want := 0.0
	if on {
		want = 1
	}
	for i, d := range ds {
		if v := metric(t, d, fastOn); v != want {
			t.Fatalf("node %d: %s %v, want %v", i+1, fastOn, v, want)
		}
		// The mode ctl status shows names the I/O the paths count.
		mode := d.Status().Interfaces["front"]
		if tc := strings.Contains(mode, "fast path in tc"); tc != (p.fast == "tc") || !strings.Contains(mode, p.workers) {
			t.Fatalf("node %d: mode %q, want %s I/O with the fast path in %s", i+1, mode, p.workers, p.fast)
		}
	}

	m := cluster.LocalNode(2, 1, 0xdeadbeef)
	var client netip.Addr
	for _, a := range cl.Clients4 {
		if m.Node(a) == 1 { // node 2 owns the connection
			client = a
			break
		}
	}
	if !client.IsValid() {
		t.Fatal("no client address in node 2's share")
	}

	// The handshake goes through node 2's workers (SYN, SYN-ACK and the
	// ACK that establishes it: sent by the workers, or handed to the kernel
	// while the node resolves the client's and the server's addresses).
	hs0 := p.sent(t, d2)
	c, err := cl.Client.Dial("tcp", client, netip.AddrPortFrom(cl.Server4, echoPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoBytes(c, 1000); err != nil {
		t.Fatal(err)
	}
	if hs := p.sent(t, d2) - hs0; hs < 3 {
		t.Errorf("node 2's workers sent %v packets of the connection's handshake, want at least 3", hs)
	}
	if on {
		// Installed on both nodes once their trackers saw it established.
		// A loaded non-owner may have drained the client's side (its ACK
		// and data) before the server's SYN/ACK on the other interface:
		// those are INVALID to it, and its tracker establishes the
		// connection at the client's next packet (docs/dataplane.md,
		// "Found on the way"), which one more exchange sends.
		if !waitMetric(t, d1, fcInstalls, 0, 2*time.Second) {
			t.Logf("node 1 had not established the connection after the handshake: one more exchange")
			if err := echoBytes(c, 100); err != nil {
				t.Fatal(err)
			}
		}
		for i, d := range ds {
			if !waitMetric(t, d, fcInstalls, 0, 5*time.Second) {
				t.Fatalf("node %d: %s %v after the handshake, want > 0", i+1, fcInstalls, metric(t, d, fcInstalls))
			}
			// The daemon exports the cache's reconciliation with the
			// tracker: nothing cached that the tracker did not install.
			if v := metric(t, d, `xdpcluster_flow_cache_orphans_total`); v != 0 {
				t.Errorf("node %d: xdpcluster_flow_cache_orphans_total %v, want 0", i+1, v)
			}
		}
	}

	type snap struct{ xdpFwd, xdpForeign, afxdpFwd, afxdpSent, afxdpAll, noNeigh float64 }
	read := func(d *daemon.Daemon) snap {
		return snap{metric(t, d, p.fastFwd()), metric(t, d, p.fastForeign()), metric(t, d, p.workersFwd()), p.sent(t, d), metric(t, d, p.workersAll()), metric(t, d, slowNoNeigh)}
	}
	n1a, n2a := read(d1), read(d2)
	if err := echoBytes(c, bulkBytes); err != nil {
		t.Fatal(err)
	}
	n1b, n2b := read(d1), read(d2)
	t.Logf("200 kB echo (fast path %s, workers %s): node 2 fast path forwarded +%v, workers sent +%v; node 1 fast path foreign +%v, workers +%v",
		p.fast, p.workers, n2b.xdpFwd-n2a.xdpFwd, n2b.afxdpSent-n2a.afxdpSent, n1b.xdpForeign-n1a.xdpForeign, n1b.afxdpAll-n1a.afxdpAll)
	if on {
		if d := n2b.xdpFwd - n2a.xdpFwd; d < minFastPkts {
			t.Errorf("node 2: %s rose by %v over a 200 kB echo, want at least %d", p.fastFwd(), d, minFastPkts)
		}
		if d := n1b.xdpForeign - n1a.xdpForeign; d < minFastPkts {
			t.Errorf("node 1: %s rose by %v over a 200 kB echo, want at least %d", p.fastForeign(), d, minFastPkts)
		}
		for _, x := range []struct {
			node     int
			from, to snap
		}{{1, n1a, n1b}, {2, n2a, n2b}} {
			if d := x.to.afxdpAll - x.from.afxdpAll; d != 0 {
				t.Errorf("node %d: %s rose by %v: the workers saw packets of an established, cached connection", x.node, p.workersAll(), d)
			}
		}
	} else {
		if d := n2b.afxdpSent - n2a.afxdpSent; d < minFastPkts {
			t.Errorf("fast path off: node 2's workers sent %v packets of a 200 kB echo, want at least %d", d, minFastPkts)
		}
		for i, d := range ds {
			if v := metric(t, d, p.fastAll()); v != -1 {
				t.Errorf("fast path off: node %d reports %s %v, want no such series", i+1, p.fastAll(), v)
			}
		}
	}

	// Node 2 fails; node 1 takes its share through the control socket.
	if err := d2.Stop(); err != nil {
		t.Fatal(err)
	}
	st, err := daemon.NewClient(socks[0]).Do("POST", "/takeover?node=2")
	if err != nil || st.NodeMask != "0x3" {
		t.Fatalf("takeover on node 1: mask %q, %v; want 0x3", st.NodeMask, err)
	}
	// Twice: the first echo also makes node 1 resolve the client's and the
	// server's addresses (it never sent to them), the second runs with
	// them resolved.
	for round := 1; round <= 2; round++ {
		t1 := read(d1)
		if err := echoBytes(c, bulkBytes/2); err != nil {
			t.Fatalf("after the takeover, echo %d: %v", round, err)
		}
		t2 := read(d1)
		t.Logf("after the takeover, 100 kB echo %d: node 1 fast path forwarded +%v, foreign +%v; workers +%v (forwarded +%v, sent +%v), handed over for fib_no_neighbour +%v",
			round, t2.xdpFwd-t1.xdpFwd, t2.xdpForeign-t1.xdpForeign, t2.afxdpAll-t1.afxdpAll, t2.afxdpFwd-t1.afxdpFwd, t2.afxdpSent-t1.afxdpSent, t2.noNeigh-t1.noNeigh)
		if !on {
			if d := t2.afxdpSent - t1.afxdpSent; d < minFastPkts {
				t.Errorf("fast path off: after the takeover node 1's workers sent %v packets, want at least %d", d, minFastPkts)
			}
			if v := metric(t, d1, p.fastAll()); v != -1 {
				t.Errorf("fast path off: node 1 reports %s %v, want no such series", p.fastAll(), v)
			}
			continue
		}
		// The cache decides owned from the first packet on: none dropped
		// as foreign.
		if d := t2.xdpForeign - t1.xdpForeign; d != 0 {
			t.Errorf("after the takeover (echo %d) node 1 dropped %v packets of the connection as foreign in XDP", round, d)
		}
		if d := t2.afxdpAll - t1.afxdpAll; round == 1 {
			// Packets through the workers only while node 1 resolves
			// the next hops (the fast path hands them over), all sent.
			if nn := t2.noNeigh - t1.noNeigh; d > nn {
				t.Errorf("after the takeover %v packets went through node 1's workers, %v of them for an unresolved neighbour: the others should have been decided in XDP", d, nn)
			}
			if s := t2.afxdpSent - t1.afxdpSent; s != d {
				t.Errorf("after the takeover node 1's workers sent %v of the %v packets they got: some dropped", s, d)
			}
		} else if d != 0 || t2.afxdpFwd != t1.afxdpFwd {
			t.Errorf("after the takeover, with the neighbours resolved, %v packets went through node 1's workers, want none (the cache decides)", d)
		}
		if d := t2.xdpFwd - t1.xdpFwd; round == 2 && d < minFastPkts {
			t.Errorf("after the takeover node 1's %s rose by %v over a 100 kB echo, want the connection's packets (at least %d)", p.fastFwd(), d, minFastPkts)
		}
	}

	// The close goes through node 1's workers, which remove the connection
	// from the cache.
	r0, c0, e0 := metric(t, d1, fcRemovals), p.sent(t, d1), metric(t, d1, fcEntries)
	if on && e0 < 2 {
		t.Errorf("node 1's %s is %v with the connection cached, want its two directions at least", fcEntries, e0)
	}
	c.Close()
	for deadline := time.Now().Add(5 * time.Second); p.sent(t, d1) <= c0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the connection's close did not go through node 1's workers")
		}
	}
	if on {
		if !waitMetric(t, d1, fcRemovals, r0, 5*time.Second) {
			t.Errorf("the connection's FIN did not remove it from node 1's flow cache: %s %v, %s %v",
				fcRemovals, metric(t, d1, fcRemovals), fcEntries, metric(t, d1, fcEntries))
		} else if e := metric(t, d1, fcEntries); e != e0-2 {
			// Counted from the kernel's count of the map (bpf/count.c).
			t.Errorf("after the connection's removal node 1's %s is %v, want %v", fcEntries, e, e0-2)
		}
	} else if v := metric(t, d1, fcRemovals); v != -1 {
		t.Errorf("fast path off: node 1 reports %s %v, want no such series", fcRemovals, v)
	}
}

// TestDaemonRawSocketsGRO: a daemon on raw sockets (dataplane.io:
// afpacket) turns GRO off on its data interfaces while it runs (merged TCP
// packets would not fit its sockets' ring slots), recording them in
// state_dir first, and a clean stop turns GRO back on and removes the
// record.
func TestDaemonRawSocketsGRO(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-dgro", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1})
	ns := cl.Nodes[0]
	for _, ifc := range []string{"front", "back"} {
		nstest.Run(t, ns, "ethtool", "-K", ifc, "gro", "on")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	d := daemontest.Start(t, ns, dir, nodeConfig(cl, sock, "  local_node: 1")+"dataplane:\n  io: afpacket\n")
	record := filepath.Join(sock+".state", daemon.GROStateFile)
	b, err := os.ReadFile(record)
	if err != nil || !strings.Contains(string(b), `"interfaces":["front","back"]`) {
		t.Errorf("running: record %s = %q, %v; want front and back in it", record, b, err)
	}
	for _, ifc := range []string{"front", "back"} {
		if gro := nstest.GRO(t, ns, ifc); gro != "off" {
			t.Errorf("running: GRO on %s is %s, want off", ifc, gro)
		}
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, ifc := range []string{"front", "back"} {
		if gro := nstest.GRO(t, ns, ifc); gro != "on" {
			t.Errorf("stopped: GRO on %s is %s, want on again", ifc, gro)
		}
	}
	if _, err := os.Stat(record); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stopped: the record is still there: %v", err)
	}
}
