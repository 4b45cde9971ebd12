package xsk

import (
	"net"
	"testing"

	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestTCProgramAttached: Attached reports the program's tcx link while it
// holds the interface, and an error before Attach, once the interface is
// deleted, and after Detach; the interface's tcx ingress then runs no
// program of ours.
func TestTCProgramAttached(t *testing.T) {
	needRoot(t)
	ns := nstest.Veth(t, "xctcx", "tca", "tcb")
	nstest.Run(t, ns, "ip", "link", "add", "tcc", "type", "veth", "peer", "name", "tcd")
	fc, err := NewFlowCache(16, conntrack.NewClock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fc.Close() })
	attach := func(name string) *TCProgram {
		t.Helper()
		p, err := NewTCProgram(clusterMAC, fc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		if err := p.Attached(); err == nil {
			t.Error("Attached before Attach: nil, want an error")
		}
		if err := ns.Do(func() error {
			ifc, err := net.InterfaceByName(name)
			if err != nil {
				return err
			}
			return p.Attach(ifc.Index)
		}); err != nil {
			t.Fatal(err)
		}
		if err := p.Attached(); err != nil {
			t.Fatalf("Attached after Attach: %v", err)
		}
		return p
	}
	a := attach("tca")
	nstest.Run(t, ns, "ip", "link", "del", "tca") // and its peer
	if err := a.Attached(); err == nil {
		t.Error("Attached after the interface was deleted: nil, want an error")
	}
	b := attach("tcc")
	if err := b.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := b.Attached(); err == nil {
		t.Error("Attached after Detach: nil, want an error")
	}
}
