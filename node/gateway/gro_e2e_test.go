package gateway_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

// TestAFPacketGROOff: with GRO on at the nodes' interfaces, and the
// switch's ports sending unsegmented frames (TSO and GSO off, so a veth
// merges them in its NAPI as a NIC's GRO would), the kernel hands packet
// sockets merged TCP packets longer than a ring slot, which the workers
// used to get truncated and drop as malformed: the connection stalled.
// The raw-socket gateway turns GRO off on its interfaces, so every echo
// completes with nothing malformed, with and without the tc fast path;
// Close turns GRO back on.
func TestAFPacketGROOff(t *testing.T) {
	for _, fp := range fastPaths {
		t.Run("fast_path="+string(fp), func(t *testing.T) {
			cl := nstest.Cluster(t, "xc-gro", netns.ClusterOptions{Nodes: 3, Clients4: 12, Clients6: 1})
			for i := range cl.Nodes {
				for _, p := range []string{"swf", "swb"} {
					nstest.Run(t, cl.Switch, "ethtool", "-K", fmt.Sprintf("%s%d", p, i+1), "tso", "off", "gso", "off")
				}
			}
			for _, ns := range cl.Nodes {
				for _, ifc := range []string{"front", "back"} {
					nstest.Run(t, ns, "ethtool", "-K", ifc, "gro", "on")
				}
			}
			nodes := startMixed(t, cl, 0, "afpacket", fp, bpfutil.ModeAuto)
			for i, ns := range cl.Nodes {
				if gro := nstest.GRO(t, ns, "front"); gro != "off" {
					t.Errorf("node %d: GRO on front is %s while the gateway runs, want off", i+1, gro)
				}
			}
			servers(t, cl)
			for _, a := range cl.Clients4 {
				c := dial(t, cl, a)
				echo(t, c, 200000)
				c.Close()
			}
			for i, n := range nodes {
				pkts, _, _ := n.gw.Dataplane().Totals(-1)
				if m := pkts[dataplane.Malformed]; m != 0 {
					t.Errorf("node %d: %d packets malformed", i+1, m)
				}
				if err := n.gw.Close(); err != nil {
					t.Errorf("node %d: close: %v", i+1, err)
				}
				for _, ifc := range []string{"front", "back"} {
					if gro := nstest.GRO(t, cl.Nodes[i], ifc); gro != "on" {
						t.Errorf("node %d: GRO on %s is %s after Close, want on again", i+1, ifc, gro)
					}
				}
			}
		})
	}
}

// TestGROStateAfterCrash: a raw-socket gateway records the interface whose
// GRO it turns off before it does; a run that did not stop cleanly leaves
// the record and GRO off, and the next start turns GRO back on, whatever
// its I/O (AF_XDP here), and removes the record. A clean Close of a
// raw-socket gateway turns GRO back on and removes the record too.
func TestGROStateAfterCrash(t *testing.T) {
	ns := nstest.Veth(t, "xc-grost", "dpa", "dpb")
	state := filepath.Join(t.TempDir(), "gro-off.json")
	start := func(io dataplane.IO) *gateway.Gateway { t.Helper(); return startDpa(t, ns, io, state) }
	nstest.Run(t, ns, "ethtool", "-K", "dpa", "gro", "on")
	g := start(dataplane.IOAFPacket)
	if gro := nstest.GRO(t, ns, "dpa"); gro != "off" {
		t.Fatalf("raw sockets: GRO %s, want off", gro)
	}
	b, err := os.ReadFile(state)
	if err != nil || !strings.Contains(string(b), `"interfaces":["dpa"]`) {
		t.Fatalf("record %q, %v; want dpa in it", b, err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if gro := nstest.GRO(t, ns, "dpa"); gro != "on" {
		t.Errorf("after Close: GRO %s, want on", gro)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Close the record is still there: %v", err)
	}

	// A crash: the record stays and GRO stays off.
	g = start(dataplane.IOAFPacket)
	crashed, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	g.Close() // turns GRO on and removes the record; put back what a crash leaves
	nstest.Run(t, ns, "ethtool", "-K", "dpa", "gro", "off")
	if err := os.WriteFile(state, crashed, 0o644); err != nil {
		t.Fatal(err)
	}
	g = start(dataplane.IOAFXDP)
	defer g.Close()
	if gro := nstest.GRO(t, ns, "dpa"); gro != "on" {
		t.Errorf("the start after a crash: GRO %s, want on again", gro)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the start after a crash left the record: %v", err)
	}
}
