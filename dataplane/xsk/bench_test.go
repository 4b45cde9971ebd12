package xsk

import (
	"fmt"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/packet"
)

// testRunAttr is union bpf_attr's test member (BPF_PROG_TEST_RUN).
type testRunAttr struct {
	progFD, retval, dataSizeIn, dataSizeOut uint32
	dataIn, dataOut                         uint64
	repeat, duration, ctxSizeIn, ctxSizeOut uint32
	ctxIn, ctxOut                           uint64
	flags, cpu, batchSize                   uint32
	_                                       uint32
}

const (
	bpfProgTestRun        = 10
	bpfFTestXDPLiveFrames = 1 << 1
)

// testRun runs the program repeat times on frame arriving on ingress (the
// calling thread must be in its namespace) and returns the verdict and the
// kernel's mean duration of one run, in ns. flags may ask for live frames
// (the redirects are carried out).
func (e *fastEnv) testRun(frame []byte, ingress int, repeat, flags uint32) (uint32, uint32, error) {
	ctx := xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ingress)}
	attr := testRunAttr{progFD: uint32(e.prog.Prog.FD()), dataSizeIn: uint32(len(frame)),
		dataIn: uint64(uintptr(unsafe.Pointer(&frame[0]))), repeat: repeat,
		ctxSizeIn: uint32(unsafe.Sizeof(ctx)), ctxIn: uint64(uintptr(unsafe.Pointer(&ctx))), flags: flags}
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgTestRun, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		switch errno {
		case 0:
			return attr.retval, attr.duration, nil
		case unix.EINTR: // a signal (the Go runtime's): run again
			continue
		}
		return 0, 0, errno
	}
}

// BenchmarkFastPath measures the program per frame in BPF_PROG_TEST_RUN,
// by the kernel's own timing: a cached flow forwarded (FIB lookup, rewrite,
// redirect), a cached flow of another node (dropped), and a miss (to the
// slow path's socket map); 60-byte UDP frames, IPv4. One run per call: the
// kernel runs repeats on the same buffer, and a forwarded frame is no
// longer addressed to the cluster MAC (repeats also swap the kernel's XDP
// dispatcher, milliseconds per call). The kernel's timing of one run
// includes one clock read; the x1000 rows (same frame, 1000 runs per call,
// possible where the program does not rewrite) show that overhead.
func BenchmarkFastPath(b *testing.B) {
	e := newFastEnv(b)
	if err := e.fc.SetMatch(1, false); err != nil {
		b.Fatal(err)
	}
	fwd, kf := flowFrame(packet.ProtoUDP, "10.1.1.1", "198.51.100.1", 1000, 2000, 18)
	foreign, kx := flowFrame(packet.ProtoUDP, "10.1.1.2", "198.51.100.1", 1000, 2000, 18)
	miss, _ := flowFrame(packet.ProtoUDP, "10.1.1.3", "198.51.100.1", 1000, 2000, 18)
	if err := e.fc.Install([]dataplane.FlowKey{kf, kx}, []uint8{0, 1}); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		frame  []byte
		want   uint32
		repeat uint32
	}{
		{"hit-forward", fwd, xdpRedirect, 1},
		{"hit-foreign", foreign, xdpDrop, 1},
		{"miss", miss, xdpPass, 1},
		{"hit-foreign-x1000", foreign, xdpDrop, 1000},
		{"miss-x1000", miss, xdpPass, 1000},
	} {
		repeat := bc.repeat
		b.Run(bc.name, func(b *testing.B) {
			var total, runs uint64
			err := e.gw.Do(func() error {
				for b.Loop() {
					ret, ns, err := e.testRun(bc.frame, e.ifs["d0"].Index, repeat, 0)
					if err != nil {
						return err
					}
					if ret != bc.want {
						st, _ := e.prog.FastStats()
						return fmt.Errorf("verdict %d, want %d (%+v)", ret, bc.want, st)
					}
					total += uint64(ns) * uint64(repeat)
					runs += uint64(repeat)
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(total)/float64(runs), "ns/frame")
		})
	}
}

// BenchmarkFastPathManyFlows: cached flows of another node (dropped), one
// run each, cycling over n different flows: the flow lookup's cost when
// the working set is not cache-resident (the one-core end-to-end harness
// cycles over 65,536 sources).
func BenchmarkFastPathManyFlows(b *testing.B) {
	for _, n := range []int{1, 4096, 65536} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			e := newFastEnv(b)
			if err := e.fc.SetMatch(1, false); err != nil {
				b.Fatal(err)
			}
			frames := make([][]byte, n)
			keys := make([]dataplane.FlowKey, n)
			buckets := make([]uint8, n)
			for i := range frames {
				frames[i], keys[i] = flowFrame(packet.ProtoUDP, fmt.Sprintf("10.%d.%d.1", i>>8, i&255), "198.51.100.1", 1000, 2000, 18)
				buckets[i] = 1
			}
			if err := e.fc.Install(keys, buckets); err != nil {
				b.Fatal(err)
			}
			var total, runs uint64
			err := e.gw.Do(func() error {
				i := 0
				for b.Loop() {
					ret, ns, err := e.testRun(frames[i%n], e.ifs["d0"].Index, 1, 0)
					if err != nil {
						return err
					}
					if ret != xdpDrop {
						return fmt.Errorf("verdict %d, want drop", ret)
					}
					total += uint64(ns)
					runs++
					i++
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(total)/float64(runs), "ns/frame")
		})
	}
}

// BenchmarkFlowCacheStats: what a scrape's entry count costs, read from
// the kernel's count (bpf/count.c) and by walking the map as before (and
// where the kernel cannot load the counter), in a cache of 1,048,576
// connections (conntrack.max_entries' default) holding n (an LRU map this
// full evicts before it is full: half is what a full one holds for sure).
func BenchmarkFlowCacheStats(b *testing.B) {
	for _, n := range []int{65536, 1 << 19} {
		fc, _ := newCache(b, 1<<20)
		if err := fc.CountErr(); err != nil {
			b.Fatal(err)
		}
		keys := make([]dataplane.FlowKey, n)
		for i := range keys {
			tp := tuple4(i, packet.ProtoUDP)
			keys[i] = dataplane.KeyOf(&tp)
		}
		if err := fc.Install(keys, make([]uint8, n)); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("counter/%d", n), func(b *testing.B) {
			for b.Loop() {
				st, err := fc.Stats()
				if err != nil || st.Entries != uint64(2*n) {
					b.Fatalf("%d entries, %v; want %d", st.Entries, err, 2*n)
				}
			}
		})
		b.Run(fmt.Sprintf("walk/%d", n), func(b *testing.B) {
			for b.Loop() {
				var got uint64
				if err := fc.walk(func(dataplane.FlowKey, *flowValue) { got++ }); err != nil || got != uint64(2*n) {
					b.Fatalf("%d entries, %v; want %d", got, err, 2*n)
				}
			}
		})
		fc.Close()
	}
}
