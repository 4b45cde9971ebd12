package cluster_test

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// The kernel oracle: a private namespace holds a veth pair. Frames written
// to one end arrive at the other, where iptables/ip6tables -m cluster rules
// in mangle PREROUTING, one CONNMARK bit per rule, record in each new
// conntrack entry exactly which rules matched its original source address.
// conntrack -L then gives the kernel's decision for every address.

const (
	oracleDst4 = "192.0.2.1"
	oracleDst6 = "2001:db8:ffff::1"
)

type oracle struct {
	t      *testing.T
	ns     *netns.NS
	in     *nstest.Injector
	srcMAC net.HardwareAddr
	dstMAC net.HardwareAddr
}

func newOracle(t *testing.T) *oracle {
	nstest.Require(t)
	for _, tool := range []string{"iptables-restore", "ip6tables-restore", "conntrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install iptables and conntrack (the README's test command does): %v", tool, err)
		}
	}
	ns := nstest.New(t, "xc-oracle")
	o := &oracle{t: t, ns: ns}
	for _, c := range [][]string{
		{"ip", "link", "add", "vs", "type", "veth", "peer", "name", "vr"},
		{"ip", "link", "set", "vs", "up"},
		{"ip", "link", "set", "vr", "up"},
		{"ip", "addr", "add", oracleDst4 + "/32", "dev", "vr"},
		{"ip", "addr", "add", oracleDst6 + "/128", "dev", "vr", "nodad"},
		// Random sources must reach conntrack's confirmation at LOCAL_IN.
		{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"},
		{"sysctl", "-qw", "net.ipv4.conf.vr.rp_filter=0"},
		{"sysctl", "-qw", "net.ipv6.conf.vs.disable_ipv6=1"},
	} {
		nstest.Run(t, ns, c[0], c[1:]...)
	}
	o.srcMAC = nstest.MAC(t, ns, "vs")
	o.dstMAC = nstest.MAC(t, ns, "vr")
	o.in = nstest.NewInjector(t, ns, "vs")
	return o
}

// send writes one UDP datagram from src to the oracle's address.
func (o *oracle) send(src netip.Addr, sport uint16) {
	eth := &layers.Ethernet{SrcMAC: o.srcMAC, DstMAC: o.dstMAC}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: 9}
	var ip gopacket.SerializableLayer
	if src.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		v4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
			SrcIP: src.AsSlice(), DstIP: net.ParseIP(oracleDst4).To4()}
		udp.SetNetworkLayerForChecksum(v4)
		ip = v4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
			SrcIP: src.AsSlice(), DstIP: net.ParseIP(oracleDst6)}
		udp.SetNetworkLayerForChecksum(v6)
		ip = v6
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, udp, gopacket.Payload("xdpcluster")); err != nil {
		o.t.Fatal(err)
	}
	o.in.Send(buf.Bytes())
}

// load replaces the mangle table with one rule per match, rule r setting
// connmark bit r, for both families.
func (o *oracle) load(rules []cluster.Match) {
	var b strings.Builder
	b.WriteString("*mangle\n-F PREROUTING\n")
	for r, m := range rules {
		fmt.Fprintf(&b, "-A PREROUTING %s -j CONNMARK --or-mark %#x\n", m, uint32(1)<<r)
	}
	b.WriteString("COMMIT\n")
	for _, tool := range []string{"iptables-restore", "ip6tables-restore"} {
		if _, err := o.ns.RunStdin(b.String(), tool, "--noflush"); err != nil {
			o.t.Fatalf("load rules:\n%s\n%v", b.String(), err)
		}
	}
}

// marks sends one datagram from every source and returns the connmark the
// kernel gave each source's conntrack entry.
func (o *oracle) marks(srcs []netip.Addr, sport uint16) map[netip.Addr]uint32 {
	if _, err := o.ns.Run("conntrack", "-F"); err != nil {
		o.t.Logf("conntrack -F: %v", err) // an empty table makes it exit non-zero on some versions
	}
	o.ns.Run("conntrack", "-F", "-f", "ipv6")
	for _, s := range srcs {
		o.send(s, sport)
	}
	got := map[netip.Addr]uint32{}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(srcs) && time.Now().Before(deadline) {
		got = map[netip.Addr]uint32{}
		for _, fam := range []string{"ipv4", "ipv6"} {
			out, err := o.ns.Run("conntrack", "-L", "-p", "udp", "-f", fam)
			if err != nil {
				o.t.Fatal(err)
			}
			parseConntrack(o.t, out, sport, got)
		}
		if len(got) < len(srcs) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return got
}

// parseConntrack reads "udp 17 29 src=A dst=B sport=P dport=9 ... mark=M"
// lines, keeping entries whose first sport is sport.
func parseConntrack(t *testing.T, out []byte, sport uint16, into map[netip.Addr]uint32) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var src netip.Addr
		var port, mark = -1, int64(-1)
		for _, f := range strings.Fields(sc.Text()) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			switch {
			case k == "src" && !src.IsValid():
				a, err := netip.ParseAddr(v)
				if err != nil {
					t.Fatalf("conntrack line %q: %v", sc.Text(), err)
				}
				src = a
			case k == "sport" && port < 0:
				port, _ = strconv.Atoi(v)
			case k == "mark":
				mark, _ = strconv.ParseInt(v, 0, 64)
			}
		}
		if src.IsValid() && port == int(sport) && mark >= 0 {
			into[src] = uint32(mark)
		}
	}
}

// sources returns n4 distinct IPv4 and n6 distinct IPv6 source addresses the
// kernel routes to local delivery (no martians: 0/8, 127/8, 224/3 and the
// oracle's own address are left out; the golden vectors cover those).
func sources(r *rand.Rand, n4, n6 int) []netip.Addr {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	add := func(a netip.Addr) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, s := range []string{"10.0.0.1", "192.168.1.1", "1.1.1.1", "223.255.255.254", "172.16.0.1"} {
		add(netip.MustParseAddr(s))
	}
	for len(out) < n4 {
		var b [4]byte
		v := r.Uint32()
		b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		if b[0] == 0 || b[0] == 127 || b[0] >= 224 || netip.AddrFrom4(b).String() == oracleDst4 {
			continue
		}
		add(netip.AddrFrom4(b))
	}
	for _, s := range []string{"2001:db8::1", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1",
		"fd00::1", "::ffff:10.0.0.1", "::ffff:198.51.100.7", "2a00:1450:4a6c:b2bb:f61c:b1ab:18ff:358c"} {
		add(netip.MustParseAddr(s))
	}
	for len(out) < n4+n6 {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		switch r.IntN(4) {
		case 0: // global unicast
			b[0] = 0x20 | b[0]&0x1f
		case 1: // unique local
			b[0] = 0xfd
		case 2: // a shared /32, different hosts
			b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		default: // a random first word, never multicast
			if b[0] == 0xff {
				b[0] = 0x3f
			}
		}
		a := netip.AddrFrom16(b)
		if a.String() == oracleDst6 || a.IsLoopback() || a.IsUnspecified() {
			continue
		}
		add(a)
	}
	return out
}

// passes groups the rules to check into sets of at most 32 (one connmark
// bit each): one rule per node for every seed and node count, then inverted
// and multi-node rules.
func passes(r *rand.Rand, seeds []uint32) [][]cluster.Match {
	var all []cluster.Match
	for _, seed := range seeds {
		for _, total := range []uint32{1, 2, 3, 7, 32} {
			for node := uint32(1); node <= total; node++ {
				all = append(all, cluster.LocalNode(total, node, seed))
			}
		}
		for i := 0; i < 12; i++ {
			total := 1 + r.Uint32N(cluster.MaxNodes)
			m := cluster.Match{TotalNodes: total, Seed: seed, Invert: i%2 == 0}
			// iptables' parser accepts masks 1..32 only; the kernel takes any.
			limit := uint64(1)<<total - 1
			if limit > 32 {
				limit = 32
			}
			m.NodeMask = uint32(1 + r.Uint64N(limit))
			all = append(all, m)
		}
	}
	var out [][]cluster.Match
	for len(all) > 0 {
		n := min(32, len(all))
		out = append(out, all[:n])
		all = all[n:]
	}
	return out
}

// TestAgainstKernel asserts that cluster.Match decides every address as the
// kernel's xt_cluster does.
func TestAgainstKernel(t *testing.T) {
	o := newOracle(t)
	rseed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", rseed)
	r := rand.New(rand.NewPCG(rseed, 42))
	srcs := sources(r, 2000, 500)
	seeds := []uint32{0, 0xdeadbeef, r.Uint32()}
	checked := 0
	for p, rules := range passes(r, seeds) {
		o.load(rules)
		got := o.marks(srcs, uint16(1000+p))
		for _, src := range srcs {
			mark, ok := got[src]
			if !ok {
				t.Errorf("pass %d: kernel made no conntrack entry for %s", p, src)
				continue
			}
			var want uint32
			for i, m := range rules {
				if m.Owns(src) {
					want |= 1 << i
				}
			}
			if mark != want {
				for i, m := range rules {
					if (mark>>i)&1 != (want>>i)&1 {
						t.Errorf("%s: kernel says %v, we say %v for rule %q", src, mark>>i&1 == 1, want>>i&1 == 1, m)
					}
				}
			}
			checked += len(rules)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d sources x rules agreed with the kernel", checked)
}
