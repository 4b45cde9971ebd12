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
//
// The program is written in C (bpf/backend.c, with the parse and jhash
// headers it shares with the gateway's program) and compiled ahead of time
// with cilium/ebpf's bpf2go; the object and its Go bindings are committed,
// so neither building nor running needs clang.
package backend

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
)

// The program's object and bindings (program_bpfel.o, program_bpfel.go):
// `make generate` rebuilds them with clang.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -output-stem program bpf ../../bpf/backend.c -- -mcpu=v3 -Wall -Werror

// Counters of the program (per-CPU map indexes, bpf/backend.c's STAT_
// enum).
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

// Program is the back-end XDP program for one interface.
type Program struct {
	Prog   *ebpf.Program
	params *ebpf.Map
	mu     sync.Mutex      // keeps Close from unmapping params under a SetMatch
	mapped *bpfutil.Mapped // params' memory: SetMatch stores its words atomically
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
	spec, err := loadBpf()
	if err != nil {
		return nil, fmt.Errorf("read back-end XDP program object: %w", err)
	}
	for name, mac := range map[string]net.HardwareAddr{bpfVarClusterMac: clusterMAC, bpfVarOwnMac: ownMAC} {
		if err := spec.Variables[name].Set(macVar(mac)); err != nil {
			return nil, fmt.Errorf("set the program's %s: %w", name, err)
		}
	}
	var objs struct {
		bpfPrograms
		bpfMaps
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, fmt.Errorf("load back-end XDP program: %w (needs CAP_BPF)", err)
	}
	p := &Program{Prog: objs.XdpclusterBe, params: objs.XcBeParams, stats: objs.XcBeStats}
	if p.mapped, err = bpfutil.MapMemory(p.params); err != nil {
		p.Close()
		return nil, fmt.Errorf("backend: %w", err)
	}
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
	// bpf/backend.c's struct params, word by word: the ownership (mask
	// and invert) is one word, so a takeover or release reaches every
	// packet whole. Total and seed are set once (Node.SetMatch refuses
	// to change them at run time).
	own := uint64(m.NodeMask)
	if m.Invert {
		own |= 1 << 32
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mapped == nil {
		return errors.New("update back-end parameters: the program is closed")
	}
	atomic.StoreUint32(p.mapped.Uint32(8), m.TotalNodes)
	atomic.StoreUint32(p.mapped.Uint32(12), m.Seed)
	atomic.StoreUint64(p.mapped.Uint64(0), own)
	return nil
}

// macVar is a MAC address as the program's struct xc_mac (bpf/parse.h)
// holds it: its six bytes as in the frame, then two of padding.
func macVar(mac net.HardwareAddr) (v [8]byte) {
	copy(v[:], mac)
	return v
}

// Attach attaches the program to ifindex as a bpf_link in mode and
// returns the mode it attached in. bpfutil.ModeAuto attaches natively,
// else generically, except on a veth, where it attaches generically
// and only so (bpfutil.AutoGeneric). For a back end that matters beyond veth's
// receive ring: veth's native XDP runs on an skb that keeps its packet
// type, so a frame whose destination MAC the program rewrote would still
// reach the stack as multicast and TCP would drop it; generic XDP
// re-derives the packet type (as a real NIC's driver does when it builds
// the skb after XDP). Call it with the thread in the interface's
// namespace.
func (p *Program) Attach(ifindex int, mode bpfutil.AttachMode) (bpfutil.AttachMode, error) {
	if mode == bpfutil.ModeAuto {
		// Generic only: native is what breaks TCP here, so no fallback.
		if nl, err := netlink.LinkByIndex(ifindex); err == nil && bpfutil.AutoGeneric(nl) {
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
	p.mu.Lock()
	errs = append(errs, p.mapped.Close())
	p.mapped = nil
	p.mu.Unlock()
	return errors.Join(append(errs, p.Prog.Close(), p.params.Close(), p.stats.Close())...)
}
