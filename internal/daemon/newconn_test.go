package daemon_test

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/internal/daemon/daemontest"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestDaemonRefusesNewConnectionsOnBack: with `new_connections: false` on
// the servers' interface, a datagram the server sends first (to a client
// that never wrote to it) opens no connection and is not forwarded, and is
// counted as invalid/new_refused; the clients' own exchanges through the
// same node still work, replies included.
func TestDaemonRefusesNewConnectionsOnBack(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-nonew", netns.ClusterOptions{Nodes: 1, Clients4: 2, Clients6: 1})
	dir := t.TempDir()
	cfg := nodeConfig(cl, filepath.Join(dir, "control.sock"), "  local_nodemask: 1")
	cfg = strings.Replace(cfg, "total_nodes: 2", "total_nodes: 1", 1)
	cfg = strings.Replace(cfg, "\nmetrics:", "\n    new_connections: false\nmetrics:", 1)
	d := daemontest.Start(t, cl.Nodes[0], dir, cfg)
	nstest.Echo(t, cl.Server, "", netip.AddrPortFrom(cl.Server4, 5353).String())

	// The client's exchange opens a connection on front; its reply
	// arrives on back and belongs to it.
	a := cl.Clients4[0]
	if _, err := cl.Client.Exchange("udp", a, netip.AddrPortFrom(cl.Server4, 5353), []byte("hello"), 3*time.Second); err != nil {
		t.Fatalf("client exchange through the node: %v", err)
	}

	// The server writes first to the other client, which listens.
	b := cl.Clients4[1]
	ln, err := cl.Client.ListenUDP(netip.AddrPortFrom(b, 7000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	refused := `xdpcluster_invalid_packets_total{interface="back",reason="new_refused"}`
	before := metric(t, d, refused)
	for i := 0; i < 5; i++ {
		c, err := cl.Server.Dial("udp", cl.Server4, netip.AddrPortFrom(b, 7000), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("unsolicited"))
		c.Close()
	}
	ln.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 64)
	if n, _, err := ln.ReadFrom(buf); err == nil {
		t.Fatalf("the client received %q: a connection the server opened on back was forwarded", buf[:n])
	}
	var after float64
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if after = metric(t, d, refused); after-max(before, 0) >= 5 {
			break
		}
	}
	if after-max(before, 0) < 5 {
		t.Fatalf("%s rose by %v, want 5", refused, after-max(before, 0))
	}
	// And the client's side still works after the refusals.
	if _, err := cl.Client.Exchange("udp", a, netip.AddrPortFrom(cl.Server4, 5353), []byte("again"), 3*time.Second); err != nil {
		t.Fatalf("client exchange after the refusals: %v", err)
	}
}
