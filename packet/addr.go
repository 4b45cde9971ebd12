package packet

import "encoding/binary"

// AddrClass is what a packet's addresses alone say about forwarding it,
// before any route lookup: the checks a Linux router makes on input
// (net/ipv4/route.c ip_route_input_slow and ip_route_input_rcu for IPv4;
// net/ipv6/ip6_input.c ip6_rcv_core and the source check of
// net/ipv6/ip6_output.c ip6_forward for IPv6), plus link-local scope.
// Its String is generated (addrclass_string.go).
type AddrClass uint8

//go:generate go run golang.org/x/tools/cmd/stringer@v0.52.0 -type=AddrClass -linecomment -output=addrclass_string.go

// Address classes. Only Routable packets may be forwarded; whether they
// are is then up to the routing table.
const (
	// Nothing against it: ask the routing table
	Routable AddrClass = iota // routable
	// A source no router accepts (loopback, 0.0.0.0, multicast, broadcast, ::)
	MartianSource // martian_source
	// A destination no router forwards to (loopback, 0.0.0.0, ::, ::1)
	MartianDestination // martian_destination
	// 255.255.255.255 (or 0.0.0.0 -> 0.0.0.0): received, never forwarded
	LimitedBroadcast // limited_broadcast
	// A multicast destination: not forwarded without multicast routing
	MulticastDest // multicast
	// A link-local source or destination: never leaves its link
	LinkLocal // link_local
)

// Classify returns the class of t's addresses (t.Family IPv4 or IPv6). It
// makes a few comparisons and never allocates. The rules are those of
// Linux 5.2 and later, checked against a kernel router by the gateway's
// TestGatewayRouterRules.
//
// IPv4, in the kernel's order: a multicast or limited-broadcast source is
// martian; a limited-broadcast destination is received, not forwarded;
// then 0.0.0.0 and 127/8 sources and destinations are martian
// (route_localnet is not supported; the rest of 0/8, like class E 240/4,
// is left to the routing table, as the kernel does since 5.2). A
// multicast destination (224/4) is not forwarded (no multicast routing).
// 169.254/16 as source or destination is link-local: RFC 3927 forbids
// routers to forward it. The kernel forwards it when it has a route; we
// do not (a deliberate difference).
//
// IPv6: a multicast or loopback source (ip6_rcv_core) or the unspecified
// one (ip6_forward) is martian; ::1 and :: as destination are martian;
// every multicast destination is not forwarded; fe80::/10 as source or
// destination is link-local (ip6_forward answers a link-local source
// with ICMPv6 "not a neighbour"; a link-local destination is only
// reachable on the ingress link). A v4-mapped source is not checked: the
// kernel forwards it.
func (t *Tuple) Classify() AddrClass {
	if t.Family == IPv4 {
		return classify4(binary.BigEndian.Uint32(t.Src[:4]), binary.BigEndian.Uint32(t.Dst[:4]))
	}
	return classify6(&t.Src, &t.Dst)
}

func classify4(s, d uint32) AddrClass {
	switch {
	case s>>28 == 0xe || s == 0xffffffff:
		return MartianSource
	case d == 0xffffffff || s == 0 && d == 0:
		return LimitedBroadcast
	case s == 0 || s>>24 == 127:
		return MartianSource
	case d == 0 || d>>24 == 127:
		return MartianDestination
	case d>>28 == 0xe:
		return MulticastDest
	case s>>16 == 0xa9fe || d>>16 == 0xa9fe:
		return LinkLocal
	}
	return Routable
}

func classify6(s, d *[16]byte) AddrClass {
	sh, sl := binary.BigEndian.Uint64(s[:8]), binary.BigEndian.Uint64(s[8:])
	dh, dl := binary.BigEndian.Uint64(d[:8]), binary.BigEndian.Uint64(d[8:])
	switch {
	case s[0] == 0xff, sh == 0 && sl <= 1: // multicast, :: and ::1
		return MartianSource
	case dh == 0 && dl <= 1:
		return MartianDestination
	case d[0] == 0xff:
		return MulticastDest
	case sh>>54 == 0xfe80>>6 || dh>>54 == 0xfe80>>6: // fe80::/10
		return LinkLocal
	}
	return Routable
}
