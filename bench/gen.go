// Package bench holds the end-to-end throughput harness's parts. This file
// is the traffic generator: BPF_PROG_RUN of an XDP program that returns
// XDP_TX, in live-frames mode, transmits a frame out of an interface
// millions of times a second without a user-space loop per packet.
package bench

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
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
// to accept them. The frame's page is recycled without restoring its
// bytes, so only a receiver that does not modify frames (an XDP program
// that drops or redirects) sees the frame unchanged: to feed a kernel
// that forwards, use TemplateGenerator.
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

// templateSize is the frame a TemplateGenerator writes: 60 bytes, an
// Ethernet + IPv4 + UDP header and padding.
const templateSize = 60

// Template value layout in the generator's map: the frame, then the state.
const (
	tmplCounter = 64 // u64: frames written so far
	tmplMask    = 72 // u64: sources - 1
	tmplSum     = 80 // u64: folded one's-complement sum of the IPv4 header with checksum 0 and source low bits 0
	tmplValue   = 88
)

// TemplateGenerator is a live-frames generator that rewrites the whole
// frame from a template before every XDP_TX, and walks the low 16 bits of
// the IPv4 source through sources addresses (fixing the header checksum).
//
// Rewriting matters: in live-frames mode the kernel recycles the frame's
// page without restoring its bytes, and a receiver that forwards a packet
// rewrites the Ethernet header and the TTL in place, so later copies of a
// plain XDP_TX generator arrive for another MAC and are dropped as
// PACKET_OTHERHOST (only the first 64-frame batch of each run got
// through).
type TemplateGenerator struct {
	prog    *ebpf.Program
	tmpl    *ebpf.Map
	ifindex uint32
}

// NewTemplateGenerator loads the program. frame must be a 60-byte
// Ethernet/IPv4 frame whose source address ends in .0.0; sources is a
// power of two up to 65,536.
func NewTemplateGenerator(ifindex int, frame []byte, sources int) (*TemplateGenerator, error) {
	if len(frame) != templateSize || frame[12] != 0x08 || frame[13] != 0 || frame[14] != 0x45 {
		return nil, fmt.Errorf("template generator: want a %d-byte Ethernet/IPv4 frame without options", templateSize)
	}
	if sources < 1 || sources > 65536 || sources&(sources-1) != 0 {
		return nil, fmt.Errorf("template generator: sources %d: want a power of two from 1 to 65536", sources)
	}
	if frame[14+14] != 0 || frame[14+15] != 0 {
		return nil, fmt.Errorf("template generator: source address must end in .0.0")
	}
	v := make([]byte, tmplValue)
	copy(v, frame)
	v[24], v[25] = 0, 0 // the checksum is computed per frame
	var sum uint32
	for i := 14; i < 34; i += 2 {
		sum += uint32(v[i])<<8 | uint32(v[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.NativeEndian.PutUint64(v[tmplMask:], uint64(sources-1))
	binary.NativeEndian.PutUint64(v[tmplSum:], uint64(sum))
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: tmplValue, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("template generator: map: %w", err)
	}
	if err := m.Put(uint32(0), v); err != nil {
		m.Close()
		return nil, fmt.Errorf("template generator: store template: %w", err)
	}
	ins := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R8, asm.R7),
		asm.Add.Imm(asm.R8, templateSize),
		asm.JGT.Reg(asm.R8, asm.R3, "drop"),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
	}
	for off := int16(0); off < 56; off += 8 {
		ins = append(ins, asm.LoadMem(asm.R1, asm.R0, off, asm.DWord), asm.StoreMem(asm.R7, off, asm.R1, asm.DWord))
	}
	ins = append(ins,
		asm.LoadMem(asm.R1, asm.R0, 56, asm.Word), asm.StoreMem(asm.R7, 56, asm.R1, asm.Word),
		// k = counter++ & mask
		asm.LoadMem(asm.R1, asm.R0, tmplCounter, asm.DWord),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.Add.Imm(asm.R2, 1),
		asm.StoreMem(asm.R0, tmplCounter, asm.R2, asm.DWord),
		asm.LoadMem(asm.R2, asm.R0, tmplMask, asm.DWord),
		asm.And.Reg(asm.R1, asm.R2),
		// checksum = ^fold(sum + k)
		asm.LoadMem(asm.R2, asm.R0, tmplSum, asm.DWord),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.RSh.Imm(asm.R3, 16),
		asm.And.Imm(asm.R2, 0xffff),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.RSh.Imm(asm.R3, 16),
		asm.And.Imm(asm.R2, 0xffff),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.Xor.Imm(asm.R2, 0xffff),
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.StoreMem(asm.R7, 24, asm.R2, asm.Half),
		asm.HostTo(asm.BE, asm.R1, asm.Half),
		asm.StoreMem(asm.R7, 28, asm.R1, asm.Half),
		asm.Mov.Imm(asm.R0, 3), // XDP_TX
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("drop"), // XDP_DROP
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "xc_gen_tmpl", Type: ebpf.XDP, License: "Dual BSD/GPL", Instructions: ins})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("load template generator program: %w", err)
	}
	return &TemplateGenerator{prog: prog, tmpl: m, ifindex: uint32(ifindex)}, nil
}

// Send transmits repeat frames, continuing the walk over the sources.
func (g *TemplateGenerator) Send(repeat uint32) error {
	if repeat == 0 {
		return errors.New("template generator: repeat must be positive")
	}
	frame := make([]byte, templateSize)
	_, err := g.prog.Run(&ebpf.RunOptions{
		Data:    frame,
		Repeat:  repeat,
		Flags:   unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		Context: xdpMd{DataEnd: templateSize, IngressIfindex: g.ifindex},
	})
	if err != nil {
		return fmt.Errorf("template generator: %w", err)
	}
	return nil
}

// Close unloads the program and its map.
func (g *TemplateGenerator) Close() error { return errors.Join(g.prog.Close(), g.tmpl.Close()) }
