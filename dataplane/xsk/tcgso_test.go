package xsk

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/packet"
)

// skbCtxGSO is struct __sk_buff up to gso_size, for a GSO packet.
type skbCtxGSO struct {
	skbCtx
	TCIndex       uint32
	CB            [5]uint32
	Hash, TCClass uint32
	Data, DataEnd uint32
	NAPIID        uint32
	SkFields      [13]uint32
	DataMeta      uint32
	FlowKeys      uint64
	Tstamp        uint64
	WireLen       uint32
	GSOSegs       uint32
	Sk            uint64
	GSOSize       uint32
	_             uint32
}

// TestTCForwardsGSO: a cached connection's GSO packet (GRO merged it, or a
// local sender left it whole), longer than the egress MTU but with
// segments that fit, is forwarded by the tc program as the kernel forwards
// one (the segments, headers included, are checked against the MTU, not
// the whole); with segments one byte too long for it, or without GSO, the
// packet goes to the slow path as fib_frag_needed, as from XDP.
func TestTCForwardsGSO(t *testing.T) {
	e := newTCFastEnv(t)
	// d1's MTU is 1400; a 3,000-byte TCP packet.
	f, k := flowFrame(packet.ProtoTCP, "10.1.1.1", "198.51.100.1", 40000, 443, 3000-40)
	if err := e.fc.Install([]dataplane.FlowKey{k}, []uint8{0}); err != nil {
		t.Fatal(err)
	}
	if err := e.fc.SetMatch(1, false); err != nil {
		t.Fatal(err)
	}
	run := func(gso uint32) (uint32, []byte, FastStats) {
		t.Helper()
		var ret uint32
		out := make([]byte, 4096)
		err := e.gw.Do(func() error {
			idx := uint32(e.ifs["d0"].Index)
			ctx := skbCtxGSO{skbCtx: skbCtx{IngressIfindex: idx, Ifindex: idx}}
			if gso != 0 {
				ctx.GSOSize, ctx.GSOSegs = gso, (3000-40+gso-1)/gso
			}
			opts := ebpf.RunOptions{Data: f, DataOut: out, Context: ctx}
			var err error
			ret, err = e.tc.Prog.Run(&opts)
			out = opts.DataOut
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		st, err := e.tc.FastStats()
		if err != nil {
			t.Fatal(err)
		}
		return ret, out, st
	}
	ret, out, st := run(0)
	if ret != tcActUnspec || st.Slow[SlowFIBFragNeeded] != 1 || !bytes.Equal(out, f) {
		t.Errorf("3,000 bytes, no GSO: verdict %#x, frag_needed %d; want the slow path for fib_frag_needed, unchanged", ret, st.Slow[SlowFIBFragNeeded])
	}
	// 20 + 20 + 1,361 = 1,401 bytes a segment: one too many for d1.
	ret, out, st = run(1361)
	if ret != tcActUnspec || st.Slow[SlowFIBFragNeeded] != 2 || !bytes.Equal(out, f) {
		t.Errorf("GSO segments of 1,401 bytes: verdict %#x, frag_needed %d; want the slow path for fib_frag_needed, unchanged", ret, st.Slow[SlowFIBFragNeeded])
	}
	// 20 + 20 + 1,360: exactly d1's MTU.
	ret, out, st = run(1360)
	if ret != tcActRedirect || st.Forwarded != 1 {
		t.Fatalf("3,000 bytes, GSO segments of 1,400 bytes: verdict %#x, forwarded %d, slow %v; want redirected", ret, st.Forwarded, st.Slow)
	}
	if !bytes.Equal(out[0:6], macD1v4) || out[14+8] != f[14+8]-1 {
		t.Errorf("forwarded GSO packet: destination MAC %x, TTL %d; want %s, %d", out[0:6], out[14+8], macD1v4, f[14+8]-1)
	}
}
