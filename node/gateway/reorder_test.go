package gateway_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/packet"
)

// reorderPort is the server port of the crafted connection: the client's
// and the server's kernels drop its packets (no socket answers them with a
// RST that would close the connection under test).
const reorderPort = 9999

// TestGatewayTakeoverAfterReorderedHandshake: node 1, which does not own
// a connection, sees the server's SYN/ACK before the client's SYN (as a
// node draining its back interface first can). It records the connection
// from the SYN/ACK, so that once the client's ACK has passed, the
// connection is ESTABLISHED in node 1's table with the client's bucket;
// when node 2, its owner, fails and node 1 takes node 2's share over, node
// 1 forwards the connection's data both ways. (Before, node 1 classed the
// SYN/ACK INVALID, the client's ACK INVALID in SYN_SENT, and dropped the
// connection after the takeover.) The frames are crafted and injected on
// the client's and the server's links, in that order, to every node.
func TestGatewayTakeoverAfterReorderedHandshake(t *testing.T) {
	nstest.Require(t)
	cl := nstest.Cluster(t, "xc-rord", netns.ClusterOptions{Nodes: 3, Clients4: 40, Clients6: 16})
	nodes := startNodes(t, cl)
	for _, tool := range []string{"iptables", "ip6tables"} {
		nstest.Run(t, cl.Server, tool, "-A", "INPUT", "-p", "tcp", "--dport", fmt.Sprint(reorderPort), "-j", "DROP")
		nstest.Run(t, cl.Client, tool, "-A", "INPUT", "-p", "tcp", "--sport", fmt.Sprint(reorderPort), "-j", "DROP")
	}
	// One client of node 2's share per family.
	var clients []netip.Addr
	for _, list := range [][]netip.Addr{cl.Clients4, cl.Clients6} {
		for _, a := range list {
			if nodes[0].match.Node(a) == 1 {
				clients = append(clients, a)
				break
			}
		}
	}
	if len(clients) != 2 {
		t.Fatalf("no client of node 2's share in both families: %v", clients)
	}
	fromClient := nstest.NewInjector(t, cl.Client, "eth0")
	fromServer := nstest.NewInjector(t, cl.Server, "eth0")
	cmac, smac := nstest.MAC(t, cl.Client, "eth0"), nstest.MAC(t, cl.Server, "eth0")
	type conn struct {
		client, server netip.Addr
		sport          uint16
	}
	conns := make([]conn, len(clients))
	for i, a := range clients {
		conns[i] = conn{a, cl.ServerFor(a), uint16(41000 + i)}
	}
	seg := func(c conn, fromC bool, flags string, seq, ack uint32, payload int) []byte {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(c.sport), DstPort: reorderPort, Seq: seq, Ack: ack, Window: 64240}
		src, dst, smacx, dmac := c.client, c.server, cmac, cl.FrontMAC
		if !fromC {
			tcp.SrcPort, tcp.DstPort = tcp.DstPort, tcp.SrcPort
			src, dst, smacx, dmac = c.server, c.client, smac, cl.BackMAC
		}
		for _, f := range flags {
			switch f {
			case 'S':
				tcp.SYN = true
			case 'A':
				tcp.ACK = true
			case 'P':
				tcp.PSH = true
			}
		}
		eth := &layers.Ethernet{SrcMAC: smacx, DstMAC: dmac, EthernetType: layers.EthernetTypeIPv4}
		var ip gopacket.SerializableLayer
		if src.Is4() {
			ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}
			tcp.SetNetworkLayerForChecksum(ip4)
			ip = ip4
		} else {
			eth.EthernetType = layers.EthernetTypeIPv6
			ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}
			tcp.SetNetworkLayerForChecksum(ip6)
			ip = ip6
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, ip, tcp, gopacket.Payload(make([]byte, payload))); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	tuple := func(c conn) packet.Tuple {
		tp := packet.Tuple{Proto: packet.ProtoTCP, SrcPort: c.sport, DstPort: reorderPort, HasPorts: true, Family: packet.IPv6}
		if c.client.Is4() {
			tp.Family = packet.IPv4
			copy(tp.Src[:], c.client.AsSlice())
			copy(tp.Dst[:], c.server.AsSlice())
		} else {
			tp.Src, tp.Dst = c.client.As16(), c.server.As16()
		}
		return tp
	}
	survivor := nodes[0].gw
	clock := survivor.Dataplane().Clock()
	// waitState waits until node 1 holds c's connection in state want
	// (a failure is reported, and the test goes on to show its effect).
	waitState := func(c conn, want conntrack.TCPState, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			info, ok := survivor.Tracker().Get(tuple(c), clock.Now())
			if ok && info.TCPState == want {
				if info.Orig != tuple(c).Src || info.Tag != 1 {
					t.Errorf("%s, %v: node 1's entry %+v, want the client's, tagged with node 2's bucket", what, c.client, info)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s, %v: node 1's entry %v (found %v), want %v", what, c.client, info.TCPState, ok, want)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	for _, c := range conns {
		// The SYN/ACK first, and nothing more until node 1 has classed
		// it (INVALID, as before: it only records the connection).
		noSyn := invalidReasons(survivor.Dataplane())["tcp_no_syn"]
		fromServer.Send(seg(c, false, "SA", 5000, 1001, 0))
		deadline := time.Now().Add(5 * time.Second)
		for invalidReasons(survivor.Dataplane())["tcp_no_syn"] == noSyn {
			if time.Now().After(deadline) {
				t.Fatalf("%v: node 1 did not class the SYN/ACK tcp_no_syn: invalid %v", c.client, invalidReasons(survivor.Dataplane()))
			}
			time.Sleep(10 * time.Millisecond)
		}
		fromClient.Send(seg(c, true, "S", 1000, 0, 0))
		fromClient.Send(seg(c, true, "A", 1001, 5001, 0))
		fromClient.Send(seg(c, true, "PA", 1001, 5001, 100))
		fromServer.Send(seg(c, false, "PA", 5001, 1101, 100))
		waitState(c, conntrack.TCPEstablished, "after the handshake")
	}

	// Node 2 fails; node 1 takes its share over.
	if err := nodes[1].gw.Close(); err != nil {
		t.Fatalf("stop node 2: %v", err)
	}
	m := nodes[0].match
	m.NodeMask |= 1 << 1
	if err := survivor.Dataplane().SetMatch(m); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		for i, s := range []struct {
			fromC    bool
			seq, ack uint32
		}{{true, 1101, 5101}, {false, 5101, 1201}} {
			before := forwarded(t, survivor)
			in := fromClient
			if !s.fromC {
				in = fromServer
			}
			in.Send(seg(c, s.fromC, "PA", s.seq, s.ack, 100))
			deadline := time.Now().Add(5 * time.Second)
			for forwarded(t, survivor) == before {
				if time.Now().After(deadline) {
					t.Fatalf("%v: node 1 did not forward data segment %d (from the client: %v) after the takeover; invalid %v",
						c.client, i, s.fromC, invalidReasons(survivor.Dataplane()))
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	if st := survivor.Tracker().Stats(); st.PickedUp < uint64(len(conns)) {
		t.Errorf("node 1 picked up %d connections from a SYN/ACK, want at least %d", st.PickedUp, len(conns))
	}
}
