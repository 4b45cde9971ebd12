package xsk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/packet"
)

// xdpMD is struct xdp_md, BPF_PROG_TEST_RUN's context for XDP.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// skbCtx is struct __sk_buff up to ifindex, BPF_PROG_TEST_RUN's context
// for tc: the kernel takes the frame's device from Ifindex.
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority, IngressIfindex, Ifindex uint32
}

// Where a destination's route leads, as the fast path sees it.
const routeOK = -1 // forwarded: a route and a valid neighbour on a data interface

// dest is a destination address of the test topology and its outcome.
type dest struct {
	addr    netip.Addr
	outcome int    // routeOK or a Slow reason
	egress  string // the route's interface (routeOK, SlowFIBNoNeighbour, SlowNoEgress)
	dmac    net.HardwareAddr
}

// fastEnv is a gateway namespace with two data interfaces (veth d0, d1;
// peers p0, p1 in a second namespace) and a third veth x0 that is not one,
// routes of every kind, and our program loaded with a flow cache.
type fastEnv struct {
	gw, peer *netns.NS
	prog     *Program
	tc       *TCProgram // when set, run and counters use it instead of prog
	fc       *FlowCache
	ifs      map[string]*net.Interface
	mtu      map[string]int
	dests    []dest // IPv4 and IPv6
}

// Neighbour MACs of the topology.
var (
	macD0v4 = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	macD1v4 = net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 2}
	macX0v4 = net.HardwareAddr{0x02, 0xcc, 0, 0, 0, 3}
	macD0v6 = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 4}
	macD1v6 = net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 5}
	macX0v6 = net.HardwareAddr{0x02, 0xcc, 0, 0, 0, 6}
	macAlt  = net.HardwareAddr{0x02, 0xdd, 0, 0, 0, 7}
)

func newFastEnv(t testing.TB) *fastEnv {
	t.Helper()
	needRoot(t)
	nstest.Require(t)
	e := &fastEnv{gw: nstest.New(t, "xcfast"), peer: nstest.New(t, "xcfastp"), mtu: map[string]int{"d0": 1500, "d1": 1400, "x0": 1500}}
	run := func(ns *netns.NS, cmd string) {
		t.Helper()
		f := strings.Fields(cmd)
		nstest.Run(t, ns, f[0], f[1:]...)
	}
	for _, c := range []string{
		"ip link add d0 type veth peer name p0 netns " + e.peer.Name,
		"ip link add d1 type veth peer name p1 netns " + e.peer.Name,
		"ip link add x0 type veth peer name px0 netns " + e.peer.Name,
		"ip link set d1 mtu 1400",
		"ip link set d0 up", "ip link set d1 up", "ip link set x0 up",
		"sysctl -qw net.ipv4.ip_forward=1", "sysctl -qw net.ipv6.conf.all.forwarding=1",
		"ip addr add 10.1.0.1/24 dev d0", "ip addr add 10.2.0.1/24 dev d1", "ip addr add 172.16.255.1/24 dev x0",
		"ip addr add 10.9.9.9/32 dev d1",
		"ip -6 addr add 2001:db8:1::1/64 dev d0 nodad", "ip -6 addr add 2001:db8:2::1/64 dev d1 nodad",
		"ip -6 addr add 2001:db8:ff::1/64 dev x0 nodad", "ip -6 addr add 2001:db8:9::9/128 dev d1 nodad",
		"ip neigh replace 10.1.0.2 lladdr " + macD0v4.String() + " dev d0 nud permanent",
		"ip neigh replace 10.2.0.2 lladdr " + macD1v4.String() + " dev d1 nud permanent",
		"ip neigh replace 172.16.255.2 lladdr " + macX0v4.String() + " dev x0 nud permanent",
		"ip -6 neigh replace 2001:db8:1::2 lladdr " + macD0v6.String() + " dev d0 nud permanent",
		"ip -6 neigh replace 2001:db8:2::2 lladdr " + macD1v6.String() + " dev d1 nud permanent",
		"ip -6 neigh replace 2001:db8:ff::2 lladdr " + macX0v6.String() + " dev x0 nud permanent",
		"ip route add 10.1.1.0/24 via 10.1.0.2 dev d0",
		"ip route add 198.51.100.0/24 via 10.2.0.2 dev d1",
		"ip route add 203.0.113.0/24 via 10.2.0.3 dev d1",
		"ip route add blackhole 192.0.2.0/24",
		"ip route add unreachable 100.64.0.0/16",
		"ip route add prohibit 100.65.0.0/16",
		"ip route add 172.16.0.0/16 via 172.16.255.2 dev x0",
		"ip -6 route add 2001:db8:11::/48 via 2001:db8:1::2 dev d0",
		"ip -6 route add 2001:db8:100::/48 via 2001:db8:2::2 dev d1",
		"ip -6 route add 2001:db8:200::/48 via 2001:db8:2::3 dev d1",
		"ip -6 route add blackhole 2001:db8:300::/48",
		"ip -6 route add unreachable 2001:db8:400::/48",
		"ip -6 route add prohibit 2001:db8:500::/48",
		"ip -6 route add 2001:db8:600::/48 via 2001:db8:ff::2 dev x0",
	} {
		run(e.gw, c)
	}
	for _, c := range []string{"ip link set p0 up", "ip link set p1 mtu 1400", "ip link set p1 up", "ip link set px0 up"} {
		run(e.peer, c)
	}
	d := func(a string, outcome int, egress string, mac net.HardwareAddr) {
		e.dests = append(e.dests, dest{netip.MustParseAddr(a), outcome, egress, mac})
	}
	for _, a := range []string{"10.1.1.1", "10.1.1.2", "10.1.1.77", "10.1.0.2"} {
		d(a, routeOK, "d0", macD0v4)
	}
	for _, a := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.200", "10.2.0.2"} {
		d(a, routeOK, "d1", macD1v4)
	}
	for _, a := range []string{"2001:db8:11::1", "2001:db8:11::2", "2001:db8:11:5::9", "2001:db8:1::2"} {
		d(a, routeOK, "d0", macD0v6)
	}
	for _, a := range []string{"2001:db8:100::1", "2001:db8:100::2", "2001:db8:100:7::1", "2001:db8:2::2"} {
		d(a, routeOK, "d1", macD1v6)
	}
	d("203.0.113.1", SlowFIBNoNeighbour, "d1", nil)
	d("10.2.0.3", SlowFIBNoNeighbour, "d1", nil)
	d("2001:db8:200::1", SlowFIBNoNeighbour, "d1", nil)
	d("2001:db8:2::3", SlowFIBNoNeighbour, "d1", nil)
	d("192.0.2.1", SlowFIBBlackhole, "", nil)
	d("2001:db8:300::1", SlowFIBBlackhole, "", nil)
	d("100.64.0.1", SlowFIBUnreachable, "", nil)
	d("2001:db8:400::1", SlowFIBUnreachable, "", nil)
	d("100.65.0.1", SlowFIBProhibit, "", nil)
	d("2001:db8:500::1", SlowFIBProhibit, "", nil)
	d("10.9.9.9", SlowFIBNotForwarded, "", nil)
	d("10.2.0.1", SlowFIBNotForwarded, "", nil)
	d("2001:db8:9::9", SlowFIBNotForwarded, "", nil)
	d("2001:db8:1::1", SlowFIBNotForwarded, "", nil)
	d("172.16.0.1", SlowNoEgress, "x0", nil)
	d("2001:db8:600::1", SlowNoEgress, "x0", nil)

	var err error
	if e.fc, err = NewFlowCache(1<<18, conntrack.NewClock()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.fc.Close() })
	if e.prog, err = NewProgram(clusterMAC, e.fc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.prog.Close() })
	e.ifs = map[string]*net.Interface{}
	err = e.gw.Do(func() error {
		for _, n := range []string{"d0", "d1", "x0"} {
			ifc, err := net.InterfaceByName(n)
			if err != nil {
				return err
			}
			e.ifs[n] = ifc
		}
		for _, n := range []string{"d0", "d1"} {
			if err := e.fc.AddEgress(e.ifs[n].Index); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// newTCFastEnv is newFastEnv with the tc program loaded on the same flow
// cache: run and counters then use it, with its verdicts and counters in
// the XDP program's terms (tcVerdicts, counters), so that one reference
// checks both programs.
func newTCFastEnv(t testing.TB) *fastEnv {
	t.Helper()
	e := newFastEnv(t)
	var err error
	if e.tc, err = NewTCProgram(clusterMAC, e.fc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.tc.Close() })
	return e
}

// fastPrograms are the two programs of the fast path, each with its
// test topology: the XDP program and the tc program.
var fastPrograms = []struct {
	name string
	env  func(testing.TB) *fastEnv
}{{"xdp", newFastEnv}, {"tc", newTCFastEnv}}

// tcRefused reports whether BPF_PROG_TEST_RUN refuses to run a tc program
// on f: an untagged IPv4 or IPv6 frame too short for its fixed IP header
// (the kernel checks that before it builds the skb; the programs' own
// bounds checks still cover such frames on the wire).
func tcRefused(f []byte) bool {
	if len(f) < 14 {
		return true
	}
	switch binary.BigEndian.Uint16(f[12:]) {
	case packet.EtherTypeIPv4:
		return len(f) < 14+20
	case packet.EtherTypeIPv6:
		return len(f) < 14+40
	}
	return false
}

// tcVerdicts are the tc program's verdicts as the XDP program's.
var tcVerdicts = map[uint32]uint32{tcActUnspec: xdpPass, tcActShot: xdpDrop, tcActRedirect: xdpRedirect}

// run runs the program on frame arriving on ingress, in the gateway's
// namespace, and returns its verdict (the tc program's as the XDP
// program's; another as 100 plus it) and the frame as it left.
func (e *fastEnv) run(t testing.TB, frame []byte, ingress string, out []byte) (uint32, []byte) {
	t.Helper()
	var ret uint32
	var got []byte
	err := e.gw.Do(func() error {
		var opts ebpf.RunOptions
		var err error
		if e.tc != nil {
			idx := uint32(e.ifs[ingress].Index)
			opts = ebpf.RunOptions{Data: frame, DataOut: out[:cap(out)], Context: skbCtx{IngressIfindex: idx, Ifindex: idx}}
			ret, err = e.tc.Prog.Run(&opts)
			if v, ok := tcVerdicts[ret]; ok {
				ret = v
			} else {
				ret += 100
			}
		} else {
			ctx := xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(e.ifs[ingress].Index)}
			opts = ebpf.RunOptions{Data: frame, DataOut: out[:cap(out)], Context: ctx}
			ret, err = e.prog.Prog.Run(&opts)
		}
		got = opts.DataOut
		return err
	})
	if err != nil {
		t.Fatalf("run the program on %d bytes: %v", len(frame), err)
	}
	return ret, got
}

// flow is a connection of the generator's pool: a -> b, original direction.
type flow struct {
	v6           bool
	proto        uint8
	a, b         netip.Addr
	sport, dport uint16
}

// frameSpec is what the generator builds; build turns it into bytes.
type frameSpec struct {
	dstMAC       net.HardwareAddr
	tags         []uint16 // EtherTypes of the tags, outer first
	v6           bool
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16
	tcpFlags     uint8
	tcpOpts      int // 32-bit words of TCP options
	udpLen       int // -1: correct
	ttl, tos     uint8
	payload      int
	ext          []uint8 // IPv6 extension headers before the transport header
	fragOff      uint16  // IPv4 fragment offset (8-byte units)
	mf           bool
	ipOpts       int // IPv4 option words
	icmpType     uint8
}

func (s *frameSpec) build(r *rand.Rand) []byte {
	b := make([]byte, 0, 2048)
	b = append(b, s.dstMAC...)
	b = append(b, 0x02, 0, 0, 0, 0, 0x42)
	for _, tag := range s.tags {
		b = binary.BigEndian.AppendUint16(b, tag)
		b = binary.BigEndian.AppendUint16(b, uint16(r.IntN(4096)))
	}
	var l4 []byte
	switch s.proto {
	case packet.ProtoTCP:
		l4 = make([]byte, 20+4*s.tcpOpts)
		for i := 20; i < len(l4); i++ {
			l4[i] = 1 // NOP
		}
		binary.BigEndian.PutUint32(l4[4:], r.Uint32())
		binary.BigEndian.PutUint32(l4[8:], r.Uint32())
		l4[12] = byte(5+s.tcpOpts) << 4
		l4[13] = s.tcpFlags
		binary.BigEndian.PutUint16(l4[14:], 512)
	case packet.ProtoUDP, packet.ProtoUDPLite:
		l4 = make([]byte, 8)
	case packet.ProtoSCTP:
		l4 = make([]byte, 12)
	case packet.ProtoDCCP:
		l4 = make([]byte, 16)
	case packet.ProtoICMP, packet.ProtoICMPv6:
		l4 = make([]byte, 8)
		l4[0] = s.icmpType
		if inner := s.icmpType == 3 || s.icmpType == 11 || s.v6 && s.icmpType == 1; inner {
			if s.v6 {
				in := make([]byte, 48)
				in[0], in[6], in[7] = 0x60, packet.ProtoUDP, 64
				copy(in[8:24], s.dst.AsSlice())
				copy(in[24:40], s.src.AsSlice())
				l4 = append(l4, in...)
			} else {
				in := make([]byte, 28)
				in[0], in[8], in[9] = 0x45, 64, packet.ProtoUDP
				copy(in[12:16], s.dst.AsSlice())
				copy(in[16:20], s.src.AsSlice())
				l4 = append(l4, in...)
			}
		}
	default:
		l4 = make([]byte, 0)
	}
	if s.proto != packet.ProtoICMP && s.proto != packet.ProtoICMPv6 && len(l4) >= 4 {
		binary.BigEndian.PutUint16(l4[0:], s.sport)
		binary.BigEndian.PutUint16(l4[2:], s.dport)
	}
	for range s.payload {
		l4 = append(l4, byte(r.Uint32()))
	}
	if s.proto == packet.ProtoUDP || s.proto == packet.ProtoUDPLite {
		n := len(l4)
		if s.proto == packet.ProtoUDPLite && r.IntN(2) == 0 {
			n = 0 // coverage: everything
		}
		if s.udpLen >= 0 {
			n = s.udpLen
		}
		binary.BigEndian.PutUint16(l4[4:], uint16(n))
	}
	if s.v6 {
		b = binary.BigEndian.AppendUint16(b, packet.EtherTypeIPv6)
		h := make([]byte, 40)
		h[0] = 0x60 | s.tos>>4
		h[1] = s.tos << 4
		next := s.proto
		var ext []byte
		for i := len(s.ext) - 1; i >= 0; i-- {
			e := make([]byte, 8)
			e[0] = next
			if s.ext[i] == packet.ProtoFragment {
				binary.BigEndian.PutUint16(e[2:], s.fragOff<<3|map[bool]uint16{true: 1}[s.mf])
			}
			ext = append(e, ext...)
			next = s.ext[i]
		}
		h[6], h[7] = next, s.ttl
		binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(l4)))
		copy(h[8:24], s.src.AsSlice())
		copy(h[24:40], s.dst.AsSlice())
		b = append(append(append(b, h...), ext...), l4...)
	} else {
		b = binary.BigEndian.AppendUint16(b, packet.EtherTypeIPv4)
		hl := 20 + 4*s.ipOpts
		h := make([]byte, hl)
		h[0] = 0x40 | byte(hl/4)
		h[1] = s.tos
		binary.BigEndian.PutUint16(h[2:], uint16(hl+len(l4)))
		binary.BigEndian.PutUint16(h[4:], uint16(r.Uint32()))
		fo := s.fragOff
		if s.mf {
			fo |= 0x2000
		}
		if r.IntN(2) == 0 {
			fo |= 0x4000 // DF
		}
		binary.BigEndian.PutUint16(h[6:], fo)
		h[8], h[9] = s.ttl, s.proto
		for i := 20; i < hl; i++ {
			h[i] = 1 // NOP options
		}
		copy(h[12:16], s.src.AsSlice())
		copy(h[16:20], s.dst.AsSlice())
		binary.BigEndian.PutUint16(h[10:], packet.Checksum(h))
		b = append(append(b, h...), l4...)
	}
	return b
}

// l3Off is where the IP header of an untagged frame starts.
const l3Off = 14

// fixIPv4Checksum recomputes the checksum of an untagged IPv4 frame's
// header, when the frame holds it.
func fixIPv4Checksum(f []byte) {
	if len(f) < l3Off+20 || binary.BigEndian.Uint16(f[12:]) != packet.EtherTypeIPv4 {
		return
	}
	hl := int(f[l3Off]&0x0f) * 4
	if hl < 20 || len(f) < l3Off+hl {
		return
	}
	f[l3Off+10], f[l3Off+11] = 0, 0
	binary.BigEndian.PutUint16(f[l3Off+10:], packet.Checksum(f[l3Off:l3Off+hl]))
}

// model is the cache's content and match, as the test set them.
type model struct {
	flows  map[dataplane.FlowKey]uint8
	match  cluster.Match
	inst   []dataplane.FlowKey // the original directions installed
	direct []dataplane.FlowKey // one-direction entries deleted behind the cache's back
}

// expectation is the reference decision for a frame.
type expectation struct {
	verdict uint32
	slow    int // Slow reason, or -1 (decided in XDP, or not counted)
	stat    int // StatToXSK, StatPassed, or -1 (decided in XDP)
	bucket  uint8
	egress  *net.Interface
	dmac    net.HardwareAddr
	iplen   int
	flen    int  // the frame's length: what the byte counters count
	fast    bool // decided by the fast path (drop or forward)
	hit     bool // found in the cache: its counters move
	decode  packet.Reason
	p       packet.Parsed
}

// l2 mirrors the program's xc_parse_l2: cluster MAC and IP after at most
// two tags (802.1Q or 802.1ad, then 802.1Q).
func l2(f []byte) bool {
	if len(f) < 14 || !bytes.Equal(f[:6], clusterMAC) {
		return false
	}
	isIP := func(et uint16) bool { return et == packet.EtherTypeIPv4 || et == packet.EtherTypeIPv6 }
	et := binary.BigEndian.Uint16(f[12:])
	if isIP(et) {
		return true
	}
	if et != packet.EtherTypeVLAN && et != packet.EtherTypeQinQ || len(f) < 18 {
		return false
	}
	et = binary.BigEndian.Uint16(f[16:])
	if isIP(et) {
		return true
	}
	if et != packet.EtherTypeVLAN || len(f) < 22 {
		return false
	}
	return isIP(binary.BigEndian.Uint16(f[20:]))
}

// l3Reasons are Decode's reasons found before the transport header.
var l3Reasons = map[packet.Reason]bool{packet.TruncIPv4: true, packet.BadIPv4Header: true, packet.BadIPv4Length: true,
	packet.BadIPv4Checksum: true, packet.TruncIPv6: true, packet.BadIPv6Header: true, packet.BadIPv6Length: true,
	packet.TruncExtHeader: true, packet.TooManyExtHeaders: true}

// expect is the reference: packet.Decode, the fast path's rules, the
// model's cache and match, and the topology's routes.
func (e *fastEnv) expect(f []byte, m *model) (x expectation) {
	x.slow, x.stat, x.verdict = -1, -1, xdpPass
	if !l2(f) {
		x.stat = StatPassed
		return x
	}
	x.stat = StatToXSK
	x.decode = x.p.Decode(f)
	p := &x.p
	untagged := p.VLANs == 0 && (p.EtherType == packet.EtherTypeIPv4 || p.EtherType == packet.EtherTypeIPv6) && len(f) >= 14 &&
		binary.BigEndian.Uint16(f[12:]) == p.EtherType
	switch {
	case !untagged:
		x.slow = SlowNotFast
		return x
	case x.decode != packet.OK:
		x.slow = SlowNotFast
		// The program checks for fragments before it reads the transport
		// header: a first fragment with a bad one counts as a fragment.
		if !l3Reasons[x.decode] && p.EtherType == packet.EtherTypeIPv4 && binary.BigEndian.Uint16(f[l3Off+6:])&0x3fff != 0 {
			x.slow = SlowFragment
		}
		return x
	case p.Family == packet.IPv4 && p.Fragment:
		x.slow = SlowFragment
		return x
	}
	switch p.Proto {
	case packet.ProtoTCP, packet.ProtoUDP, packet.ProtoUDPLite, packet.ProtoSCTP, packet.ProtoDCCP:
	default:
		x.slow = SlowNotFast
		return x
	}
	if p.Family == packet.IPv6 && p.L4Off != p.L3Off+40 { // an extension header
		x.slow = SlowNotFast
		return x
	}
	if p.Proto == packet.ProtoTCP {
		fl := p.TCPFlags
		if fl&(packet.TCPSyn|packet.TCPFin|packet.TCPRst) != 0 || fl&packet.TCPAck == 0 {
			x.slow = SlowTCPControl
			return x
		}
	}
	x.iplen = int(p.End - p.L3Off)
	x.flen = len(f)
	bucket, ok := m.flows[dataplane.KeyOf(&p.Tuple)]
	if !ok {
		x.slow = SlowMiss
		return x
	}
	x.bucket, x.hit = bucket, true
	x.stat = -1
	if !m.match.OwnsNode(int(bucket)) {
		x.verdict, x.fast = xdpDrop, true
		return x
	}
	x.stat = StatToXSK
	if p.TTL <= 1 {
		x.slow = SlowTTL
		return x
	}
	var d *dest
	dst := netip.AddrFrom16(p.Dst)
	if p.Family == packet.IPv4 {
		dst = netip.AddrFrom4([4]byte(p.Dst[:4]))
	}
	for i := range e.dests {
		if e.dests[i].addr == dst {
			d = &e.dests[i]
		}
	}
	if d == nil {
		panic(fmt.Sprintf("destination %v not in the topology", dst))
	}
	if d.egress != "" && x.iplen > e.mtu[d.egress] {
		x.slow = SlowFIBFragNeeded
		return x
	}
	if d.outcome != routeOK {
		x.slow = d.outcome
		return x
	}
	x.stat = -1
	x.verdict, x.fast, x.egress, x.dmac = xdpRedirect, true, e.ifs[d.egress], d.dmac
	return x
}

// checkRewrite checks a forwarded frame: MACs from the route, TTL or hop
// limit one less, a valid IPv4 header checksum, Ethernet padding gone (as
// the slow path sends it), every other byte as it came.
func checkRewrite(in, out []byte, x *expectation) error {
	in = in[:l3Off+x.iplen]
	if len(out) != len(in) {
		return fmt.Errorf("length %d, want %d (the frame without its padding)", len(out), len(in))
	}
	if !bytes.Equal(out[0:6], x.dmac) || !bytes.Equal(out[6:12], x.egress.HardwareAddr) {
		return fmt.Errorf("MACs %x > %x, want %x > %x", out[6:12], out[0:6], x.egress.HardwareAddr, x.dmac)
	}
	want := bytes.Clone(in)
	copy(want[0:6], x.dmac)
	copy(want[6:12], x.egress.HardwareAddr)
	if x.p.Family == packet.IPv4 {
		want[l3Off+8]--
		hl := int(in[l3Off]&0x0f) * 4
		if c := packet.Checksum(out[l3Off : l3Off+hl]); c != 0 {
			return fmt.Errorf("IPv4 header checksum does not verify (%#04x)", c)
		}
		copy(want[l3Off+10:l3Off+12], out[l3Off+10:l3Off+12])
	} else {
		want[l3Off+7]--
	}
	if !bytes.Equal(out, want) {
		return fmt.Errorf("frame\n%x\nwant\n%x", out, want)
	}
	return nil
}

// counters are a program's counters, read together.
type counters struct {
	stats [NumStats]uint64
	fast  FastStats
}

func (e *fastEnv) counters(t testing.TB) counters {
	t.Helper()
	var c counters
	var err error
	if e.tc != nil {
		// The tc program's counters in the XDP program's terms: a frame
		// left to the slow path's sockets is one sent to a queue without
		// an AF_XDP socket (the tests register none).
		st, err := e.tc.Stats()
		if err != nil {
			t.Fatal(err)
		}
		c.stats[StatToXSK], c.stats[StatNoSocket], c.stats[StatPassed] = st[TCStatToSocket], st[TCStatToSocket], st[TCStatPassed]
		if c.fast, err = e.tc.FastStats(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c.stats, err = e.prog.Stats(); err != nil {
		t.Fatal(err)
	}
	if c.fast, err = e.prog.FastStats(); err != nil {
		t.Fatal(err)
	}
	return c
}

// checkCounters checks that exactly the counters of x moved from a to b.
func checkCounters(a, b counters, x *expectation) error {
	want := a
	switch {
	case x.verdict == xdpDrop:
		want.fast.Foreign++
		want.fast.ForeignBytes += uint64(x.flen)
		if int(x.bucket) < cluster.MaxNodes {
			want.fast.Owner[x.bucket]++
		}
	case x.verdict == xdpRedirect:
		want.fast.Forwarded++
		want.fast.ForwardedBytes += uint64(x.flen)
		if int(x.bucket) < cluster.MaxNodes {
			want.fast.Owner[x.bucket]++
		}
	default:
		want.stats[x.stat]++
		if x.stat == StatToXSK {
			want.stats[StatNoSocket]++
		}
		if x.slow >= 0 {
			want.fast.Slow[x.slow]++
		}
	}
	if b != want {
		return fmt.Errorf("counters moved from %+v to %+v, want %+v", a, b, want)
	}
	return nil
}

// gen generates random frames: mostly of a pool of connections between the
// topology's addresses, valid or mangled, and ICMP, other protocols,
// extension headers, fragments, tags and truncations.
type gen struct {
	r      *rand.Rand
	v4, v6 []netip.Addr
	flows  []flow
}

func newGen(r *rand.Rand, e *fastEnv) *gen {
	g := &gen{r: r}
	for _, d := range e.dests {
		if d.addr.Is4() {
			g.v4 = append(g.v4, d.addr)
		} else {
			g.v6 = append(g.v6, d.addr)
		}
	}
	protos := []uint8{packet.ProtoTCP, packet.ProtoTCP, packet.ProtoUDP, packet.ProtoUDP, packet.ProtoUDPLite, packet.ProtoSCTP, packet.ProtoDCCP}
	seen := map[dataplane.FlowKey]bool{}
	for len(g.flows) < 400 {
		fl := flow{v6: r.IntN(2) == 0, proto: protos[r.IntN(len(protos))], sport: uint16(1 + r.IntN(65535)), dport: uint16(1 + r.IntN(65535))}
		pool := g.v4
		if fl.v6 {
			pool = g.v6
		}
		fl.a, fl.b = pool[r.IntN(len(pool))], pool[r.IntN(len(pool))]
		k := g.key(fl)
		if fl.a == fl.b || seen[k] || seen[k.Reverse()] {
			continue
		}
		seen[k], seen[k.Reverse()] = true, true
		g.flows = append(g.flows, fl)
	}
	return g
}

func (g *gen) key(fl flow) dataplane.FlowKey {
	t := packet.Tuple{Proto: fl.proto, SrcPort: fl.sport, DstPort: fl.dport, Family: packet.IPv4}
	if fl.v6 {
		t.Family = packet.IPv6
		t.Src, t.Dst = fl.a.As16(), fl.b.As16()
	} else {
		a, b := fl.a.As4(), fl.b.As4()
		copy(t.Src[:], a[:])
		copy(t.Dst[:], b[:])
	}
	return dataplane.KeyOf(&t)
}

var validTCPFlags = []uint8{packet.TCPAck, packet.TCPAck | packet.TCPPsh, packet.TCPAck | packet.TCPUrg, packet.TCPAck | packet.TCPPsh | packet.TCPEce | packet.TCPCwr}

func (g *gen) spec() frameSpec {
	r := g.r
	s := frameSpec{dstMAC: clusterMAC, ttl: 64, udpLen: -1}
	if r.IntN(25) == 0 {
		s.dstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, byte(r.IntN(256))}
	}
	switch r.IntN(100) {
	case 0, 1, 2, 3, 4, 5, 6, 7:
		s.tags = []uint16{packet.EtherTypeVLAN}
	case 8, 9, 10:
		s.tags = []uint16{packet.EtherTypeQinQ, packet.EtherTypeVLAN}
	case 11:
		s.tags = []uint16{packet.EtherTypeQinQ2}
	}
	if r.IntN(100) < 85 {
		fl := g.flows[r.IntN(len(g.flows))]
		s.v6, s.proto, s.src, s.dst, s.sport, s.dport = fl.v6, fl.proto, fl.a, fl.b, fl.sport, fl.dport
		if r.IntN(2) == 0 {
			s.src, s.dst, s.sport, s.dport = s.dst, s.src, s.dport, s.sport
		}
	} else {
		s.v6 = r.IntN(2) == 0
		pool := g.v4
		if s.v6 {
			pool = g.v6
		}
		s.src, s.dst = pool[r.IntN(len(pool))], pool[r.IntN(len(pool))]
		s.sport, s.dport = uint16(r.IntN(65536)), uint16(r.IntN(65536))
		switch r.IntN(4) {
		case 0, 1:
			s.proto = packet.ProtoICMP
			types := []uint8{0, 8, 3, 11, 5}
			if s.v6 {
				s.proto = packet.ProtoICMPv6
				types = []uint8{128, 129, 1, 3, 2}
			}
			s.icmpType = types[r.IntN(len(types))]
		case 2:
			s.proto = []uint8{47, 50, 4, 41, 255}[r.IntN(5)]
		case 3:
			s.proto = []uint8{packet.ProtoTCP, packet.ProtoUDP, packet.ProtoSCTP}[r.IntN(3)]
		}
	}
	if s.proto == packet.ProtoTCP {
		if r.IntN(100) < 70 {
			s.tcpFlags = validTCPFlags[r.IntN(len(validTCPFlags))]
		} else {
			s.tcpFlags = uint8(r.IntN(256))
		}
		if r.IntN(3) == 0 {
			s.tcpOpts = 1 + r.IntN(10)
		}
	}
	if r.IntN(100) < 15 {
		s.ttl = []uint8{0, 1, 2, 255}[r.IntN(4)]
	}
	if r.IntN(5) == 0 {
		s.tos = uint8(r.IntN(256))
	}
	s.payload = r.IntN(100)
	if r.IntN(10) < 3 {
		s.payload = r.IntN(1480)
	}
	if s.v6 {
		if r.IntN(20) == 0 {
			s.ext = []uint8{[]uint8{packet.ProtoHopByHop, packet.ProtoDstOpts, packet.ProtoFragment, packet.ProtoRouting}[r.IntN(4)]}
			if s.ext[0] == packet.ProtoFragment && r.IntN(2) == 0 {
				s.mf, s.fragOff = r.IntN(2) == 0, uint16(r.IntN(3))
			}
		}
	} else {
		if r.IntN(10) == 0 {
			s.ipOpts = 1 + r.IntN(10)
		}
		if r.IntN(20) == 0 {
			s.mf, s.fragOff = r.IntN(2) == 0, uint16(r.IntN(3))
		}
	}
	if r.IntN(20) == 0 {
		s.udpLen = r.IntN(s.payload + 30)
	}
	return s
}

// mangle damages one frame in five: cut, a flipped header byte, a lying
// length or header length (with the IPv4 checksum fixed or not), padding.
func (g *gen) mangle(f []byte) []byte {
	r := g.r
	if r.IntN(5) != 0 {
		return f
	}
	fix := r.IntN(2) == 0
	switch r.IntN(6) {
	case 0:
		f = f[:14+r.IntN(len(f)-14)] // BPF_PROG_TEST_RUN needs an Ethernet header
	case 1:
		i := 12 + r.IntN(min(len(f), 80)-12)
		f[i] ^= byte(1 + r.IntN(255))
	case 2:
		if len(f) >= l3Off+4 {
			binary.BigEndian.PutUint16(f[l3Off+2:], uint16(r.IntN(len(f)+20)))
		}
	case 3:
		if len(f) >= l3Off+6 {
			binary.BigEndian.PutUint16(f[l3Off+4:], uint16(r.IntN(len(f)+20)))
		}
	case 4:
		if len(f) > l3Off {
			f[l3Off] = f[l3Off]&0xf0 | byte(r.IntN(16))
		}
	case 5:
		for range 1 + r.IntN(40) {
			f = append(f, byte(r.Uint32()))
		}
		fix = false
	}
	if fix {
		fixIPv4Checksum(f)
	}
	return f
}

// reshuffle sets a random cache state: a random subset of the pool's
// connections installed with random buckets, a few with one direction
// gone (as an LRU eviction leaves them), and a random match.
func (e *fastEnv) reshuffle(t testing.TB, g *gen, m *model) {
	t.Helper()
	r := g.r
	if err := e.fc.Remove(m.inst); err != nil {
		t.Fatalf("remove: %v", err)
	}
	for _, k := range m.direct {
		e.fc.flows.Delete(&k)
	}
	m.inst, m.direct = m.inst[:0], m.direct[:0]
	clear(m.flows)
	var buckets []uint8
	for _, fl := range g.flows {
		if r.IntN(10) < 6 {
			k := g.key(fl)
			b := uint8(r.IntN(cluster.MaxNodes))
			if r.IntN(50) == 0 {
				b = uint8(cluster.MaxNodes + r.IntN(256-cluster.MaxNodes)) // not a node: owned only inverted
			}
			m.inst = append(m.inst, k)
			buckets = append(buckets, b)
			m.flows[k], m.flows[k.Reverse()] = b, b
		}
	}
	if err := e.fc.Install(m.inst, buckets); err != nil {
		t.Fatalf("install: %v", err)
	}
	for _, k := range m.inst {
		if r.IntN(20) == 0 {
			if r.IntN(2) == 0 {
				k = k.Reverse()
			}
			if err := e.fc.flows.Delete(&k); err != nil {
				t.Fatalf("delete one direction: %v", err)
			}
			delete(m.flows, k)
		}
	}
	m.match = cluster.Match{NodeMask: r.Uint32(), Invert: r.IntN(2) == 0}
	switch r.IntN(5) {
	case 0:
		m.match.NodeMask = 1 << r.IntN(32)
	case 1:
		m.match.NodeMask = 0xffffffff
	}
	if err := e.fc.SetMatch(m.match.NodeMask, m.match.Invert); err != nil {
		t.Fatal(err)
	}
}

// TestFastPathMatchesSlowPath runs the program with BPF_PROG_TEST_RUN on
// random frames (valid and mangled; IPv4 and IPv6; TCP with random flags,
// UDP, UDP-Lite, SCTP, DCCP, ICMP, other protocols; fragments, extension
// headers, VLAN tags, truncations, padding) and random cache states and
// matches, against a reference in Go: packet.Decode, the fast path's rules,
// cluster ownership of the cached bucket and the namespace's routes. Every
// verdict must match, forwarded frames must carry the route's MACs, one
// less TTL or hop limit and a valid checksum, with nothing else changed,
// and every other frame must leave unchanged. A sample of frames also
// checks the counters, by reason, and the cache entry's.
//
// The tc program (TCProgram, the same C for the raw-socket backend) runs
// the same frames against the same reference.
func TestFastPathMatchesSlowPath(t *testing.T) {
	for _, p := range fastPrograms {
		t.Run(p.name, func(t *testing.T) { testFastPathMatchesSlowPath(t, p.env(t)) })
	}
}

func testFastPathMatchesSlowPath(t *testing.T, e *fastEnv) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 15))
	g := newGen(r, e)
	m := &model{flows: map[dataplane.FlowKey]uint8{}}
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	out := make([]byte, 4096)
	verdicts := map[uint32]int{}
	reasons := map[int]int{}
	var malformed, failures, refused int
	for i := range n {
		if i%500 == 0 {
			e.reshuffle(t, g, m)
		}
		s := g.spec()
		f := g.mangle(s.build(r))
		if e.tc != nil && tcRefused(f) {
			refused++
			continue
		}
		x := e.expect(f, m)
		ingress := []string{"d0", "d1"}[r.IntN(2)]
		sample := i%40 == 0
		var before counters
		var vBefore flowValue
		var key dataplane.FlowKey
		if sample {
			before = e.counters(t)
			if x.hit {
				key = dataplane.KeyOf(&x.p.Tuple)
				if err := e.fc.flows.Lookup(&key, &vBefore); err != nil {
					t.Fatalf("frame %d: cached key not in the map: %v", i, err)
				}
			}
		}
		in := bytes.Clone(f)
		runFrom := clockNow(t, unix.CLOCK_MONOTONIC_COARSE)
		ret, got := e.run(t, f, ingress, out)
		runTo := clockNow(t, unix.CLOCK_MONOTONIC_COARSE)
		verdicts[ret]++
		if x.slow >= 0 {
			reasons[x.slow]++
		}
		fail := func(format string, args ...any) {
			failures++
			if failures <= 10 {
				t.Errorf("frame %d (decode %v, %d bytes, in on %s): %s\n%x", i, x.decode, len(in), ingress, fmt.Sprintf(format, args...), in)
			}
		}
		// Whatever the model says: frames Decode rejects, TCP control
		// segments, fragments and ICMP are the slow path's.
		p := &x.p
		if x.decode != packet.OK {
			malformed++
		}
		if ret != xdpPass && (x.decode != packet.OK || p.Fragment || p.Proto == packet.ProtoICMP || p.Proto == packet.ProtoICMPv6 ||
			p.Proto == packet.ProtoTCP && p.TCPFlags&(packet.TCPSyn|packet.TCPFin|packet.TCPRst) != 0) {
			fail("verdict %d for a frame the slow path must see", ret)
		}
		if ret != x.verdict {
			fail("verdict %d, want %d (slow reason %d)", ret, x.verdict, x.slow)
			continue
		}
		if ret == xdpRedirect {
			if err := checkRewrite(in, got, &x); err != nil {
				fail("forwarded: %v", err)
			}
		} else if !bytes.Equal(got, in) {
			fail("verdict %d changed the frame:\n%x", ret, got)
		}
		if sample {
			if err := checkCounters(before, e.counters(t), &x); err != nil {
				fail("%v", err)
			}
			if x.hit {
				var v flowValue
				if err := e.fc.flows.Lookup(&key, &v); err != nil {
					t.Fatal(err)
				}
				// The program stamps the kernel's coarse monotonic clock
				// (bpf_ktime_get_coarse_ns), read here around the run.
				if v.Packets != vBefore.Packets+1 || v.Bytes != vBefore.Bytes+uint64(x.iplen) || v.LastSeen < runFrom || v.LastSeen > runTo {
					fail("cache entry %+v -> %+v, want one more packet of %d bytes, seen within [%d, %d] (CLOCK_MONOTONIC_COARSE)", vBefore, v, x.iplen, runFrom, runTo)
				}
			}
		}
	}
	t.Logf("%d frames: verdicts %v (1 drop, 2 pass, 4 redirect), %d malformed, slow reasons %v", n, verdicts, malformed, reasons)
	if refused > n/100 {
		t.Errorf("BPF_PROG_TEST_RUN refused %d of %d frames (shorter than their IP header): too many to call the run complete", refused, n)
	} else if refused > 0 {
		t.Logf("%d frames shorter than their IP header not run (BPF_PROG_TEST_RUN refuses them for tc)", refused)
	}
	if failures > 0 {
		t.Fatalf("%d of %d frames differ from the reference", failures, n)
	}
	// The generator must have reached every decision.
	if verdicts[xdpRedirect] < n/100 || verdicts[xdpDrop] < n/100 || malformed < n/100 {
		t.Errorf("too few forwarded, dropped or malformed frames: %v, %d malformed", verdicts, malformed)
	}
	for _, s := range []int{SlowMiss, SlowTCPControl, SlowFragment, SlowNotFast, SlowTTL, SlowNoEgress, SlowFIBBlackhole,
		SlowFIBUnreachable, SlowFIBProhibit, SlowFIBNotForwarded, SlowFIBNoNeighbour, SlowFIBFragNeeded} {
		if reasons[s] == 0 {
			t.Errorf("no frame took the slow path for %s", SlowReasonNames[s])
		}
	}
}

// clockNow reads clock id in ns: CLOCK_MONOTONIC_COARSE is the clock of
// the program's bpf_ktime_get_coarse_ns, CLOCK_MONOTONIC that of its
// fallback, bpf_ktime_get_ns.
func clockNow(t testing.TB, id int32) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}
