// Package bench holds the end-to-end throughput harness's parts. This file
// is the traffic generator: BPF_PROG_RUN of an XDP program that returns
// XDP_TX, in live-frames mode, transmits a frame out of an interface
// millions of times a second without a user-space loop per packet.
package bench

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/dataplane/bpfutil"
)

// Generator sends frames out of one interface at kernel speed.
type Generator struct {
	prog    *ebpf.Program
	ifindex uint32
}

// xdpMd is the kernel's struct xdp_md, the program's context.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// NewGenerator loads the program (needs CAP_BPF/root). Frames leave
// through ifindex, which must be in the network namespace of the thread
// that calls Send. A veth peer must run NAPI (GRO on, or an XDP program)
// to accept them. On Linux 6.18 with GRO on the peer, only the first
// 64-frame batch of each Send reached the peer's IP stack (the rest are
// counted in its rx_packets but not in IP InReceives), and each call took
// about 25 ms; so bench/e2e drives an AF_PACKET TX ring instead.
func NewGenerator(ifindex int) (*Generator, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xc_gen", Type: ebpf.XDP, License: "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 3 /* XDP_TX */), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("load generator program: %w", err)
	}
	return &Generator{prog: prog, ifindex: uint32(ifindex)}, nil
}

// Send transmits frame repeat times.
func (g *Generator) Send(frame []byte, repeat uint32) error {
	if repeat == 0 {
		return errors.New("generator: repeat must be positive")
	}
	_, err := g.prog.Run(&ebpf.RunOptions{
		Data:    frame,
		Repeat:  repeat,
		Flags:   unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		Context: xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: g.ifindex},
	})
	if err != nil {
		return fmt.Errorf("generator: %w", err)
	}
	return nil
}

// Close unloads the program.
func (g *Generator) Close() error { return g.prog.Close() }

// DropCounter is the XDP_DROP ceiling: an XDP program that counts every
// frame in a per-CPU counter and drops it.
type DropCounter struct {
	Prog  *ebpf.Program
	count *ebpf.Map
}

// NewDropCounter loads it.
func NewDropCounter() (*DropCounter, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("drop counter map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "xc_drop", Type: ebpf.XDP, License: "Dual BSD/GPL",
		Instructions: append(bpfutil.Count(m.FD(), 0, "counted"), asm.Mov.Imm(asm.R0, 1 /* XDP_DROP */), asm.Return())})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("drop counter: %w", err)
	}
	return &DropCounter{Prog: prog, count: m}, nil
}

// Count is how many frames it dropped.
func (d *DropCounter) Count() uint64 {
	sums, _ := bpfutil.Sums(d.count, 1)
	return sums[0]
}

// Close unloads it.
func (d *DropCounter) Close() error { return errors.Join(d.Prog.Close(), d.count.Close()) }
