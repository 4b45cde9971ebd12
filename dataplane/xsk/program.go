// Package xsk holds the AF_XDP side of the dataplane: our XDP program,
// built in Go with cilium/ebpf's assembler (no clang at run time), and
// the AF_XDP port that the workers read and write.
//
// The program, attached to each data interface, sends IPv4 and IPv6 frames
// addressed to that interface's cluster MAC (untagged or behind one or two
// 802.1Q/802.1ad tags) to the AF_XDP socket of the queue they arrived on.
// ARP, frames to the node's own MAC, multicast and everything else go to
// the kernel, where the control path and management traffic live (peers
// send neighbour solicitations to solicited-node multicast MACs, not to the
// cluster MAC). Per-CPU counters record each verdict.
//
// A Program is safe for concurrent use after Attach.
package xsk

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/jhash"
)

// Program verdict counters, indexes of the per-CPU stats map.
const (
	StatToXSK    = iota // cluster-MAC IP frames sent to the AF_XDP socket
	StatNoSocket        // ... whose queue had no socket: passed to the kernel
	StatPassed          // everything else, passed to the kernel
	NumStats
)

// StatNames are the counters' metric labels.
var StatNames = [NumStats]string{"to_xsk", "no_socket", "passed"}

// MaxQueues bounds the queue indexes the program's socket map holds.
const MaxQueues = 256

const (
	xdpPass = 2
)

// Program is our XDP program for one cluster MAC, with its socket map and
// counters.
type Program struct {
	Prog  *ebpf.Program
	xsks  *ebpf.Map
	stats *ebpf.Map
	mac   net.HardwareAddr
	links []link.Link
}

// NewProgram loads the program for frames addressed to clusterMAC. It needs
// CAP_BPF and CAP_NET_ADMIN (or root).
func NewProgram(clusterMAC net.HardwareAddr) (*Program, error) {
	if len(clusterMAC) != 6 {
		return nil, fmt.Errorf("cluster MAC %q: want 6 bytes", clusterMAC)
	}
	xsks, err := ebpf.NewMap(&ebpf.MapSpec{Name: "xc_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: MaxQueues})
	if err != nil {
		return nil, fmt.Errorf("create XSK map: %w (needs CAP_BPF/root)", err)
	}
	stats, err := ebpf.NewMap(&ebpf.MapSpec{Name: "xc_stats", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: NumStats})
	if err != nil {
		xsks.Close()
		return nil, fmt.Errorf("create stats map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "xdpcluster",
		Type:         ebpf.XDP,
		License:      "Dual BSD/GPL",
		Instructions: instructions(clusterMAC, xsks.FD(), stats.FD()),
	})
	if err != nil {
		xsks.Close()
		stats.Close()
		return nil, fmt.Errorf("load XDP program: %w", err)
	}
	return &Program{Prog: prog, xsks: xsks, stats: stats, mac: clusterMAC}, nil
}

// instructions builds the program. Loads from packet memory are little
// endian, so the MAC and EtherType constants are byte-swapped here.
func instructions(mac net.HardwareAddr, xsksFD, statsFD int) asm.Instructions {
	macLo := int32(jhash.Word(mac[0:4]))
	macHi := int32(uint32(mac[4]) | uint32(mac[5])<<8)
	const (
		ipv4 = 0x0008 // 0x0800 as loaded
		ipv6 = 0xdd86 // 0x86dd
		vlan = 0x0081 // 0x8100
		qinq = 0xa888 // 0x88a8
	)
	ins := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),              // ctx
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 0, asm.Word),
		asm.JNE.Imm32(asm.R5, macLo, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 4, asm.Half),
		asm.JNE.Imm32(asm.R5, macHi, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JEq.Imm(asm.R5, ipv4, "xsk"),
		asm.JEq.Imm(asm.R5, ipv6, "xsk"),
		asm.JEq.Imm(asm.R5, vlan, "tag1"),
		asm.JEq.Imm(asm.R5, qinq, "tag1"),
		asm.Ja.Label("pass"),
		// One tag: the EtherType after it.
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("tag1"),
		asm.Add.Imm(asm.R4, 18),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 16, asm.Half),
		asm.JEq.Imm(asm.R5, ipv4, "xsk"),
		asm.JEq.Imm(asm.R5, ipv6, "xsk"),
		asm.JNE.Imm(asm.R5, vlan, "pass"),
		// Two tags.
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 22),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 20, asm.Half),
		asm.JEq.Imm(asm.R5, ipv4, "xsk"),
		asm.JEq.Imm(asm.R5, ipv6, "xsk"),
		asm.Ja.Label("pass"),
	}
	toXSK := bpfutil.Count(statsFD, StatToXSK, "counted_xsk")
	toXSK[0] = toXSK[0].WithSymbol("xsk")
	ins = append(ins, toXSK...)
	ins = append(ins,
		asm.LoadMapPtr(asm.R1, xsksFD),
		asm.LoadMem(asm.R2, asm.R6, 16, asm.Word), // rx_queue_index
		asm.Mov.Imm(asm.R3, xdpPass),              // no socket: pass to the kernel
		asm.FnRedirectMap.Call(),
		asm.JNE.Imm(asm.R0, xdpPass, "out"),
		asm.Mov.Reg(asm.R7, asm.R0),
	)
	ins = append(ins, bpfutil.Count(statsFD, StatNoSocket, "counted_nosock")...)
	ins = append(ins,
		asm.Mov.Reg(asm.R0, asm.R7),
		asm.Return().WithSymbol("out"),
	)
	pass := bpfutil.Count(statsFD, StatPassed, "counted_pass")
	pass[0] = pass[0].WithSymbol("pass")
	ins = append(ins, pass...)
	ins = append(ins, asm.Mov.Imm(asm.R0, xdpPass), asm.Return())
	return ins
}

// Attach attaches the program to the interface as a bpf_link in mode
// (bpfutil.ModeAuto: natively if the driver supports it, else
// generically) and returns the mode it attached in; see bpfutil.Attach.
// Call it with the thread in the interface's network namespace.
func (p *Program) Attach(ifindex int, mode bpfutil.AttachMode) (bpfutil.AttachMode, error) {
	m, l, err := bpfutil.Attach(p.Prog, ifindex, mode)
	if err != nil {
		return m, err
	}
	p.links = append(p.links, l)
	return m, nil
}

// Detach removes the program from every interface it was attached to.
func (p *Program) Detach() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	return errors.Join(errs...)
}

// Register puts an AF_XDP socket into the program's map for a queue.
func (p *Program) Register(queue int, fd int) error {
	if err := p.xsks.Put(uint32(queue), uint32(fd)); err != nil {
		return fmt.Errorf("register xsk for queue %d: %w", queue, err)
	}
	return nil
}

// Unregister removes a queue's socket.
func (p *Program) Unregister(queue int) error { return p.xsks.Delete(uint32(queue)) }

// Stats sums the per-CPU verdict counters.
func (p *Program) Stats() ([NumStats]uint64, error) {
	var out [NumStats]uint64
	sums, err := bpfutil.Sums(p.stats, NumStats)
	copy(out[:], sums)
	return out, err
}

// Close detaches the program and unloads it and its maps.
func (p *Program) Close() error {
	return errors.Join(p.Detach(), p.Prog.Close(), p.xsks.Close(), p.stats.Close())
}
