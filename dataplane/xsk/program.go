// Package xsk holds the kernel side of the dataplane: our XDP program,
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
// With a FlowCache (issue 15's fast path), the program decides the packets
// of cached connections itself: an untagged IPv4 or IPv6 frame (no
// fragment, no IPv6 extension header) of a TCP, UDP, UDP-Lite, SCTP or DCCP
// connection in the cache, with headers packet.Decode accepts, is dropped
// when the node does not own the connection's bucket (SetMatch's mask and
// invert, read per packet) and otherwise forwarded along the kernel's route
// and neighbour (bpf_fib_lookup) to a data interface (AddEgress), its MACs
// rewritten and its TTL or hop limit decremented. TCP segments with SYN, FIN
// or RST, misses, and every frame the program cannot forward take the
// slow path (the AF_XDP socket), counted by reason (FastStats).
//
// TCProgram takes the same decisions (the same C: bpf/fast.h) at tc
// ingress, for the raw-socket backend (dataplane/afpacket), where the
// interface's frames need not pass through an XDP program: on veth and
// other skb-path devices an XDP program costs a copy of every cloned frame.
//
// A Program is safe for concurrent use after Attach.
package xsk

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/xdpcluster/xdpcluster/cluster"
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

// Reasons a cluster-MAC IP frame took the slow path although the fast path
// is on (bpf/fast.h's SLOW_ enum); FastStats.Slow is indexed by them.
const (
	SlowMiss              = iota // not in the flow cache
	SlowTCPControl               // TCP with SYN, FIN or RST, or without ACK
	SlowFragment                 // an IPv4 fragment
	SlowNotFast                  // tagged, malformed, IPv6 extension header, ICMP, another protocol
	SlowTTL                      // the TTL or hop limit would expire
	SlowNoEgress                 // the route's interface is not a data interface (AddEgress)
	SlowFIBBlackhole             // bpf_fib_lookup's results, BPF_FIB_LKUP_RET_*:
	SlowFIBUnreachable           //
	SlowFIBProhibit              //
	SlowFIBNotForwarded          // local, broadcast, multicast
	SlowFIBForwardingOff         // forwarding disabled on the ingress interface
	SlowFIBUnsupportedLWT        //
	SlowFIBNoNeighbour           // no valid neighbour entry (yet): the kernel resolves it
	SlowFIBFragNeeded            // larger than the egress MTU
	SlowFIBNoSrcAddr             //
	SlowFIBOther                 // any other result (an error)
	NumSlowReasons
)

// SlowReasonNames are the slow-path reasons' metric labels.
var SlowReasonNames = [NumSlowReasons]string{"miss", "tcp_control", "fragment", "not_fast", "ttl", "no_egress",
	"fib_blackhole", "fib_unreachable", "fib_prohibit", "fib_not_forwarded", "fib_forwarding_disabled",
	"fib_unsupported_lwt", "fib_no_neighbour", "fib_frag_needed", "fib_no_src_addr", "fib_other"}

// The fast-path counters' indexes in the per-CPU map xc_fast (bpf/fast.h's
// FAST_ enum).
const (
	fastForwarded = iota
	fastForeign
	fastForwardedBytes
	fastForeignBytes
	fastOwner
	fastSlow = fastOwner + cluster.MaxNodes
	numFast  = fastSlow + NumSlowReasons
)

// FastStats are a program's fast-path counters, summed over CPUs.
type FastStats struct {
	// Forwarded and Foreign count the packets of cached connections the
	// program forwarded (owned) and dropped (another node's); the Bytes
	// their frame lengths, as the workers count theirs.
	Forwarded, Foreign, ForwardedBytes, ForeignBytes uint64
	// Owner counts the packets decided here, forwarded or foreign, per
	// bucket (0-based node; a bucket beyond the last node is not counted),
	// as the workers' Counters.Owner do theirs: every node sees every
	// packet, so each reports the cluster's split.
	Owner [cluster.MaxNodes]uint64
	// Slow counts the cluster-MAC IP frames the fast path handed to the
	// slow path, by reason (SlowReasonNames); frames while the cache is
	// off (no FlowCache) are not counted.
	Slow [NumSlowReasons]uint64
}

// MaxQueues bounds the queue indexes the program's socket map holds
// (bpf/xsk.c's MAX_QUEUES).
const MaxQueues = 256

const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4
)

// Program is our XDP program for one cluster MAC, with its socket map and
// counters.
type Program struct {
	Prog  *ebpf.Program
	xsks  *ebpf.Map
	stats *ebpf.Map
	fast  *ebpf.Map
	// The flow cache's maps: the FlowCache's (clones) or private ones.
	flows, params, egress *ebpf.Map
	mac                   net.HardwareAddr
	links                 []link.Link
}

// NewProgram loads the program for frames addressed to clusterMAC, with
// the flow cache fc, which the programs of every data interface share; with
// fc nil the fast path is off: every cluster-MAC IP frame goes to the
// AF_XDP socket. It needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or
// root).
func NewProgram(clusterMAC net.HardwareAddr, fc *FlowCache) (*Program, error) {
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
	kernelClock(spec, ebpf.XDP)
	var opts ebpf.CollectionOptions
	if fc != nil {
		spec.Maps[bpfMapXcFlows].MaxEntries = fc.flows.MaxEntries()
		spec.Maps[bpfMapXcEgress].MaxEntries = fc.egress.MaxEntries()
		opts.MapReplacements = map[string]*ebpf.Map{bpfMapXcFlows: fc.flows, bpfMapXcParams: fc.params, bpfMapXcEgress: fc.egress}
	}
	var objs struct {
		bpfPrograms
		bpfMaps
	}
	if err := spec.LoadAndAssign(&objs, &opts); err != nil {
		// CAP_PERFMON too: without it the verifier refuses the program
		// ("partial copy of pointer": a pointer leak to it).
		return nil, fmt.Errorf("load XDP program: %w (needs CAP_BPF and CAP_PERFMON, or root)", err)
	}
	return &Program{Prog: objs.Xdpcluster, xsks: objs.XcXsks, stats: objs.XcStats, fast: objs.XcFast,
		flows: objs.XcFlows, params: objs.XcParams, egress: objs.XcEgress, mac: clusterMAC}, nil
}

// macVar is a MAC address as the program's struct xc_mac (bpf/parse.h)
// holds it: its six bytes as in the frame, then two of padding.
func macVar(mac net.HardwareAddr) (v [8]byte) {
	copy(v[:], mac)
	return v
}

// Attach attaches the program to the interface as a bpf_link in mode
// (bpfutil.ModeAuto: natively if the driver supports it, else
// generically; generically first on veth) and returns the mode it
// attached in; see bpfutil.Attach.
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
func (p *Program) Detach() error { return closeLinks(&p.links) }

// closeLinks closes every link in *links (detaching its program) and
// empties it.
func closeLinks(links *[]link.Link) error {
	var errs []error
	for _, l := range *links {
		errs = append(errs, l.Close())
	}
	*links = nil
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

// FastStats sums the per-CPU fast-path counters.
func (p *Program) FastStats() (FastStats, error) { return fastStats(p.fast) }

// fastStats sums a program's per-CPU fast-path counters (bpf/fast.h's
// xc_fast).
func fastStats(m *ebpf.Map) (FastStats, error) {
	var s FastStats
	sums, err := bpfutil.Sums(m, numFast)
	if err != nil {
		return s, fmt.Errorf("fast-path counters: %w", err)
	}
	s.Forwarded, s.Foreign = sums[fastForwarded], sums[fastForeign]
	s.ForwardedBytes, s.ForeignBytes = sums[fastForwardedBytes], sums[fastForeignBytes]
	copy(s.Owner[:], sums[fastOwner:fastSlow])
	copy(s.Slow[:], sums[fastSlow:])
	return s, nil
}

// Close detaches the program and unloads it and its maps (a FlowCache's
// maps stay until the FlowCache is closed).
func (p *Program) Close() error {
	return errors.Join(p.Detach(), p.Prog.Close(), p.xsks.Close(), p.stats.Close(), p.fast.Close(),
		p.flows.Close(), p.params.Close(), p.egress.Close())
}
