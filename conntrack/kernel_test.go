package conntrack_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/packet"
)

// The kernel oracle for connection states: frames written to one end of a
// veth pair arrive at the other end inside a private namespace, are
// forwarded (ip_forward=1) out of a second veth into a sink namespace that
// drops them, so no local socket ever answers, and pass mangle PREROUTING rules that count
// each --ctstate. After every frame the counters are read and zeroed, so
// each frame gets the kernel's verdict; our tracker classifies the same
// frames and must agree on every one.
//
// nf_conntrack_tcp_loose=0, as the cluster match requires, and
// nf_conntrack_tcp_be_liberal=1, because our tracker deliberately checks
// no sequence-number windows.

var states = []string{"INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED"}

type kernelCT struct {
	t   *testing.T
	ns  *netns.NS
	in  *nstest.Injector
	src net.HardwareAddr
	dst net.HardwareAddr
}

// newKernelCT builds the oracle; sysctls ("key=value") are set in its
// namespace once conntrack is active there (e.g. short timeouts).
func newKernelCT(t *testing.T, sysctls ...string) *kernelCT {
	nstest.Require(t)
	for _, tool := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install iptables (the README's test command does): %v", tool, err)
		}
	}
	ns := nstest.New(t, "xc-ct")
	sink := nstest.New(t, "xc-ct-sink") // where forwarded frames go to die
	k := &kernelCT{t: t, ns: ns}
	cmds := [][]string{
		{"ip", "link", "add", "vs", "type", "veth", "peer", "name", "vr"},
		{"ip", "link", "add", "fw0", "type", "veth", "peer", "name", "fw1", "netns", sink.Name},
		{"sysctl", "-qw", "net.ipv6.conf.vs.disable_ipv6=1"},
		{"ip", "link", "set", "vs", "up"},
		{"ip", "link", "set", "vr", "up"},
		{"ip", "link", "set", "fw0", "up"},
		{"ip", "addr", "add", "198.18.255.1/30", "dev", "fw0"},
		{"ip", "neigh", "add", "198.18.255.2", "lladdr", "02:00:00:00:00:02", "dev", "fw0", "nud", "permanent"},
		{"ip", "route", "add", "default", "via", "198.18.255.2", "dev", "fw0"},
		{"ip", "-6", "neigh", "add", "fe80::2", "lladdr", "02:00:00:00:00:02", "dev", "fw0", "nud", "permanent"},
		{"ip", "-6", "route", "add", "default", "via", "fe80::2", "dev", "fw0"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"},
		{"sysctl", "-qw", "net.ipv4.conf.vr.rp_filter=0"},
	}
	for _, c := range cmds {
		nstest.Run(t, ns, c[0], c[1:]...)
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, st := range states {
			nstest.Run(t, ns, tool, "-t", "mangle", "-A", "PREROUTING", "-i", "vr", "-m", "conntrack", "--ctstate", st)
		}
	}
	// The conntrack sysctls exist once conntrack is active in the namespace.
	nstest.Run(t, ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0")
	nstest.Run(t, ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1")
	for _, kv := range sysctls {
		nstest.Run(t, ns, "sysctl", "-qw", kv)
	}
	k.src, k.dst = nstest.MAC(t, ns, "vs"), nstest.MAC(t, ns, "vr")
	k.in = nstest.NewInjector(t, ns, "vs")
	return k
}

// verdict sends one frame and returns the ctstate the kernel counted.
func (k *kernelCT) verdict(frame []byte, v6 bool) string {
	k.in.Send(frame)
	tool := "iptables"
	if v6 {
		tool = "ip6tables"
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		out := nstest.Run(k.t, k.ns, tool, "-t", "mangle", "-L", "PREROUTING", "-v", "-x", "-n", "-Z")
		got := ""
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || f[len(f)-2] != "ctstate" {
				continue
			}
			if n, _ := strconv.Atoi(f[0]); n > 0 {
				if got != "" || n > 1 {
					k.t.Fatalf("more than one count for one frame:\n%s", out)
				}
				got = f[len(f)-1]
			}
		}
		if got != "" || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Hosts: client, server, and a router that reports errors.
var (
	c4, s4, r4 = net.IP{198, 51, 100, 7}, net.IP{203, 0, 113, 9}, net.IP{198, 18, 0, 254}
	c6, s6, r6 = net.ParseIP("2001:db8:1::7"), net.ParseIP("2001:db8:2::9"), net.ParseIP("2001:db8:ff::1")
)

type hostSet struct{ c, s, r net.IP }

func hostsFor(v6 bool) hostSet {
	if v6 {
		return hostSet{c6, s6, r6}
	}
	return hostSet{c4, s4, r4}
}

func ipl(v6 bool, src, dst net.IP, proto layers.IPProtocol) gopacket.NetworkLayer {
	if v6 {
		return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src, DstIP: dst}
	}
	return &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src, DstIP: dst}
}

func (k *kernelCT) frame(v6 bool, ip gopacket.NetworkLayer, l4 ...gopacket.SerializableLayer) []byte {
	eth := &layers.Ethernet{SrcMAC: k.src, DstMAC: k.dst, EthernetType: layers.EthernetTypeIPv4}
	if v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
	}
	for _, l := range l4 {
		switch l := l.(type) {
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.ICMPv6:
			l.SetNetworkLayerForChecksum(ip)
		}
	}
	buf := gopacket.NewSerializeBuffer()
	all := append([]gopacket.SerializableLayer{eth, ip.(gopacket.SerializableLayer)}, l4...)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, all...); err != nil {
		k.t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// pk describes one packet of a scenario.
type pk struct {
	from  string // "c" or "s" (or "r" for errors)
	kind  string // tcp udp echo echoreply rtadv ns proto253 error
	flags string // TCP: S SA A PA FA R RA ...
	seq   uint32
	ack   uint32
	about int // kind error: index of the earlier packet the error reports on
	to    string
	wait  time.Duration // idle time before this packet
	// ours is our state where it deliberately differs from the kernel's
	// (a SYN/ACK whose SYN was not seen is recorded: pickUpSynAck).
	ours string
}

type scenario struct {
	name  string
	v6    bool
	sport uint16
	pkts  []pk
}

func tcpFlags(s string) *layers.TCP {
	t := &layers.TCP{Window: 64240}
	for _, ch := range s {
		switch ch {
		case 'S':
			t.SYN = true
		case 'A':
			t.ACK = true
		case 'F':
			t.FIN = true
		case 'R':
			t.RST = true
		case 'P':
			t.PSH = true
		}
	}
	return t
}

// build returns the frame for packet i of a scenario.
func (k *kernelCT) build(sc scenario, i int) []byte {
	p := sc.pkts[i]
	h := hostsFor(sc.v6)
	src, dst := h.c, h.s
	sport, dport := sc.sport, uint16(80)
	if p.from == "s" {
		src, dst, sport, dport = h.s, h.c, dport, sport
	}
	icmpProto := layers.IPProtocolICMPv4
	if sc.v6 {
		icmpProto = layers.IPProtocolICMPv6
	}
	echo := func(typ4, typ6 uint8) []byte {
		if sc.v6 {
			return k.frame(true, ipl(true, src, dst, icmpProto), &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ6, 0)},
				&layers.ICMPv6Echo{Identifier: sc.sport, SeqNumber: 1}, gopacket.Payload("ping"))
		}
		return k.frame(false, ipl(false, src, dst, icmpProto), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ4, 0), Id: sc.sport, Seq: 1}, gopacket.Payload("ping"))
	}
	switch p.kind {
	case "tcp":
		t := tcpFlags(p.flags)
		t.SrcPort, t.DstPort, t.Seq, t.Ack = layers.TCPPort(sport), layers.TCPPort(dport), p.seq, p.ack
		var pl []gopacket.SerializableLayer
		if strings.Contains(p.flags, "P") {
			pl = append(pl, gopacket.Payload("0123456789"))
		}
		return k.frame(sc.v6, ipl(sc.v6, src, dst, layers.IPProtocolTCP), append([]gopacket.SerializableLayer{t}, pl...)...)
	case "udp":
		return k.frame(sc.v6, ipl(sc.v6, src, dst, layers.IPProtocolUDP), &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}, gopacket.Payload("data"))
	case "echo":
		return echo(8, 128)
	case "echoreply":
		return echo(0, 129)
	case "rtadv":
		return k.frame(false, ipl(false, src, dst, icmpProto), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(9, 0)}, gopacket.Payload("12345678"))
	case "ns":
		target := net.IP(dst).To16()
		return k.frame(true, ipl(true, src, dst, icmpProto), &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(135, 0)},
			gopacket.Payload(append([]byte{0, 0, 0, 0}, target...)))
	case "proto253":
		return k.frame(sc.v6, ipl(sc.v6, src, dst, 253), gopacket.Payload("experimental"))
	case "error":
		inner := k.build(sc, p.about)[14:]
		to := h.c
		if p.to == "s" {
			to = h.s
		}
		if sc.v6 {
			emb := append([]byte{0, 0, 0, 0}, inner[:min(len(inner), 40+8+8)]...)
			return k.frame(true, ipl(true, h.r, to, icmpProto), &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}, gopacket.Payload(append([]byte{0, 0, 5, 0xdc}, emb[4:]...)))
		}
		ihl := int(inner[0]&0xf) * 4
		return k.frame(false, ipl(false, h.r, to, icmpProto), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4)}, gopacket.Payload(inner[:ihl+8]))
	}
	panic("unknown kind " + p.kind)
}

func scenarios() []scenario {
	handshake := []pk{
		{from: "c", kind: "tcp", flags: "S", seq: 1000},
		{from: "s", kind: "tcp", flags: "SA", seq: 5000, ack: 1001},
		{from: "c", kind: "tcp", flags: "A", seq: 1001, ack: 5001},
	}
	hs := func(more ...pk) []pk { return append(append([]pk(nil), handshake...), more...) }
	var out []scenario
	for _, v6 := range []bool{false, true} {
		port := uint16(41000)
		if v6 {
			port = 42000
		}
		add := func(name string, pkts []pk) {
			port++
			out = append(out, scenario{name: fmt.Sprintf("%s/v6=%v", name, v6), v6: v6, sport: port, pkts: pkts})
		}
		add("handshake, data, FIN both ways, reuse from TIME_WAIT", hs(
			pk{from: "c", kind: "tcp", flags: "PA", seq: 1001, ack: 5001},
			pk{from: "s", kind: "tcp", flags: "A", seq: 5001, ack: 1011},
			pk{from: "c", kind: "tcp", flags: "FA", seq: 1011, ack: 5001},
			pk{from: "s", kind: "tcp", flags: "A", seq: 5001, ack: 1012},
			pk{from: "s", kind: "tcp", flags: "FA", seq: 5001, ack: 1012},
			pk{from: "c", kind: "tcp", flags: "A", seq: 1012, ack: 5002},
			pk{from: "c", kind: "tcp", flags: "S", seq: 90000},
			pk{from: "s", kind: "tcp", flags: "SA", seq: 70000, ack: 90001}))
		add("mid-stream ACK and data", []pk{
			{from: "c", kind: "tcp", flags: "A", seq: 1, ack: 1},
			{from: "s", kind: "tcp", flags: "PA", seq: 1, ack: 1}})
		add("SYN/ACK without SYN", []pk{{from: "s", kind: "tcp", flags: "SA", seq: 5000, ack: 1001}})
		// A non-owner may see the SYN/ACK before the SYN. The kernel
		// records nothing for it, so its SYN_SENT then refuses the
		// client's ACK; we record the connection from the SYN/ACK
		// (pickUpSynAck): the SYN is its retransmission, and the ACK
		// and data are ESTABLISHED.
		add("SYN/ACK before the SYN", []pk{
			{from: "s", kind: "tcp", flags: "SA", seq: 5000, ack: 1001},
			{from: "c", kind: "tcp", flags: "S", seq: 1000, ours: "ESTABLISHED"},
			{from: "c", kind: "tcp", flags: "A", seq: 1001, ack: 5001, ours: "ESTABLISHED"},
			{from: "s", kind: "tcp", flags: "PA", seq: 5001, ack: 1001, ours: "ESTABLISHED"}})
		add("retransmitted SYN", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "s", kind: "tcp", flags: "SA", seq: 5000, ack: 1001},
			{from: "c", kind: "tcp", flags: "A", seq: 1001, ack: 5001}})
		add("RST from server, then client SYN", hs(
			pk{from: "s", kind: "tcp", flags: "R", seq: 5001},
			pk{from: "c", kind: "tcp", flags: "S", seq: 1000}))
		add("RST answering SYN", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "s", kind: "tcp", flags: "RA", seq: 0, ack: 1001}})
		// The kernel deletes an unreplied connection on a RST: the
		// second RST (a public capture's frame 575) belongs to nothing.
		add("SYN, RST/ACK, second RST", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "s", kind: "tcp", flags: "RA", seq: 0, ack: 1001},
			{from: "s", kind: "tcp", flags: "RA", seq: 0, ack: 1001}})
		add("SYN, RST, retried SYN on the same port", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "s", kind: "tcp", flags: "RA", seq: 0, ack: 1001},
			{from: "c", kind: "tcp", flags: "S", seq: 3000},
			{from: "s", kind: "tcp", flags: "SA", seq: 7000, ack: 3001},
			{from: "c", kind: "tcp", flags: "A", seq: 3001, ack: 7001},
			{from: "c", kind: "tcp", flags: "PA", seq: 3001, ack: 7001},
			{from: "s", kind: "tcp", flags: "PA", seq: 7001, ack: 3011}})
		add("client RST before any reply, twice", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "c", kind: "tcp", flags: "R", seq: 1001},
			{from: "c", kind: "tcp", flags: "R", seq: 1001},
			{from: "s", kind: "tcp", flags: "SA", seq: 5000, ack: 1001}})
		add("RST answering the SYN/ACK, twice", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "s", kind: "tcp", flags: "SA", seq: 5000, ack: 1001},
			{from: "c", kind: "tcp", flags: "R", seq: 1001},
			{from: "c", kind: "tcp", flags: "R", seq: 1001},
			{from: "c", kind: "tcp", flags: "S", seq: 2000}})
		add("RST after a challenge ACK to the SYN", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "s", kind: "tcp", flags: "A", seq: 5000, ack: 77},
			{from: "c", kind: "tcp", flags: "R", seq: 77},
			{from: "c", kind: "tcp", flags: "S", seq: 1000}})
		// The server resets an established connection and the client
		// reconnects from the same port: the kernel ignores the SYN (the
		// RST came from the other side), then resynchronises on the
		// SYN/ACK that answers it.
		add("server RST, client reconnects from the same port", hs(
			pk{from: "s", kind: "tcp", flags: "R", seq: 5001},
			pk{from: "c", kind: "tcp", flags: "S", seq: 9000},
			pk{from: "s", kind: "tcp", flags: "SA", seq: 7000, ack: 9001},
			pk{from: "c", kind: "tcp", flags: "A", seq: 9001, ack: 7001},
			pk{from: "c", kind: "tcp", flags: "FA", seq: 9001, ack: 7001},
			pk{from: "s", kind: "tcp", flags: "FA", seq: 7001, ack: 9002},
			pk{from: "c", kind: "tcp", flags: "A", seq: 9002, ack: 7002},
			pk{from: "c", kind: "tcp", flags: "S", seq: 19000}))
		// The same with the ports of a connection closed by FINs: the
		// kernel ignores the SYN/ACK in TIME_WAIT, and the SYN reopens
		// the connection into SYN_SENT; we replace the closed
		// connection with the one the SYN/ACK answers.
		add("FIN close, then a new connection's SYN/ACK before its SYN", hs(
			pk{from: "c", kind: "tcp", flags: "FA", seq: 1001, ack: 5001},
			pk{from: "s", kind: "tcp", flags: "FA", seq: 5001, ack: 1002},
			pk{from: "c", kind: "tcp", flags: "A", seq: 1002, ack: 5002},
			pk{from: "s", kind: "tcp", flags: "SA", seq: 7000, ack: 9001},
			pk{from: "c", kind: "tcp", flags: "S", seq: 9000, ours: "ESTABLISHED"},
			pk{from: "c", kind: "tcp", flags: "A", seq: 9001, ack: 7001, ours: "ESTABLISHED"},
			pk{from: "s", kind: "tcp", flags: "PA", seq: 7001, ack: 9001}))
		add("SYN/ACK not answering the ignored SYN", hs(
			pk{from: "s", kind: "tcp", flags: "R", seq: 5001},
			pk{from: "c", kind: "tcp", flags: "S", seq: 9000},
			pk{from: "s", kind: "tcp", flags: "SA", seq: 7000, ack: 4242},
			pk{from: "c", kind: "tcp", flags: "A", seq: 9001, ack: 7001},
			pk{from: "c", kind: "tcp", flags: "S", seq: 9000}))
		add("SYN in FIN_WAIT, SYN/ACK answering it", hs(
			pk{from: "c", kind: "tcp", flags: "FA", seq: 1001, ack: 5001},
			pk{from: "c", kind: "tcp", flags: "S", seq: 9000},
			pk{from: "s", kind: "tcp", flags: "SA", seq: 7000, ack: 9001},
			pk{from: "c", kind: "tcp", flags: "A", seq: 9001, ack: 7001},
			pk{from: "s", kind: "tcp", flags: "FA", seq: 7001, ack: 9001},
			pk{from: "c", kind: "tcp", flags: "A", seq: 9001, ack: 7002},
			pk{from: "c", kind: "tcp", flags: "S", seq: 29000}))
		// RFC 5961: a SYN in LAST_ACK draws a challenge ACK, which must
		// not be taken for the ACK of the last FIN.
		add("challenge ACK to a SYN in LAST_ACK", hs(
			pk{from: "c", kind: "tcp", flags: "FA", seq: 1001, ack: 5001},
			pk{from: "s", kind: "tcp", flags: "FA", seq: 5001, ack: 1002},
			pk{from: "c", kind: "tcp", flags: "S", seq: 9000},
			pk{from: "s", kind: "tcp", flags: "A", seq: 5002, ack: 1002},
			pk{from: "c", kind: "tcp", flags: "S", seq: 9000},
			pk{from: "s", kind: "tcp", flags: "A", seq: 5002, ack: 1002},
			pk{from: "c", kind: "tcp", flags: "A", seq: 1002, ack: 5002},
			pk{from: "c", kind: "tcp", flags: "S", seq: 9000}))
		add("established, RST both ways", hs(
			pk{from: "s", kind: "tcp", flags: "R", seq: 5001},
			pk{from: "c", kind: "tcp", flags: "R", seq: 1001},
			pk{from: "s", kind: "tcp", flags: "R", seq: 5001}))
		add("client SYN/ACK after its SYN", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "c", kind: "tcp", flags: "SA", seq: 1000, ack: 1}})
		add("bad flags", []pk{
			{from: "c", kind: "tcp", flags: "SF", seq: 1000},
			{from: "c", kind: "tcp", flags: "", seq: 1000},
			{from: "c", kind: "tcp", flags: "F", seq: 1000}})
		add("UDP request, request, reply, request", []pk{
			{from: "c", kind: "udp"}, {from: "c", kind: "udp"}, {from: "s", kind: "udp"}, {from: "c", kind: "udp"}})
		add("UDP reply first", []pk{{from: "s", kind: "udp"}, {from: "c", kind: "udp"}})
		add("echo, reply, lone reply", []pk{
			{from: "c", kind: "echo"}, {from: "s", kind: "echoreply"}, {from: "c", kind: "echo"}})
		add("ICMP errors about a UDP flow", []pk{
			{from: "c", kind: "udp"},
			{from: "s", kind: "udp"},
			{from: "r", kind: "error", about: 0, to: "c"}, // about the client's datagram, to the client
			{from: "r", kind: "error", about: 1, to: "s"}, // about the server's datagram, to the server
			{from: "r", kind: "error", about: 0, to: "s"}, // to the wrong host
		})
		add("ICMP error about a TCP SYN", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "r", kind: "error", about: 0, to: "c"}})
		add("ICMP error about nothing tracked", []pk{
			{from: "c", kind: "udp"},
			{from: "r", kind: "error", about: 0, to: "c"}})
		add("generic protocol 253", []pk{
			{from: "c", kind: "proto253"}, {from: "c", kind: "proto253"}, {from: "s", kind: "proto253"}})
		if v6 {
			add("neighbour solicitation", []pk{{from: "c", kind: "ns"}})
		} else {
			add("router advertisement", []pk{{from: "c", kind: "rtadv"}})
		}
	}
	return out
}

func TestAgainstKernelConntrack(t *testing.T) {
	k := newKernelCT(t)
	tb, err := conntrack.NewTable(conntrack.Config{})
	if err != nil {
		t.Fatal(err)
	}
	n := k.compare(tb, scenarios())
	t.Logf("%d packets classified like the kernel", n)
}

// Timeouts short enough for a test, set alike in the kernel's namespace
// and in our table.
const (
	shortSynSent = 2 * time.Second
	shortClose   = 1 * time.Second
)

// timedScenarios need idle gaps measured against those timeouts.
func timedScenarios() []scenario {
	var out []scenario
	for _, v6 := range []bool{false, true} {
		port := uint16(43000)
		if v6 {
			port = 44000
		}
		add := func(name string, pkts []pk) {
			port++
			out = append(out, scenario{name: fmt.Sprintf("%s/v6=%v", name, v6), v6: v6, sport: port, pkts: pkts})
		}
		// A refused client retries on the same port and its connection
		// then idles longer than the CLOSE timeout: the kernel has it
		// ESTABLISHED (it deleted the refused one); a tracker that kept
		// the refused connection in CLOSE ignores the retry and loses
		// the connection with the CLOSE timeout.
		add("SYN, RST, retry, handshake, idle, data", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "s", kind: "tcp", flags: "RA", seq: 0, ack: 1001},
			{from: "c", kind: "tcp", flags: "S", seq: 3000, wait: 200 * time.Millisecond},
			{from: "s", kind: "tcp", flags: "SA", seq: 7000, ack: 3001},
			{from: "c", kind: "tcp", flags: "A", seq: 3001, ack: 7001},
			{from: "c", kind: "tcp", flags: "PA", seq: 3001, ack: 7001, wait: shortClose + 700*time.Millisecond},
			{from: "s", kind: "tcp", flags: "PA", seq: 7001, ack: 3011},
			{from: "c", kind: "tcp", flags: "A", seq: 3011, ack: 7011}})
		// The client reconnecting after the server's RST keeps its new
		// connection through an idle gap longer than the CLOSE timeout
		// (the kernel resynchronised on the SYN/ACK).
		add("server RST, reconnect from the same port, idle, data", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "s", kind: "tcp", flags: "SA", seq: 5000, ack: 1001},
			{from: "c", kind: "tcp", flags: "A", seq: 1001, ack: 5001},
			{from: "s", kind: "tcp", flags: "R", seq: 5001},
			{from: "c", kind: "tcp", flags: "S", seq: 9000},
			{from: "s", kind: "tcp", flags: "SA", seq: 7000, ack: 9001},
			{from: "c", kind: "tcp", flags: "A", seq: 9001, ack: 7001},
			{from: "c", kind: "tcp", flags: "PA", seq: 9001, ack: 7001, wait: shortClose + 700*time.Millisecond},
			{from: "s", kind: "tcp", flags: "A", seq: 7001, ack: 9011}})
		// A retransmitted SYN does not renew the SYN_SENT timeout: the
		// SYN/ACK arriving after the first SYN's timeout finds nothing.
		add("SYN, retransmitted SYN, late SYN/ACK", []pk{
			{from: "c", kind: "tcp", flags: "S", seq: 1000},
			{from: "c", kind: "tcp", flags: "S", seq: 1000, wait: shortSynSent / 2},
			{from: "s", kind: "tcp", flags: "SA", seq: 5000, ack: 1001, wait: shortSynSent/2 + 500*time.Millisecond},
			// The kernel recorded nothing for the SYN/ACK, so this SYN
			// is NEW there; we recorded the connection from the SYN/ACK
			// (pickUpSynAck), and the SYN is its retransmission.
			{from: "c", kind: "tcp", flags: "S", seq: 1000, ours: "ESTABLISHED"},
			{from: "s", kind: "tcp", flags: "SA", seq: 5000, ack: 1001}})
	}
	return out
}

// TestAgainstKernelConntrackTimeouts replays scenarios with idle gaps
// through a namespace whose TCP timeouts are shortened to match our
// table's, so that the gaps take seconds, not minutes (about 14 s in all).
func TestAgainstKernelConntrackTimeouts(t *testing.T) {
	k := newKernelCT(t,
		fmt.Sprintf("net.netfilter.nf_conntrack_tcp_timeout_syn_sent=%d", int(shortSynSent/time.Second)),
		fmt.Sprintf("net.netfilter.nf_conntrack_tcp_timeout_close=%d", int(shortClose/time.Second)))
	tb, err := conntrack.NewTable(conntrack.Config{Timeouts: conntrack.Timeouts{SynSent: shortSynSent, Close: shortClose}})
	if err != nil {
		t.Fatal(err)
	}
	n := k.compare(tb, timedScenarios())
	t.Logf("%d packets classified like the kernel", n)
}

// compare plays each scenario's frames to the kernel and to tb, one frame
// at a time, and fails on every frame whose states differ. It returns how
// many frames it compared.
func (k *kernelCT) compare(tb *conntrack.Table, scs []scenario) int {
	t := k.t
	checked := 0
	for _, sc := range scs {
		frames := make([][]byte, len(sc.pkts))
		for i := range sc.pkts {
			frames[i] = k.build(sc, i)
		}
		// "ICMP error about nothing tracked": the error is sent before
		// the datagram it reports on ever reaches the tracker.
		order := make([]int, len(frames))
		for i := range order {
			order[i] = i
		}
		if strings.HasPrefix(sc.name, "ICMP error about nothing tracked") {
			order = []int{1}
		}
		var log bytes.Buffer
		for _, i := range order {
			time.Sleep(sc.pkts[i].wait)
			kern := k.verdict(frames[i], sc.v6)
			var p packet.Parsed
			if r := p.Decode(frames[i]); r != packet.OK {
				t.Fatalf("%s packet %d: Decode = %v", sc.name, i, r)
			}
			ours := tb.Track(&p, time.Now().UnixNano()).State.String()
			fmt.Fprintf(&log, "  #%d %s %s %s (after %v): kernel %s, ours %s\n", i, sc.pkts[i].from, sc.pkts[i].kind, sc.pkts[i].flags, sc.pkts[i].wait, kern, ours)
			if want := sc.pkts[i].ours; want != "" {
				if ours != want {
					t.Errorf("%s: packet %d is %s, want %s (deliberately unlike the kernel)\n%s", sc.name, i, ours, want, log.String())
				}
			} else if kern != ours {
				t.Errorf("%s: packet %d disagrees\n%s", sc.name, i, log.String())
			}
			checked++
			if testing.Verbose() {
				t.Logf("%s #%d: %s", sc.name, i, kern)
			}
		}
	}
	return checked
}
