// Package backend is back-end mode: servers that share a cluster IP, each
// serving its share of the clients through its own TCP/IP stack. The
// decision is made in our XDP program itself, bit-exact with cluster.Match
// (the kernel's xt_cluster): jhash_1word over the first 32 bits of the
// source address, reciprocal_scale, the node mask, invert. Owned frames
// addressed to the cluster MAC get the interface's own MAC as destination
// (so the stack sees PACKET_HOST, as xt_cluster's pkt_type fix-up does)
// and go up the stack; foreign ones are dropped at XDP_DROP speed; ARP, ND
// and everything not sent to the cluster MAC pass untouched.
//
// ICMP and ICMPv6 errors (unreachable, packet too big, time exceeded,
// parameter problem) are decided by the destination of the packet they
// embed: the client of the connection they report on, so path MTU
// discovery works for every node's connections. Fragments all carry the
// source address, so they are decided alike without state.
//
// The parameters (node count, mask, seed, invert) live in a BPF map: SetMatch
// changes them at run time without reloading the program. A Program is
// safe for concurrent use.
package backend

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/jhash"
)

// Counters of the program (per-CPU map indexes).
const (
	StatOwned     = iota // owned: destination MAC rewritten, passed to the stack
	StatForeign          // another node's: dropped
	StatOther            // not IP to the cluster MAC: passed untouched
	StatICMPInner        // ICMP errors decided by their embedded packet
	StatMalformed        // IP to the cluster MAC but unreadable: dropped
	NumStats
)

// StatNames are the counters' metric labels.
var StatNames = [NumStats]string{"owned", "foreign", "passed", "icmp_error_inner", "malformed"}

const (
	xdpDrop = 1
	xdpPass = 2
)

// params is the map value the program reads: keep in sync with the loads.
type params struct {
	Total   uint32 // 0: not configured, drop
	Mask    uint32
	InitVal uint32 // seed + JHASH_INITVAL + 4: jhash_1word's initial value
	Invert  uint32
}

// Program is the back-end XDP program for one interface.
type Program struct {
	Prog   *ebpf.Program
	params *ebpf.Map
	stats  *ebpf.Map
	links  []link.Link
}

// NewProgram loads the program for frames to clusterMAC on an interface
// whose own MAC is ownMAC, deciding with m.
func NewProgram(clusterMAC, ownMAC net.HardwareAddr, m cluster.Match) (*Program, error) {
	if len(clusterMAC) != 6 || len(ownMAC) != 6 {
		return nil, errors.New("backend: MAC addresses must have 6 bytes")
	}
	if m.Hash != cluster.HashXtCluster {
		return nil, fmt.Errorf("backend: hash %s: back-end mode implements the kernel-compatible xt_cluster hash only", m.Hash)
	}
	pm, err := ebpf.NewMap(&ebpf.MapSpec{Name: "xc_be_params", Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("create params map: %w (needs CAP_BPF)", err)
	}
	st, err := ebpf.NewMap(&ebpf.MapSpec{Name: "xc_be_stats", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: NumStats})
	if err != nil {
		pm.Close()
		return nil, fmt.Errorf("create stats map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "xdpcluster_be", Type: ebpf.XDP, License: "Dual BSD/GPL",
		Instructions: instructions(clusterMAC, ownMAC, pm.FD(), st.FD())})
	if err != nil {
		pm.Close()
		st.Close()
		return nil, fmt.Errorf("load back-end XDP program: %w", err)
	}
	p := &Program{Prog: prog, params: pm, stats: st}
	if err := p.SetMatch(m); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// SetMatch changes the decision at run time (takeover, release, reload).
func (p *Program) SetMatch(m cluster.Match) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if m.Hash != cluster.HashXtCluster {
		return fmt.Errorf("backend: hash %s: only xt_cluster is implemented in XDP", m.Hash)
	}
	v := params{Total: m.TotalNodes, Mask: m.NodeMask, InitVal: m.Seed + jhash.InitVal + 4}
	if m.Invert {
		v.Invert = 1
	}
	if err := p.params.Put(uint32(0), v); err != nil {
		return fmt.Errorf("update back-end parameters: %w", err)
	}
	return nil
}

// rol emits dst = rol32(src, k) using tmp (32-bit ALU).
func rol(dst, src, tmp asm.Register, k int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg32(dst, src),
		asm.LSh.Imm32(dst, k),
		asm.Mov.Reg32(tmp, src),
		asm.RSh.Imm32(tmp, 32-k),
		asm.Or.Reg32(dst, tmp),
	}
}

// step emits x ^= y; x -= rol32(y, k) (a line of __jhash_final).
func step(x, y asm.Register, k int32) asm.Instructions {
	ins := asm.Instructions{asm.Xor.Reg32(x, y)}
	ins = append(ins, rol(asm.R4, y, asm.R5, k)...)
	return append(ins, asm.Sub.Reg32(x, asm.R4))
}

// instructions builds the program. Registers: R6 ctx, R7 L3 header, R3
// data_end, R8 the hash key word, R9 scratch. Packet loads are little
// endian, so constants are byte-swapped.
func instructions(clusterMAC, ownMAC net.HardwareAddr, paramsFD, statsFD int) asm.Instructions {
	const (
		ipv4 = 0x0008
		ipv6 = 0xdd86
		vlan = 0x0081
		qinq = 0xa888
	)
	R0, R1, R2, R3, R4, R5, R6, R7, R8, R9 := asm.R0, asm.R1, asm.R2, asm.R3, asm.R4, asm.R5, asm.R6, asm.R7, asm.R8, asm.R9
	// l3 emits R7 = data + off, the start of the L3 header. It checks
	// nothing: the v4 and v6 blocks check that their fixed header (20 or
	// 40 bytes) fits before data_end before they load from R7, which the
	// verifier requires of every packet load.
	l3 := func(off int32) asm.Instructions {
		return asm.Instructions{asm.Mov.Reg(R7, R2), asm.Add.Imm(R7, off)}
	}
	ins := asm.Instructions{
		asm.Mov.Reg(R6, R1),
		asm.LoadMem(R2, R6, 0, asm.Word),
		asm.LoadMem(R3, R6, 4, asm.Word),
		asm.Mov.Reg(R4, R2),
		asm.Add.Imm(R4, 14),
		asm.JGT.Reg(R4, R3, "other"),
		asm.LoadMem(R5, R2, 0, asm.Word),
		asm.JNE.Imm32(R5, int32(jhash.Word(clusterMAC[0:4])), "other"),
		asm.LoadMem(R5, R2, 4, asm.Half),
		asm.JNE.Imm32(R5, int32(uint32(clusterMAC[4])|uint32(clusterMAC[5])<<8), "other"),
		asm.LoadMem(R5, R2, 12, asm.Half),
	}
	ins = append(ins, l3(14)...)
	ins = append(ins,
		asm.JEq.Imm(R5, ipv4, "v4"),
		asm.JEq.Imm(R5, ipv6, "v6"),
		asm.JEq.Imm(R5, vlan, "tag1"),
		asm.JEq.Imm(R5, qinq, "tag1"),
		asm.Ja.Label("other"),
		asm.Mov.Reg(R4, R2).WithSymbol("tag1"),
		asm.Add.Imm(R4, 18),
		asm.JGT.Reg(R4, R3, "other"),
		asm.LoadMem(R5, R2, 16, asm.Half),
	)
	ins = append(ins, l3(18)...)
	ins = append(ins,
		asm.JEq.Imm(R5, ipv4, "v4"),
		asm.JEq.Imm(R5, ipv6, "v6"),
		asm.JNE.Imm(R5, vlan, "other"),
		asm.Mov.Reg(R4, R2),
		asm.Add.Imm(R4, 22),
		asm.JGT.Reg(R4, R3, "other"),
		asm.LoadMem(R5, R2, 20, asm.Half),
	)
	ins = append(ins, l3(22)...)
	ins = append(ins,
		asm.JEq.Imm(R5, ipv4, "v4"),
		asm.JEq.Imm(R5, ipv6, "v6"),
		asm.Ja.Label("other"),

		// IPv4: R7 = header.
		asm.Mov.Reg(R4, R7).WithSymbol("v4"),
		asm.Add.Imm(R4, 20),
		asm.JGT.Reg(R4, R3, "malformed"),
		asm.LoadMem(R5, R7, 0, asm.Byte),
		asm.Mov.Reg(R9, R5),
		asm.RSh.Imm(R9, 4),
		asm.JNE.Imm(R9, 4, "malformed"),
		asm.And.Imm(R5, 0x0f),
		asm.JLT.Imm(R5, 5, "malformed"),
		asm.LoadMem(R8, R7, 12, asm.Word), // source address: the key
		asm.LoadMem(R9, R7, 9, asm.Byte),
		asm.JNE.Imm(R9, 1, "hash"), // not ICMP
		asm.LoadMem(R9, R7, 6, asm.Half),
		asm.And.Imm(R9, 0xff1f), // fragment offset (byte-swapped): a later fragment has no ICMP header
		asm.JNE.Imm(R9, 0, "hash"),
		asm.LSh.Imm(R5, 2), // header length 20..60
		asm.Add.Reg(R7, R5),
		asm.Mov.Reg(R4, R7),
		asm.Add.Imm(R4, 8+20),
		asm.JGT.Reg(R4, R3, "hash"), // no room for an embedded header: decide by the source
		asm.LoadMem(R9, R7, 0, asm.Byte),
		asm.JEq.Imm(R9, 3, "v4inner"),
		asm.JEq.Imm(R9, 11, "v4inner"),
		asm.JEq.Imm(R9, 12, "v4inner"),
		asm.JEq.Imm(R9, 4, "v4inner"),
		asm.JEq.Imm(R9, 5, "v4inner"),
		asm.Ja.Label("hash"),
		asm.LoadMem(R8, R7, 8+16, asm.Word).WithSymbol("v4inner"), // embedded destination
		asm.Ja.Label("icmp"),

		// IPv6: R7 = header.
		asm.Mov.Reg(R4, R7).WithSymbol("v6"),
		asm.Add.Imm(R4, 40),
		asm.JGT.Reg(R4, R3, "malformed"),
		asm.LoadMem(R5, R7, 0, asm.Byte),
		asm.RSh.Imm(R5, 4),
		asm.JNE.Imm(R5, 6, "malformed"),
		asm.LoadMem(R8, R7, 8, asm.Word), // first word of the source
		asm.LoadMem(R9, R7, 6, asm.Byte),
		asm.JNE.Imm(R9, 58, "hash"), // not ICMPv6 right after the header
		asm.Mov.Reg(R4, R7),
		asm.Add.Imm(R4, 40+8+40),
		asm.JGT.Reg(R4, R3, "hash"),
		asm.LoadMem(R9, R7, 40, asm.Byte),
		asm.JEq.Imm(R9, 0, "hash"),
		asm.JGT.Imm(R9, 4, "hash"),
		asm.LoadMem(R8, R7, 40+8+24, asm.Word), // embedded destination's first word
		asm.Ja.Label("icmp"),
	)
	icmp := bpfutil.Count(statsFD, StatICMPInner, "counted_icmp")
	icmp[0] = icmp[0].WithSymbol("icmp")
	ins = append(ins, icmp...)
	ins = append(ins,
		// hash: R8 = key word. Look up the parameters.
		asm.StoreImm(asm.R10, -4, 0, asm.Word).WithSymbol("hash"),
		asm.Mov.Reg(R2, asm.R10),
		asm.Add.Imm(R2, -4),
		asm.LoadMapPtr(R1, paramsFD),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(R0, 0, "malformed"),
		asm.Mov.Reg(R9, R0),              // params
		asm.LoadMem(R1, R9, 8, asm.Word), // initval
		asm.Mov.Reg32(R0, R8),
		asm.Add.Reg32(R0, R1), // a
		asm.Mov.Reg32(R2, R1), // b
		asm.Mov.Reg32(R3, R1), // c
	)
	// __jhash_final(a=R0, b=R2, c=R3)
	ins = append(ins, step(R3, R2, 14)...)
	ins = append(ins, step(R0, R3, 11)...)
	ins = append(ins, step(R2, R0, 25)...)
	ins = append(ins, step(R3, R2, 16)...)
	ins = append(ins, step(R0, R3, 4)...)
	ins = append(ins, step(R2, R0, 14)...)
	ins = append(ins, step(R3, R2, 24)...)
	ins = append(ins,
		// node = (c * total) >> 32; owns = (mask >> node) & 1 ^ invert
		asm.LoadMem(R1, R9, 0, asm.Word),
		asm.JEq.Imm(R1, 0, "malformed"),
		asm.Mul.Reg(R3, R1),
		asm.RSh.Imm(R3, 32),
		asm.LoadMem(R1, R9, 4, asm.Word),
		asm.RSh.Reg(R1, R3),
		asm.And.Imm(R1, 1),
		asm.LoadMem(R2, R9, 12, asm.Word),
		asm.Xor.Reg(R1, R2),
		asm.JEq.Imm(R1, 0, "foreign"),
		// Owned: our own MAC as destination, then up the stack.
		asm.LoadMem(R2, R6, 0, asm.Word),
		asm.LoadMem(R3, R6, 4, asm.Word),
		asm.Mov.Reg(R4, R2),
		asm.Add.Imm(R4, 6),
		asm.JGT.Reg(R4, R3, "malformed"),
		asm.StoreImm(R2, 0, int64(jhash.Word(ownMAC[0:4])), asm.Word),
		asm.StoreImm(R2, 4, int64(uint32(ownMAC[4])|uint32(ownMAC[5])<<8), asm.Half),
	)
	owned := bpfutil.Count(statsFD, StatOwned, "counted_owned")
	ins = append(ins, owned...)
	ins = append(ins, asm.Mov.Imm(R0, xdpPass), asm.Return())
	foreign := bpfutil.Count(statsFD, StatForeign, "counted_foreign")
	foreign[0] = foreign[0].WithSymbol("foreign")
	ins = append(ins, foreign...)
	ins = append(ins, asm.Mov.Imm(R0, xdpDrop), asm.Return())
	mal := bpfutil.Count(statsFD, StatMalformed, "counted_mal")
	mal[0] = mal[0].WithSymbol("malformed")
	ins = append(ins, mal...)
	ins = append(ins, asm.Mov.Imm(R0, xdpDrop), asm.Return())
	other := bpfutil.Count(statsFD, StatOther, "counted_other")
	other[0] = other[0].WithSymbol("other")
	ins = append(ins, other...)
	ins = append(ins, asm.Mov.Imm(R0, xdpPass), asm.Return())
	return ins
}

// Attach attaches the program to ifindex as a bpf_link in mode and
// returns the mode it attached in. bpfutil.ModeAuto attaches natively,
// else generically, except on a veth, where it attaches generically:
// veth's native XDP runs on an skb that keeps its packet type, so a frame
// whose destination MAC the program rewrote would still reach the stack
// as multicast and TCP would drop it; generic XDP re-derives the packet
// type (as a real NIC's driver does when it builds the skb after XDP).
// Call it with the thread in the interface's namespace.
func (p *Program) Attach(ifindex int, mode bpfutil.AttachMode) (bpfutil.AttachMode, error) {
	if mode == bpfutil.ModeAuto {
		if nl, err := netlink.LinkByIndex(ifindex); err == nil && nl.Type() == "veth" {
			mode = bpfutil.ModeGeneric
		}
	}
	m, l, err := bpfutil.Attach(p.Prog, ifindex, mode)
	if err != nil {
		return m, err
	}
	p.links = append(p.links, l)
	return m, nil
}

// Stats sums the per-CPU counters.
func (p *Program) Stats() ([NumStats]uint64, error) {
	var out [NumStats]uint64
	sums, err := bpfutil.Sums(p.stats, NumStats)
	copy(out[:], sums)
	return out, err
}

// Close detaches and unloads the program.
func (p *Program) Close() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	return errors.Join(append(errs, p.Prog.Close(), p.params.Close(), p.stats.Close())...)
}
