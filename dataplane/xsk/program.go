// Package xsk holds the AF_XDP side of the dataplane: our XDP program,
// written in C (bpf/xsk.c) and compiled ahead of time with cilium/ebpf's
// bpf2go (the object and its Go bindings are committed: no clang at build
// or run time), and the AF_XDP port that the workers read and write.
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
	"github.com/cilium/ebpf/link"

	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
)

// The program's object and bindings (program_bpfel.o, program_bpfel.go):
// `make generate` rebuilds them with clang.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -output-stem program bpf ../../bpf/xsk.c -- -mcpu=v3 -Wall -Werror

// Program verdict counters, indexes of the per-CPU stats map (bpf/xsk.c's
// STAT_ enum).
const (
	StatToXSK    = iota // cluster-MAC IP frames sent to the AF_XDP socket
	StatNoSocket        // ... whose queue had no socket: passed to the kernel
	StatPassed          // everything else, passed to the kernel
	NumStats
)

// StatNames are the counters' metric labels.
var StatNames = [NumStats]string{"to_xsk", "no_socket", "passed"}

// MaxQueues bounds the queue indexes the program's socket map holds
// (bpf/xsk.c's MAX_QUEUES).
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
	spec, err := loadBpf()
	if err != nil {
		return nil, fmt.Errorf("read XDP program object: %w", err)
	}
	if err := spec.Variables[bpfVarClusterMac].Set(macVar(clusterMAC)); err != nil {
		return nil, fmt.Errorf("set the program's cluster MAC: %w", err)
	}
	var objs struct {
		bpfPrograms
		bpfMaps
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, fmt.Errorf("load XDP program: %w (needs CAP_BPF/root)", err)
	}
	return &Program{Prog: objs.Xdpcluster, xsks: objs.XcXsks, stats: objs.XcStats, mac: clusterMAC}, nil
}

// macVar is a MAC address as the program's struct xc_mac (bpf/parse.h)
// holds it: its six bytes as in the frame, then two of padding.
func macVar(mac net.HardwareAddr) (v [8]byte) {
	copy(v[:], mac)
	return v
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
