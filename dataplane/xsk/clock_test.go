package xsk

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/packet"
)

// TestKernelClockFallback: where the kernel lacks bpf_ktime_get_coarse_ns
// (before Linux 5.11) the fast path's programs call bpf_ktime_get_ns
// instead. Both objects call the coarse clock and the rewrite leaves no
// call of it; with the probe failing, the XDP program loads and stamps a
// cached frame's entry with the exact CLOCK_MONOTONIC (the coarse clock
// lags it by up to a tick, so 20 stamps all within the exact reads around
// their runs show the rewrite took effect).
func TestKernelClockFallback(t *testing.T) {
	for name, load := range map[string]func() (*ebpf.CollectionSpec, error){"xsk.c": loadBpf, "tc.c": loadTc} {
		spec, err := load()
		if err != nil {
			t.Fatal(err)
		}
		if n := useFineClock(spec); n == 0 {
			t.Errorf("%s: no call of bpf_ktime_get_coarse_ns to replace", name)
		}
		if n := useFineClock(spec); n != 0 {
			t.Errorf("%s: %d calls of bpf_ktime_get_coarse_ns left after the rewrite", name, n)
		}
	}

	// A probe that cannot tell (refused for want of CAP_BPF) leaves the
	// object alone: loading it then names the missing capability.
	saved := haveCoarseClock
	t.Cleanup(func() { haveCoarseClock = saved })
	if err := CoarseClock(); err != nil {
		t.Errorf("CoarseClock on this kernel: %v, want nil", err)
	}
	haveCoarseClock = func(ebpf.ProgramType) error { return fmt.Errorf("probe: %w", unix.EPERM) }
	if err := CoarseClock(); err != nil {
		t.Errorf("CoarseClock with a refused probe: %v, want nil (the programs keep the coarse call)", err)
	}
	spec, err := loadBpf()
	if err != nil {
		t.Fatal(err)
	}
	kernelClock(spec, ebpf.XDP)
	if n := useFineClock(spec); n == 0 {
		t.Error("a refused probe rewrote the clock call")
	}

	haveCoarseClock = func(ebpf.ProgramType) error { return fmt.Errorf("probe: %w", ebpf.ErrNotSupported) }
	if err := CoarseClock(); err == nil {
		t.Error("CoarseClock where the kernel lacks the helper: nil, want the reason (for the log)")
	}
	e := newFastEnv(t)
	if err := e.fc.SetMatch(1, false); err != nil {
		t.Fatal(err)
	}
	frame, k := flowFrame(packet.ProtoUDP, "10.1.1.2", "198.51.100.1", 1000, 2000, 18)
	if err := e.fc.Install([]dataplane.FlowKey{k}, []uint8{1}); err != nil { // another node's: dropped
		t.Fatal(err)
	}
	for i := range 20 {
		var from, to uint64
		err := e.gw.Do(func() error {
			from = clockNow(t, unix.CLOCK_MONOTONIC)
			ret, _, err := e.testRun(frame, e.ifs["d0"].Index, 1, 0)
			to = clockNow(t, unix.CLOCK_MONOTONIC)
			if err == nil && ret != xdpDrop {
				err = fmt.Errorf("verdict %d, want drop", ret)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var v flowValue
		if err := e.fc.flows.Lookup(&k, &v); err != nil {
			t.Fatal(err)
		}
		if v.LastSeen < from || v.LastSeen > to {
			t.Fatalf("run %d: last seen %d, want the exact clock within [%d, %d] (%d ns before the run: the coarse clock)", i, v.LastSeen, from, to, int64(from-v.LastSeen))
		}
	}
}
