package jhash

import (
	"bufio"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
)

// vector is one row of testdata/jhash-vectors.tsv, verified against the
// kernel's xt_cluster.
type vector struct {
	seed, total uint32
	addr        netip.Addr
	node        int // 1-based
	hash        uint32
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	f, err := os.Open("../testdata/jhash-vectors.tsv")
	if err != nil {
		t.Fatalf("open vectors: %v", err)
	}
	defer f.Close()
	var out []vector
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if line == 1 {
			continue // header
		}
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) != 5 {
			t.Fatalf("line %d: %d fields, want 5", line, len(fs))
		}
		num := func(s string) uint32 {
			v, err := strconv.ParseUint(s, 0, 32)
			if err != nil {
				t.Fatalf("line %d: %v", line, err)
			}
			return uint32(v)
		}
		a, err := netip.ParseAddr(fs[2])
		if err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		out = append(out, vector{num(fs[0]), num(fs[1]), a, int(num(fs[3])), num(fs[4])})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 300 {
		t.Fatalf("only %d vectors loaded", len(out))
	}
	return out
}

func firstWord(a netip.Addr) uint32 {
	if a.Is4() {
		b := a.As4()
		return Word(b[:])
	}
	b := a.As16()
	return Word(b[:4])
}

// TestKernelVectors checks every kernel-verified row: the hash of the
// address's first word, and the node reciprocal_scale picks.
func TestKernelVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		w := firstWord(v.addr)
		var got uint32
		if v.addr.Is4() {
			got = Hash1Word(w, v.seed)
		} else {
			got = Hash2([]uint32{w}, v.seed) // jhash2 with length 1, as xt_cluster
		}
		if got != v.hash {
			t.Errorf("seed %#x addr %s: hash %#08x, kernel %#08x", v.seed, v.addr, got, v.hash)
		}
		if node := int(ReciprocalScale(got, v.total)) + 1; node != v.node {
			t.Errorf("seed %#x total %d addr %s: node %d, kernel %d", v.seed, v.total, v.addr, node, v.node)
		}
	}
}

// TestLookup3Vectors are the published self-test values of Bob Jenkins'
// lookup3.c hashlittle(), which the kernel's jhash() equals on x86.
func TestLookup3Vectors(t *testing.T) {
	const fs = "Four score and seven years ago"
	tests := []struct {
		key  string
		seed uint32
		want uint32
	}{
		{"", 0, 0xdeadbeef},
		{"", 0xdeadbeef, 0xbd5b7dde},
		{fs, 0, 0x17770551},
		{fs, 1, 0xcd628161},
	}
	for _, tc := range tests {
		if got := Hash([]byte(tc.key), tc.seed); got != tc.want {
			t.Errorf("Hash(%q, %#x) = %#08x, want %#08x", tc.key, tc.seed, got, tc.want)
		}
	}
}

// refHash transcribes the kernel's jhash() literally, fall-through switch and
// all, as an independent check of Hash's tail handling.
func refHash(k []byte, seed uint32) uint32 {
	length := uint32(len(k))
	a := InitVal + length + seed
	b, c := a, a
	for length > 12 {
		a += binary.LittleEndian.Uint32(k)
		b += binary.LittleEndian.Uint32(k[4:])
		c += binary.LittleEndian.Uint32(k[8:])
		a, b, c = mix(a, b, c)
		length -= 12
		k = k[12:]
	}
	switch length {
	case 12:
		c += uint32(k[11]) << 24
		fallthrough
	case 11:
		c += uint32(k[10]) << 16
		fallthrough
	case 10:
		c += uint32(k[9]) << 8
		fallthrough
	case 9:
		c += uint32(k[8])
		fallthrough
	case 8:
		b += uint32(k[7]) << 24
		fallthrough
	case 7:
		b += uint32(k[6]) << 16
		fallthrough
	case 6:
		b += uint32(k[5]) << 8
		fallthrough
	case 5:
		b += uint32(k[4])
		fallthrough
	case 4:
		a += uint32(k[3]) << 24
		fallthrough
	case 3:
		a += uint32(k[2]) << 16
		fallthrough
	case 2:
		a += uint32(k[1]) << 8
		fallthrough
	case 1:
		a += uint32(k[0])
		c = final(a, b, c)
	}
	return c
}

func TestHashMatchesKernelTranscription(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 200)
	for n := 0; n <= len(buf); n++ {
		for i := 0; i < 20; i++ {
			for j := range buf[:n] {
				buf[j] = byte(r.Uint32())
			}
			seed := r.Uint32()
			if got, want := Hash(buf[:n], seed), refHash(buf[:n], seed); got != want {
				t.Fatalf("len %d seed %#x: Hash %#08x, kernel transcription %#08x", n, seed, got, want)
			}
		}
	}
}

// TestWordFunctionsAgree checks the identities the kernel's header implies:
// jhash over little-endian words equals jhash2, and the n-word helpers equal
// jhash2 of 1, 2 and 3 words.
func TestWordFunctionsAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 10000; i++ {
		words := make([]uint32, r.IntN(10))
		key := make([]byte, 4*len(words))
		for j := range words {
			words[j] = r.Uint32()
			binary.LittleEndian.PutUint32(key[4*j:], words[j])
		}
		seed := r.Uint32()
		if h, h2 := Hash(key, seed), Hash2(words, seed); h != h2 {
			t.Fatalf("words %x seed %#x: Hash %#x != Hash2 %#x", words, seed, h, h2)
		}
		a, b, c := r.Uint32(), r.Uint32(), r.Uint32()
		if Hash1Word(a, seed) != Hash2([]uint32{a}, seed) ||
			Hash2Words(a, b, seed) != Hash2([]uint32{a, b}, seed) ||
			Hash3Words(a, b, c, seed) != Hash2([]uint32{a, b, c}, seed) {
			t.Fatalf("n-word helper disagrees with Hash2 for %#x %#x %#x seed %#x", a, b, c, seed)
		}
	}
}

func TestReciprocalScale(t *testing.T) {
	tests := []struct{ val, n, want uint32 }{
		{0, 5, 0},
		{0xffffffff, 1, 0},
		{0xffffffff, 2, 1},
		{0xffffffff, 32, 31},
		{0x80000000, 2, 1},
		{0x7fffffff, 2, 0},
		{0x55555555, 3, 0},
		{0x55555556, 3, 1},
		{1234, 0, 0},
	}
	for _, tc := range tests {
		if got := ReciprocalScale(tc.val, tc.n); got != tc.want {
			t.Errorf("ReciprocalScale(%#x, %d) = %d, want %d", tc.val, tc.n, got, tc.want)
		}
	}
}

// TestDistribution checks that consecutive and random IPv4 sources spread
// evenly over the buckets: every bucket within 5% of its fair share.
func TestDistribution(t *testing.T) {
	const samples = 200000
	r := rand.New(rand.NewPCG(5, 6))
	for _, total := range []uint32{2, 3, 7, 16, 32} {
		for _, name := range []string{"sequential", "random"} {
			counts := make([]int, total)
			for i := uint32(0); i < samples; i++ {
				var ip [4]byte
				if name == "random" {
					binary.BigEndian.PutUint32(ip[:], r.Uint32())
				} else {
					binary.BigEndian.PutUint32(ip[:], 0x0a000000+i) // 10.0.0.0 upwards
				}
				counts[ReciprocalScale(Hash1Word(Word(ip[:]), 0xdeadbeef), total)]++
			}
			fair := float64(samples) / float64(total)
			for n, c := range counts {
				if dev := (float64(c) - fair) / fair; dev > 0.05 || dev < -0.05 {
					t.Errorf("%s total %d: bucket %d has %d, fair share %.0f (%.1f%% off)", name, total, n, c, fair, dev*100)
				}
			}
		}
	}
}

// TestAvalanche: flipping any one input bit of a word flips about half of
// the output bits on average.
func TestAvalanche(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const trials = 2000
	for bit := 0; bit < 32; bit++ {
		flips := 0
		for i := 0; i < trials; i++ {
			a, seed := r.Uint32(), r.Uint32()
			d := Hash1Word(a, seed) ^ Hash1Word(a^(1<<bit), seed)
			for ; d != 0; d &= d - 1 {
				flips++
			}
		}
		if avg := float64(flips) / trials; avg < 14 || avg > 18 {
			t.Errorf("input bit %d flips %.2f output bits on average, want about 16", bit, avg)
		}
	}
}

var sink uint32

func reportPPS(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hashes/s")
}

// BenchmarkHash1Word hashes independent words, as a worker hashes the
// independent packets of a batch (throughput).
func BenchmarkHash1Word(b *testing.B) {
	b.ReportAllocs()
	var h uint32
	for i := 0; i < b.N; i++ {
		h ^= Hash1Word(uint32(i), 0xdeadbeef)
	}
	sink = h
	reportPPS(b)
}

// BenchmarkHash1WordLatency feeds each hash into the next (latency).
func BenchmarkHash1WordLatency(b *testing.B) {
	b.ReportAllocs()
	var h uint32
	for i := 0; i < b.N; i++ {
		h = Hash1Word(uint32(i)^h, 0xdeadbeef)
	}
	sink = h
	reportPPS(b)
}

func BenchmarkHash2IPv6(b *testing.B) {
	b.ReportAllocs()
	words := []uint32{0x20010db8, 0, 0, 1}
	var h uint32
	for i := 0; i < b.N; i++ {
		words[3] = uint32(i)
		h ^= Hash2(words, 0xdeadbeef)
	}
	sink = h
	reportPPS(b)
}

func BenchmarkHashBytes(b *testing.B) {
	for _, n := range []int{4, 16, 64, 1500} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			key := make([]byte, n)
			b.ReportAllocs()
			b.SetBytes(int64(n))
			var h uint32
			for i := 0; i < b.N; i++ {
				key[0] = byte(i)
				h = Hash(key, h)
			}
			sink = h
			reportPPS(b)
		})
	}
}
