package bpfutil_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"

	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestVethQueuesByMode: on a 2-queue veth the peer spreads 64 UDP flows
// over its 2 TX queues. Native XDP sees them on RX queues 0 and 1; generic
// XDP sees every frame on queue 0 (the veth records no RX queue). This is
// why the gateway, which opens one AF_XDP socket per queue, attaches
// natively on a veth with several queues even when xdp_mode auto would
// attach generically (node/gateway's TestGatewayXDPMode checks that).
func TestVethQueuesByMode(t *testing.T) {
	nstest.Require(t)
	for _, mode := range []bpfutil.AttachMode{bpfutil.ModeNative, bpfutil.ModeGeneric} {
		t.Run(mode.String(), func(t *testing.T) {
			ns := nstest.New(t, "xc-rq")
			nstest.Run(t, ns, "ip", "link", "add", "a0", "numtxqueues", "2", "numrxqueues", "2", "type", "veth", "peer", "name", "b0", "numtxqueues", "2", "numrxqueues", "2")
			nstest.Run(t, ns, "ip", "addr", "add", "10.9.0.1/24", "dev", "a0")
			nstest.Run(t, ns, "ip", "addr", "add", "10.9.1.2/24", "dev", "b0")
			nstest.Run(t, ns, "ip", "link", "set", "a0", "up")
			nstest.Run(t, ns, "ip", "link", "set", "b0", "up")
			nstest.Run(t, ns, "ip", "route", "add", "10.9.9.0/24", "dev", "b0")
			nstest.Run(t, ns, "ip", "neigh", "replace", "10.9.9.9", "lladdr", "02:00:00:00:00:09", "dev", "b0", "nud", "permanent")
			counts, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 8})
			if err != nil {
				t.Fatal(err)
			}
			defer counts.Close()
			prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
				asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // rx_queue_index
				asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),
				asm.LoadMapPtr(asm.R1, counts.FD()),
				asm.Mov.Reg(asm.R2, asm.RFP),
				asm.Add.Imm(asm.R2, -4),
				asm.FnMapLookupElem.Call(),
				asm.JEq.Imm(asm.R0, 0, "out"),
				asm.Mov.Imm(asm.R1, 1),
				asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
				asm.Mov.Imm(asm.R0, 1).WithSymbol("out"), // XDP_DROP
				asm.Return(),
			}})
			if err != nil {
				t.Fatal(err)
			}
			defer prog.Close()
			err = ns.Do(func() error {
				nl, err := netlink.LinkByName("a0")
				if err != nil {
					return err
				}
				got, l, err := bpfutil.Attach(prog, nl.Attrs().Index, mode)
				if err != nil {
					return err
				}
				defer l.Close()
				if got != mode {
					return fmt.Errorf("attached %v, want %v", got, mode)
				}
				for i := 0; i < 64; i++ {
					c, err := net.Dial("udp", fmt.Sprintf("10.9.9.9:%d", 1000+i))
					if err != nil {
						return err
					}
					for j := 0; j < 10; j++ {
						c.Write([]byte("x"))
					}
					c.Close()
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var per [2]uint64
			for q := range per {
				if err := counts.Lookup(uint32(q), &per[q]); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("%v: frames by rx_queue_index: %v", mode, per)
			if per[0]+per[1] < 640 {
				t.Fatalf("%v: frames by RX queue %v, want 640 in all", mode, per)
			}
			if spread := per[0] > 0 && per[1] > 0; spread != (mode == bpfutil.ModeNative) {
				t.Errorf("%v on a 2-queue veth: frames by RX queue %v; want them spread over both queues natively and all on queue 0 generically", mode, per)
			}
		})
	}
}
