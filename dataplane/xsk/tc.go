package xsk

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
)

// The tc program's object and bindings (tc_bpfel.o, tc_bpfel.go): `make
// generate` rebuilds them with clang.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -output-stem tc tc ../../bpf/tc.c -- -mcpu=v3 -Wall -Werror

// The tc program's verdict counters, indexes of its per-CPU stats map
// (bpf/tc.c's TC_STAT_ enum).
const (
	TCStatToSocket = iota // cluster-MAC IP frames left to the slow path's raw sockets
	TCStatPassed          // everything else, left to the kernel
	NumTCStats
)

// TCStatNames are the tc counters' metric labels.
var TCStatNames = [NumTCStats]string{"to_socket", "passed"}

// FastCounters is what both fast-path programs, Program and TCProgram,
// count.
type FastCounters interface {
	FastStats() (FastStats, error)
}

var (
	_ FastCounters = (*Program)(nil)
	_ FastCounters = (*TCProgram)(nil)
)

// tc actions (linux/pkt_cls.h), the tc program's verdicts: TC_ACT_UNSPEC
// (at tcx: the next program, then the stack) for every frame it leaves.
const (
	tcActUnspec   = 0xffffffff // -1
	tcActShot     = 2
	tcActRedirect = 7
)

// TCProgram is the fast path as a tc ingress program (bpf/tc.c), for the
// raw-socket backend (dataplane/afpacket), whose sockets, bound to
// ETH_P_IP and ETH_P_IPV6, read what it leaves to the stack. It shares a
// FlowCache with the programs of the other data interfaces and takes the
// XDP program's decisions (the same C, bpf/fast.h): a cached connection's
// untagged frame is dropped when another node owns it, or rewritten and
// redirected to the route's egress interface; every other frame goes on to
// the stack. Unlike XDP on a veth or another skb-path device, it reads a
// cloned frame (every frame a bridge floods) without copying it, and
// copies the header only of the frames it forwards.
//
// A TCProgram is safe for concurrent use after Attach.
type TCProgram struct {
	Prog  *ebpf.Program
	stats *ebpf.Map
	fast  *ebpf.Map
	// The FlowCache's maps (clones).
	flows, params, egress *ebpf.Map
	links                 []link.Link
}

// NewTCProgram loads the tc program for frames addressed to clusterMAC,
// with the flow cache fc (required: without it the program would only pass
// frames on). It needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or root).
func NewTCProgram(clusterMAC net.HardwareAddr, fc *FlowCache) (*TCProgram, error) {
	if len(clusterMAC) != 6 {
		return nil, fmt.Errorf("cluster MAC %q: want 6 bytes", clusterMAC)
	}
	if fc == nil {
		return nil, errors.New("tc fast path: no flow cache")
	}
	spec, err := loadTc()
	if err != nil {
		return nil, fmt.Errorf("read tc program object: %w", err)
	}
	if err := spec.Variables[tcVarClusterMac].Set(macVar(clusterMAC)); err != nil {
		return nil, fmt.Errorf("set the tc program's cluster MAC: %w", err)
	}
	kernelClock(spec, ebpf.SchedCLS)
	spec.Maps[tcMapXcFlows].MaxEntries = fc.flows.MaxEntries()
	spec.Maps[tcMapXcEgress].MaxEntries = fc.egress.MaxEntries()
	opts := ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		tcMapXcFlows: fc.flows, tcMapXcParams: fc.params, tcMapXcEgress: fc.egress}}
	var objs struct {
		tcPrograms
		tcMaps
	}
	if err := spec.LoadAndAssign(&objs, &opts); err != nil {
		return nil, fmt.Errorf("load tc program: %w (needs CAP_BPF and CAP_PERFMON, or root)", err)
	}
	return &TCProgram{Prog: objs.XdpclusterTc, stats: objs.XcTcStats, fast: objs.XcFast,
		flows: objs.XcFlows, params: objs.XcParams, egress: objs.XcEgress}, nil
}

// Attach attaches the program at the interface's tcx ingress hook (Linux
// 6.6 or later) as a bpf_link, which goes when Detach or Close closes it,
// or when the process exits. Call it with the thread in the interface's
// network namespace.
func (p *TCProgram) Attach(ifindex int) error {
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: p.Prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("attach tc program to ifindex %d (tcx ingress, Linux 6.6 or later): %w", ifindex, err)
	}
	p.links = append(p.links, l)
	return nil
}

// Attached returns nil while the program is attached to an interface: an
// error before Attach, after Detach, or once the kernel has let go of the
// link (the interface was deleted).
func (p *TCProgram) Attached() error {
	if len(p.links) == 0 {
		return errors.New("our tc program is not attached")
	}
	for _, l := range p.links {
		info, err := l.Info()
		if err != nil {
			return fmt.Errorf("our tc program's link: %w", err)
		}
		if tcx := info.TCX(); tcx == nil || tcx.Ifindex == 0 {
			return errors.New("our tc program was detached (its interface went away)")
		}
	}
	return nil
}

// Detach removes the program from every interface it was attached to.
func (p *TCProgram) Detach() error { return closeLinks(&p.links) }

// Stats sums the per-CPU verdict counters.
func (p *TCProgram) Stats() ([NumTCStats]uint64, error) {
	var out [NumTCStats]uint64
	sums, err := bpfutil.Sums(p.stats, NumTCStats)
	copy(out[:], sums)
	return out, err
}

// FastStats sums the per-CPU fast-path counters.
func (p *TCProgram) FastStats() (FastStats, error) { return fastStats(p.fast) }

// Close detaches the program and unloads it and its own maps (the
// FlowCache's stay until the FlowCache is closed).
func (p *TCProgram) Close() error {
	return errors.Join(p.Detach(), p.Prog.Close(), p.stats.Close(), p.fast.Close(),
		p.flows.Close(), p.params.Close(), p.egress.Close())
}
