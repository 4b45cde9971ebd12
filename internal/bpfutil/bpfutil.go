// Package bpfutil holds the small pieces every BPF program of xdpcluster
// shares: a per-CPU counter increment in assembly, summing per-CPU
// counters, attaching an XDP program as a bpf_link with a mode fallback,
// and assembling classic BPF socket filters.
package bpfutil

import (
	"errors"
	"fmt"
	"net"
	"os"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Count emits stats[idx]++ on a per-CPU array map (clobbers R0-R5); label
// names its last instruction, the target when the lookup fails.
func Count(statsFD, idx int, label string) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, -4, int64(idx), asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, statsFD),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, label),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol(label),
	}
}

// Sums returns, for each of the first n keys of a per-CPU array of uint64,
// the sum over CPUs.
func Sums(m *ebpf.Map, n int) ([]uint64, error) {
	out := make([]uint64, n)
	for i := range out {
		var per []uint64
		if err := m.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}

// AttachMode is how an XDP program is attached to an interface: in the
// driver (native), in the kernel's generic skb path, or the first of the
// two that works. The zero value is ModeAuto.
type AttachMode uint8

// Attach modes.
const (
	// ModeAuto attaches natively if the driver supports it, else
	// generically; on veth generically first (see AutoGeneric).
	ModeAuto AttachMode = iota
	// ModeNative attaches in the driver (XDP_FLAGS_DRV_MODE) or fails.
	ModeNative
	// ModeGeneric attaches in the generic skb path (XDP_FLAGS_SKB_MODE).
	ModeGeneric
	numAttachModes
)

var attachModeNames = [numAttachModes]string{ModeAuto: "auto", ModeNative: "native", ModeGeneric: "generic"}

// String returns the mode's configuration name: "auto", "native" or
// "generic".
func (m AttachMode) String() string {
	if m < numAttachModes {
		return attachModeNames[m]
	}
	return fmt.Sprintf("AttachMode(%d)", uint8(m))
}

// ParseAttachMode parses a mode name as String returns it. It is the one
// place configuration text becomes an AttachMode; any other text is an
// error.
func ParseAttachMode(s string) (AttachMode, error) {
	for m, name := range attachModeNames {
		if s == name {
			return AttachMode(m), nil
		}
	}
	return 0, fmt.Errorf("xdp attach mode %q: must be auto, native or generic", s)
}

// VethGenericReason is why ModeAuto attaches generically on veth, for the
// callers' logs.
const VethGenericReason = "veth's native XDP receives through a fixed 256-frame ring that TCP bursts overflow; " +
	"generic XDP receives a stack's frames through the CPU's backlog"

// AutoGeneric reports whether ModeAuto attaches generically first on a
// link: on veth. Its native XDP takes frames from the peer through a
// fixed ring of 256 (VETH_RING_SIZE, no ethtool -G), which a TCP burst
// through a bridge overflows (measured: 0.56x the kernel recipe's TCP
// rate with 20x the retransmits, against 1.00-1.05x generic); generic XDP
// takes the frames a stack sends through the CPU's backlog
// (netdev_max_backlog), unless GRO is on for the veth, which brings the
// ring back in either mode. Both copy the bridge's cloned frames before
// the program sees them. Generic XDP sees every frame of a veth on RX
// queue 0 (the veth records no receive queue): a caller that reads
// several queues (the gateway's AF_XDP sockets) attaches natively there.
// See docs/dataplane.md.
func AutoGeneric(nl netlink.Link) bool { return nl.Type() == "veth" }

// candidates returns the modes Attach tries on nl, in order.
func (m AttachMode) candidates(nl netlink.Link) ([]AttachMode, error) {
	switch m {
	case ModeAuto:
		if AutoGeneric(nl) {
			return []AttachMode{ModeGeneric, ModeNative}, nil
		}
		return []AttachMode{ModeNative, ModeGeneric}, nil
	case ModeNative, ModeGeneric:
		return []AttachMode{m}, nil
	}
	return nil, fmt.Errorf("invalid xdp attach mode %s", m)
}

// Attach attaches prog to ifindex as a bpf_link in mode (ModeAuto: the
// first of native and generic that works, generic first on veth), after removing a program an
// earlier run attached through netlink, and returns the mode it attached
// in (ModeNative or ModeGeneric). A bpf_link is released with its
// process, so a crashed run leaves nothing attached. Call it with the
// thread in the interface's network namespace.
func Attach(prog *ebpf.Program, ifindex int, mode AttachMode) (AttachMode, link.Link, error) {
	nl, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return mode, nil, fmt.Errorf("interface %d: %w", ifindex, err)
	}
	modes, err := mode.candidates(nl)
	if err != nil {
		return mode, nil, fmt.Errorf("attach xdp to %s: %w", nl.Attrs().Name, err)
	}
	if x := nl.Attrs().Xdp; x != nil && x.Attached {
		netlink.LinkSetXdpFdWithFlags(nl, -1, unix.XDP_FLAGS_DRV_MODE)
		netlink.LinkSetXdpFdWithFlags(nl, -1, unix.XDP_FLAGS_SKB_MODE)
	}
	var errs []error
	for _, m := range modes {
		flags := link.XDPDriverMode
		if m == ModeGeneric {
			flags = link.XDPGenericMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m, err))
			continue
		}
		return m, l, nil
	}
	return mode, nil, fmt.Errorf("attach xdp to %s: %w", nl.Attrs().Name, errors.Join(errs...))
}

// SocketFilter assembles a classic BPF program for SO_ATTACH_FILTER.
func SocketFilter(ins []bpf.Instruction) ([]unix.SockFilter, error) {
	raw, err := bpf.Assemble(ins)
	if err != nil {
		return nil, fmt.Errorf("assemble socket filter: %w", err)
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}

// CheckAttached reports, through h (a netlink handle of the interface's
// namespace), whether interface ifindex is up and runs prog as its XDP
// program: nil if so, else an error naming the interface and what is
// wrong (link down, no program, another program). It is the dataplane's
// health: a node whose program was detached or whose link went down
// forwards nothing.
func CheckAttached(h *netlink.Handle, ifindex int, prog *ebpf.Program) error {
	l, err := h.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("interface %d: %w", ifindex, err)
	}
	a := l.Attrs()
	if a.Flags&net.FlagUp == 0 {
		return fmt.Errorf("interface %s is administratively down", a.Name)
	}
	if a.OperState == netlink.OperDown || a.OperState == netlink.OperLowerLayerDown {
		return fmt.Errorf("interface %s: link is %s", a.Name, a.OperState)
	}
	if prog == nil {
		return nil
	}
	info, err := prog.Info()
	if err != nil {
		return fmt.Errorf("interface %s: our xdp program: %w", a.Name, err)
	}
	id, _ := info.ID()
	switch {
	case a.Xdp == nil || !a.Xdp.Attached:
		return fmt.Errorf("interface %s: our xdp program was detached", a.Name)
	case a.Xdp.ProgId != uint32(id):
		return fmt.Errorf("interface %s: runs xdp program %d, not ours (%d)", a.Name, a.Xdp.ProgId, id)
	}
	return nil
}

// Mapped is the memory of a BPF_F_MMAPABLE array map, mapped into this
// process: words in it can be stored atomically (sync/atomic), so that a
// program reading one with a single load sees it old or new, never half
// written, as it may see a value written by a map update (a memcpy in the
// kernel, which another CPU can observe midway).
type Mapped struct{ mem []byte }

// MapMemory maps the first page of m, an array created with
// BPF_F_MMAPABLE (its first element starts at offset 0).
func MapMemory(m *ebpf.Map) (*Mapped, error) {
	mem, err := unix.Mmap(m.FD(), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map the memory of bpf map %s: %w", m, err)
	}
	return &Mapped{mem: mem}, nil
}

// Uint64 is the 8-byte word at off (a multiple of 8 within the page).
func (m *Mapped) Uint64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&m.mem[off : off+8][0])) }

// Uint32 is the 4-byte word at off (a multiple of 4 within the page).
func (m *Mapped) Uint32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&m.mem[off : off+4][0])) }

// Close unmaps the memory; the words must not be used afterwards.
func (m *Mapped) Close() error {
	if m == nil || m.mem == nil {
		return nil
	}
	err := unix.Munmap(m.mem)
	m.mem = nil
	return err
}
