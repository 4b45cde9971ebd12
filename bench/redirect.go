package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"

	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
)

// The ceiling program's object and bindings (redirect_bpfel.o,
// redirect_bpfel.go): `make generate` rebuilds them with clang.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -output-stem redirect redirect ../bpf/bench_redirect.c -- -mcpu=v3 -Wall -Werror

// Redirector is the XDP_REDIRECT ceiling (bpf/bench_redirect.c): it sets
// every frame's destination MAC to the next hop's and redirects it through
// a devmap to one egress interface, counting each. Attach Prog to the
// ingress interface. A veth egress delivers only if its peer runs NAPI
// (an XDP program attached to the peer, or GRO on it).
type Redirector struct {
	Prog *ebpf.Program
	objs redirectObjects
}

// NewRedirector loads the program for egress interface ifindex and the
// next hop's MAC.
func NewRedirector(egress int, nextHop net.HardwareAddr) (*Redirector, error) {
	if len(nextHop) != 6 {
		return nil, fmt.Errorf("redirector: next hop MAC %q: want 6 bytes", nextHop)
	}
	spec, err := loadRedirect()
	if err != nil {
		return nil, fmt.Errorf("redirector: %w", err)
	}
	if err := spec.Variables["next_hop_lo"].Set(binary.NativeEndian.Uint32(nextHop[0:4])); err != nil {
		return nil, fmt.Errorf("redirector: set next_hop_lo: %w", err)
	}
	if err := spec.Variables["next_hop_hi"].Set(binary.NativeEndian.Uint16(nextHop[4:6])); err != nil {
		return nil, fmt.Errorf("redirector: set next_hop_hi: %w", err)
	}
	r := &Redirector{}
	if err := spec.LoadAndAssign(&r.objs, nil); err != nil {
		return nil, fmt.Errorf("redirector: load: %w", err)
	}
	if err := r.objs.XcBenchOut.Put(uint32(0), uint32(egress)); err != nil {
		r.objs.Close()
		return nil, fmt.Errorf("redirector: egress ifindex %d in the devmap: %w", egress, err)
	}
	r.Prog = r.objs.XcBenchRedirect
	return r, nil
}

// Count is how many frames it redirected.
func (r *Redirector) Count() uint64 {
	sums, _ := bpfutil.Sums(r.objs.XcBenchStats, 1)
	return sums[0]
}

// Close unloads it.
func (r *Redirector) Close() error { return errors.Join(r.objs.Close()) }
