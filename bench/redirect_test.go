package bench

import (
	"bytes"
	"net"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestRedirector runs the XDP_REDIRECT ceiling on frames (BPF_PROG_TEST_RUN):
// the destination MAC becomes the next hop's, the rest of the frame is
// untouched, the verdict is XDP_REDIRECT and each frame is counted.
func TestRedirector(t *testing.T) {
	nstest.Require(t)
	hop := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	r, err := NewRedirector(1, hop) // lo: any existing interface fills the devmap
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, tc := range []struct {
		name    string
		frame   []byte
		verdict uint32
		counted uint64
	}{
		{"udp frame", append([]byte{1, 0, 0x5e, 0, 1, 1, 2, 0, 0, 0, 0, 9, 8, 0}, bytes.Repeat([]byte{0xab}, 46)...), 4, 1},
		{"bare header", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x86, 0xdd}, 4, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := make([]byte, len(tc.frame)+256)
			ret, err := r.Prog.Run(&ebpf.RunOptions{Data: tc.frame, DataOut: out})
			if err != nil {
				t.Fatal(err)
			}
			if ret != tc.verdict {
				t.Fatalf("verdict %d, want %d", ret, tc.verdict)
			}
			if tc.verdict == 4 {
				want := append(append([]byte(nil), hop...), tc.frame[6:]...)
				if !bytes.Equal(out[:len(tc.frame)], want) {
					t.Errorf("frame\n got % x\nwant % x", out[:len(tc.frame)], want)
				}
			}
			if n := r.Count(); n != tc.counted {
				t.Errorf("counted %d, want %d", n, tc.counted)
			}
		})
	}
}
