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
// to accept them.
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
