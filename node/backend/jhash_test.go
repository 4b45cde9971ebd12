package backend

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpcluster/xdpcluster/jhash"
)

// The test program's object and bindings (jhash_bpfel_test.o/.go).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -output-stem jhash jhashTest ../../bpf/jhash_test.c -- -mcpu=v3 -Wall -Werror

// TestJhashHeader runs bpf/jhash.h's functions in the kernel with
// BPF_PROG_TEST_RUN on 10,000 random seeds and keys: jhash_1word,
// jhash_2words, jhash_3words and jhash2 over 1 to 12 words equal the Go
// jhash package's (the kernel's own jhash, bit-exact).
func TestJhashHeader(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading XDP programs needs root; run the tests as root")
	}
	var objs jhashTestObjects
	if err := loadJhashTestObjects(&objs, nil); err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	const words = 12
	r := rand.New(rand.NewPCG(3, 4))
	in := make([]byte, 4*(1+3+words))
	out := make([]byte, len(in))
	w := make([]uint32, words)
	for i := 0; i < 10000; i++ {
		seed := r.Uint32()
		if i%4 == 0 {
			seed = uint32(i) // small seeds too
		}
		binary.LittleEndian.PutUint32(in, seed)
		for j := range w {
			w[j] = r.Uint32()
			binary.LittleEndian.PutUint32(in[4+4*j:], w[j])
		}
		ret, err := objs.XcJhashTest.Run(&ebpf.RunOptions{Data: in, DataOut: out})
		if err != nil || ret != xdpPass {
			t.Fatalf("run: verdict %d, %v", ret, err)
		}
		want := []uint32{jhash.Hash1Word(w[0], seed), jhash.Hash2Words(w[0], w[1], seed), jhash.Hash3Words(w[0], w[1], w[2], seed)}
		for n := 1; n <= words; n++ {
			want = append(want, jhash.Hash2(w[:n], seed))
		}
		names := []string{"jhash_1word", "jhash_2words", "jhash_3words"}
		for k, v := range want {
			got := binary.LittleEndian.Uint32(out[4+4*k:])
			if got != v {
				name := "jhash2"
				if k < len(names) {
					name = names[k]
				}
				t.Fatalf("seed %#x words %x: %s (output %d) = %#x in BPF, %#x in Go", seed, w, name, k, got, v)
			}
		}
	}
}
