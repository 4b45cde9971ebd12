package xsk

import (
	"errors"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// haveCoarseClock reports whether programs of type typ may call
// bpf_ktime_get_coarse_ns (Linux 5.11 and later); a variable so that
// tests can take it away.
var haveCoarseClock = func(typ ebpf.ProgramType) error {
	return features.HaveProgramHelper(typ, asm.FnKtimeGetCoarseNs)
}

// coarseClockMissing is why programs of type typ cannot call
// bpf_ktime_get_coarse_ns (a kernel before 5.11), nil when they can. A
// probe that cannot tell (no CAP_BPF: the probe's load is refused too)
// counts as can: loading the program itself then says what is wrong.
func coarseClockMissing(typ ebpf.ProgramType) error {
	if err := haveCoarseClock(typ); errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	return nil
}

// kernelClock makes spec's programs stamp the flow cache's last-seen with
// bpf_ktime_get_ns where the kernel lacks bpf_ktime_get_coarse_ns
// (coarseClockMissing): the same clock (CLOCK_MONOTONIC), read exactly,
// for a clock read per packet. bpf/fast.h calls the coarse one, which
// costs nothing on a VM, where reading the clock itself took a quarter of
// the program's time.
func kernelClock(spec *ebpf.CollectionSpec, typ ebpf.ProgramType) {
	if coarseClockMissing(typ) != nil {
		useFineClock(spec)
	}
}

// CoarseClock is nil when the fast path's programs stamp last-seen with
// bpf_ktime_get_coarse_ns, else why they read the exact clock for each
// packet instead (a kernel before 5.11), for the log.
func CoarseClock() error { return coarseClockMissing(ebpf.XDP) }

// useFineClock replaces every call of bpf_ktime_get_coarse_ns in spec's
// programs by bpf_ktime_get_ns (same signature) and returns how many.
func useFineClock(spec *ebpf.CollectionSpec) int {
	n := 0
	for _, ps := range spec.Programs {
		for i := range ps.Instructions {
			ins := &ps.Instructions[i]
			if ins.IsBuiltinCall() && ins.Constant == int64(asm.FnKtimeGetCoarseNs) {
				ins.Constant = int64(asm.FnKtimeGetNs)
				n++
			}
		}
	}
	return n
}
