package xsk

import (
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/packet"
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

// TestTCProgramPassesOn: a frame the tc program leaves to the stack (not
// to the cluster MAC, or a cluster-MAC frame the fast path does not
// decide) goes on to the next program at tcx ingress (TC_ACT_UNSPEC), as
// XDP_PASS ends nothing: a program attached after ours still sees it. A
// frame ours decides (foreign, dropped) ends there.
func TestTCProgramPassesOn(t *testing.T) {
	needRoot(t)
	ns := nstest.Veth(t, "xctcn", "tna", "tnb")
	// Nothing but the test's frames: no IPv6 (router solicitations, MLD).
	nstest.Run(t, ns, "sysctl", "-qw", "net.ipv6.conf.tna.disable_ipv6=1", "net.ipv6.conf.tnb.disable_ipv6=1")
	fc, err := NewFlowCache(16, conntrack.NewClock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fc.Close() })
	p, err := NewTCProgram(clusterMAC, fc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	counts, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { counts.Close() })
	next, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, -1).WithSymbol("out"),
		asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { next.Close() })
	if err := ns.Do(func() error {
		ifc, err := net.InterfaceByName("tna")
		if err != nil {
			return err
		}
		if err := p.Attach(ifc.Index); err != nil {
			return err
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: next, Attach: ebpf.AttachTCXIngress, Anchor: link.Tail()})
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	other, _ := flowFrame(packet.ProtoUDP, "10.1.1.1", "198.51.100.1", 5000, 53, 32)
	copy(other[0:6], net.HardwareAddr{0x02, 0, 0, 0, 0, 9})
	miss, _ := flowFrame(packet.ProtoUDP, "10.1.1.2", "198.51.100.1", 5001, 53, 32)
	foreign, k := flowFrame(packet.ProtoUDP, "10.1.1.3", "198.51.100.1", 5002, 53, 32)
	if err := fc.Install([]dataplane.FlowKey{k}, []uint8{1}); err != nil {
		t.Fatal(err)
	}
	if err := fc.SetMatch(1, false); err != nil { // bucket 1 is another node's
		t.Fatal(err)
	}
	in := nstest.NewInjector(t, ns, "tnb")
	seen := func() uint64 {
		var v uint64
		if err := counts.Lookup(uint32(0), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		name  string
		frame []byte
		want  uint64
	}{{"another MAC", other, 1}, {"a miss", miss, 1}, {"foreign", foreign, 0}} {
		before := seen()
		in.Send(c.frame)
		time.Sleep(200 * time.Millisecond) // the veth delivers it at once
		if got := seen() - before; got != c.want {
			t.Errorf("%s: the next program saw %d frames, want %d", c.name, got, c.want)
		}
	}
	if st, _ := p.FastStats(); st.Foreign != 1 || st.Slow[SlowMiss] != 1 {
		t.Errorf("our program: foreign %d, misses %d; want 1 and 1", st.Foreign, st.Slow[SlowMiss])
	}
}
