package xsk

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/packet"
)

// flowFrame builds a valid frame (to the cluster MAC) of a connection's
// direction and returns it with the direction's key.
func flowFrame(proto uint8, src, dst string, sport, dport uint16, payload int) ([]byte, dataplane.FlowKey) {
	s := frameSpec{dstMAC: clusterMAC, ttl: 64, udpLen: -1, proto: proto, sport: sport, dport: dport, payload: payload,
		src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst), tcpFlags: packet.TCPAck}
	s.v6 = s.src.Is6()
	f := s.build(rand.New(rand.NewPCG(1, 2)))
	var p packet.Parsed
	if r := p.Decode(f); r != packet.OK {
		panic(r)
	}
	return f, dataplane.KeyOf(&p.Tuple)
}

// wantVerdict runs f on d0 and checks the verdict, and for a forward the
// egress interface's MAC and the destination MAC, or for the slow path the
// reason counted.
func (e *fastEnv) wantVerdict(t *testing.T, step string, f []byte, verdict uint32, egress string, dmac net.HardwareAddr, slow int) {
	t.Helper()
	before := e.counters(t)
	ret, out := e.run(t, f, "d0", make([]byte, 4096))
	after := e.counters(t)
	if ret != verdict {
		t.Fatalf("%s: verdict %d, want %d (slow path %v -> %v)", step, ret, verdict, before.fast.Slow, after.fast.Slow)
	}
	switch verdict {
	case xdpRedirect:
		if got, want := net.HardwareAddr(out[6:12]), e.ifs[egress].HardwareAddr; got.String() != want.String() {
			t.Errorf("%s: source MAC %s, want %s's %s", step, got, egress, want)
		}
		if got := net.HardwareAddr(out[0:6]); got.String() != dmac.String() {
			t.Errorf("%s: destination MAC %s, want %s", step, got, dmac)
		}
	case xdpPass:
		if slow >= 0 && after.fast.Slow[slow] != before.fast.Slow[slow]+1 {
			t.Errorf("%s: slow path reasons %v -> %v, want %s counted", step, before.fast.Slow, after.fast.Slow, SlowReasonNames[slow])
		}
	}
}

// TestFastPathFollowsRoutes: the fast path asks the kernel's FIB and
// neighbour table per packet, so a route replaced or a neighbour deleted
// or changed applies to the very next packet of a cached flow.
//
// Both programs (XDP and tc) are checked, each in its own topology.
func TestFastPathFollowsRoutes(t *testing.T) {
	for _, p := range fastPrograms {
		t.Run(p.name, func(t *testing.T) { testFastPathFollowsRoutes(t, p.env(t)) })
	}
}

func testFastPathFollowsRoutes(t *testing.T, e *fastEnv) {
	if err := e.fc.SetMatch(1, false); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, src, dst     string
		prefix, viaD0, dev string
		d0, d1             net.HardwareAddr
		ip                 string
	}{
		{"ipv4", "10.1.1.1", "198.51.100.1", "198.51.100.0/24", "10.1.0.2", "d0", macD0v4, macD1v4, "-4"},
		{"ipv6", "2001:db8:11::1", "2001:db8:100::1", "2001:db8:100::/48", "2001:db8:1::2", "d0", macD0v6, macD1v6, "-6"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, k := flowFrame(packet.ProtoUDP, tc.src, tc.dst, 5000, 53, 32)
			if err := e.fc.Install([]dataplane.FlowKey{k}, []uint8{0}); err != nil {
				t.Fatal(err)
			}
			ip := func(args ...string) {
				t.Helper()
				if _, err := e.gw.Run("ip", append([]string{tc.ip}, args...)...); err != nil {
					t.Fatal(err)
				}
			}
			e.wantVerdict(t, "initial route via d1", f, xdpRedirect, "d1", tc.d1, -1)
			ip("route", "replace", tc.prefix, "via", tc.viaD0, "dev", "d0")
			e.wantVerdict(t, "route replaced via d0", f, xdpRedirect, "d0", tc.d0, -1)
			ip("neigh", "del", tc.viaD0, "dev", "d0")
			e.wantVerdict(t, "neighbour deleted", f, xdpPass, "", nil, SlowFIBNoNeighbour)
			ip("neigh", "replace", tc.viaD0, "lladdr", macAlt.String(), "dev", "d0", "nud", "permanent")
			e.wantVerdict(t, "neighbour with a new MAC", f, xdpRedirect, "d0", macAlt, -1)
			ip("route", "replace", "blackhole", tc.prefix)
			e.wantVerdict(t, "blackhole route", f, xdpPass, "", nil, SlowFIBBlackhole)
		})
	}
}

// TestSetMatchNextPacket: a cached connection's verdict follows SetMatch
// on its next packet, foreign (dropped) and owned (forwarded) in turn,
// without its entry being rewritten; before the first SetMatch the cache
// is off and every frame goes to the slow path uncounted.
func TestSetMatchNextPacket(t *testing.T) {
	for _, p := range fastPrograms {
		t.Run(p.name, func(t *testing.T) { testSetMatchNextPacket(t, p.env(t)) })
	}
}

func testSetMatchNextPacket(t *testing.T, e *fastEnv) {
	f0, k0 := flowFrame(packet.ProtoTCP, "10.1.1.1", "198.51.100.1", 40000, 443, 100)
	f1, k1 := flowFrame(packet.ProtoTCP, "198.51.100.2", "10.1.1.2", 443, 40001, 100)
	if err := e.fc.Install([]dataplane.FlowKey{k0, k1.Reverse()}, []uint8{0, 1}); err != nil {
		t.Fatal(err)
	}
	before := e.counters(t)
	e.wantVerdict(t, "before SetMatch", f0, xdpPass, "", nil, -1)
	if after := e.counters(t); after.fast != before.fast {
		t.Errorf("before SetMatch: fast-path counters moved: %+v -> %+v", before.fast, after.fast)
	}
	entry := func(k dataplane.FlowKey) flowValue {
		t.Helper()
		var v flowValue
		if err := e.fc.flows.Lookup(&k, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	v0, v1 := entry(k0), entry(k1)
	installs := e.fc.installs.Load()
	steps := []struct {
		mask   uint32
		invert bool
		want0  uint32 // bucket 0's connection
		want1  uint32 // bucket 1's (its reply direction)
	}{
		{0b01, false, xdpRedirect, xdpDrop},
		{0b10, false, xdpDrop, xdpRedirect},
		{0b01, true, xdpDrop, xdpRedirect},
		{0b11, false, xdpRedirect, xdpRedirect},
		{0b11, true, xdpDrop, xdpDrop},
		{0b01, false, xdpRedirect, xdpDrop},
	}
	for _, s := range steps {
		if err := e.fc.SetMatch(s.mask, s.invert); err != nil {
			t.Fatal(err)
		}
		e.wantVerdict(t, "bucket 0", f0, s.want0, "d1", macD1v4, -1)
		e.wantVerdict(t, "bucket 1", f1, s.want1, "d0", macD0v4, -1)
	}
	a0, a1 := entry(k0), entry(k1)
	if a0.Bucket != v0.Bucket || a0.Dir != 0 || a1.Bucket != v1.Bucket || a1.Dir != 1 || e.fc.installs.Load() != installs {
		t.Errorf("entries rewritten: %+v -> %+v, %+v -> %+v", v0, a0, v1, a1)
	}
	if a0.Packets != uint64(len(steps)) || a1.Packets != uint64(len(steps)) {
		t.Errorf("entries counted %d and %d packets, want %d each", a0.Packets, a1.Packets, len(steps))
	}
}

// counter reads one statistics counter of an interface in ns.
func counter(t *testing.T, ns *netns.NS, dev, name string) uint64 {
	t.Helper()
	out := nstest.Run(t, ns, "cat", "/sys/class/net/"+dev+"/statistics/"+name)
	n, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("%s of %s: %v", name, dev, err)
	}
	return n
}

// TestFastPathRedirectIntoVeth carries frames out for real
// (BPF_F_TEST_XDP_LIVE_FRAMES: the kernel performs the redirect) through
// the egress devmap into the veth d1, and counts what its peer p1 receives.
// On this kernel a veth delivers XDP_REDIRECTed frames only if its peer
// runs NAPI (GRO on, or an XDP program attached to the peer); otherwise
// they are dropped: the test logs that case and requires delivery with GRO
// on.
func TestFastPathRedirectIntoVeth(t *testing.T) {
	e := newFastEnv(t)
	if err := e.fc.SetMatch(1, false); err != nil {
		t.Fatal(err)
	}
	f, k := flowFrame(packet.ProtoUDP, "10.1.1.1", "198.51.100.1", 1000, 2000, 18)
	if err := e.fc.Install([]dataplane.FlowKey{k}, []uint8{0}); err != nil {
		t.Fatal(err)
	}
	// A live run initialises each page of its pool once, and the program
	// rewrites the frame: keep each run within one batch of pages (64).
	const runs, per = 4, 50
	const n = runs * per
	send := func() (rx uint64, stats string) {
		t.Helper()
		rx0 := counter(t, e.peer, "p1", "rx_packets")
		for range runs {
			err := e.gw.Do(func() error { // live runs report no verdict: the counters tell
				_, _, err := e.testRun(f, e.ifs["d0"].Index, per, bpfFTestXDPLiveFrames)
				return err
			})
			if err != nil {
				t.Fatalf("live run: %v", err)
			}
		}
		// The peer receives in its NAPI poll: give it a moment.
		for range 50 {
			if rx = counter(t, e.peer, "p1", "rx_packets") - rx0; rx >= n {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		var xmit []string
		for _, l := range strings.Split(nstest.Run(t, e.gw, "ethtool", "-S", "d1"), "\n") {
			if strings.Contains(l, "xdp_xmit") {
				xmit = append(xmit, strings.TrimSpace(l))
			}
		}
		return rx, strings.Join(xmit, ", ")
	}
	nstest.Run(t, e.peer, "ethtool", "-K", "p1", "gro", "off")
	rx, stats := send()
	t.Logf("peer GRO off, no XDP program on the peer: %d of %d frames received; d1: %s", rx, n, stats)
	nstest.Run(t, e.peer, "ethtool", "-K", "p1", "gro", "on")
	rx, stats = send()
	t.Logf("peer GRO on: %d of %d frames received; d1: %s", rx, n, stats)
	if rx < n { // other frames (IPv6 neighbour discovery) may arrive too
		t.Errorf("peer GRO on: %d of %d frames received", rx, n)
	}
	st, err := e.prog.FastStats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Forwarded != 2*n {
		t.Errorf("forwarded counter %d, want %d", st.Forwarded, 2*n)
	}
}

// TestSetMatchAtomic: SetMatch flipping between two writings of the same
// ownership (own bucket 0 of 2: mask 0b01, or mask 0b10 inverted) never
// lets a packet see a mix of them (mask 0b01 inverted, or 0b10 plain,
// which own bucket 1 instead): the program reads mask and invert as one
// word, which SetMatch stores atomically. The flips run on another
// thread while the program decides a packet of each bucket thousands of
// times; a torn read would forward bucket 1's packet or drop bucket 0's.
func TestSetMatchAtomic(t *testing.T) {
	e := newFastEnv(t)
	f0, k0 := flowFrame(packet.ProtoTCP, "10.1.1.1", "198.51.100.1", 40000, 443, 100)
	f1, k1 := flowFrame(packet.ProtoTCP, "10.1.1.2", "198.51.100.1", 40001, 443, 100)
	if err := e.fc.Install([]dataplane.FlowKey{k0, k1}, []uint8{0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.fc.SetMatch(0b01, false); err != nil {
		t.Fatal(err)
	}
	stop := nstest.Repeat(func() {
		e.fc.SetMatch(0b10, true)
		e.fc.SetMatch(0b01, false)
	})
	out := make([]byte, 4096)
	var bad0, bad1 int
	const runs = 5000
	for range runs {
		if v, _ := e.run(t, f0, "d0", out); v != xdpRedirect {
			bad0++
		}
		if v, _ := e.run(t, f1, "d0", out); v != xdpDrop {
			bad1++
		}
	}
	n := 2 * stop()
	if bad0 != 0 || bad1 != 0 {
		t.Fatalf("over %d flips, %d of %d packets of the owned bucket not forwarded and %d of the other not dropped", n, bad0, runs, bad1)
	}
	t.Logf("%d runs per bucket during %d flips: every verdict the same", runs, n)
}
