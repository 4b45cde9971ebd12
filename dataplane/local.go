package dataplane

import (
	"encoding/binary"
	"net/netip"

	"github.com/xdpcluster/xdpcluster/packet"
)

// smallSet is the size up to which a localSet is scanned linearly (a
// node usually has a handful of addresses); larger sets use maps.
const smallSet = 16

// localSet is an immutable set of the node's own addresses, read by the
// workers without locking.
type localSet struct {
	v4  []uint32
	v6  [][2]uint64
	m4  map[uint32]struct{}
	m6  map[[2]uint64]struct{}
	big bool
}

func newLocalSet(addrs []netip.Addr) *localSet {
	s := &localSet{}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			b := a.As4()
			s.v4 = append(s.v4, binary.BigEndian.Uint32(b[:]))
		} else if a.Is6() {
			b := a.As16()
			s.v6 = append(s.v6, [2]uint64{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])})
		}
	}
	if len(s.v4) > smallSet || len(s.v6) > smallSet {
		s.big = true
		s.m4 = make(map[uint32]struct{}, len(s.v4))
		s.m6 = make(map[[2]uint64]struct{}, len(s.v6))
		for _, a := range s.v4 {
			s.m4[a] = struct{}{}
		}
		for _, a := range s.v6 {
			s.m6[a] = struct{}{}
		}
	}
	return s
}

// has reports whether a (of family 4 or 6, as packet.Tuple stores it) is
// one of the node's addresses.
func (s *localSet) has(family packet.Family, a *[16]byte) bool {
	if family == packet.IPv4 {
		v := binary.BigEndian.Uint32(a[:4])
		if s.big {
			_, ok := s.m4[v]
			return ok
		}
		for _, x := range s.v4 {
			if x == v {
				return true
			}
		}
		return false
	}
	v := [2]uint64{binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])}
	if s.big {
		_, ok := s.m6[v]
		return ok
	}
	for _, x := range s.v6 {
		if x == v {
			return true
		}
	}
	return false
}

// screen applies the checks a router makes on a packet's addresses before
// any route lookup (packet.Classify), and the node's own addresses (nil:
// none known): Forwarded means nothing against forwarding it.
func screen(p *packet.Parsed, local *localSet) Verdict {
	switch p.Classify() {
	case packet.MartianSource:
		return MartianSource
	case packet.MartianDestination:
		return MartianDestination
	case packet.LimitedBroadcast:
		return Broadcast
	case packet.MulticastDest:
		return Multicast
	case packet.LinkLocal:
		return LinkLocal
	}
	if local != nil {
		// fib_validate_source: an IPv4 packet from one of the node's own
		// addresses is a martian source. ip6_forward makes no such check,
		// so an IPv6 one is forwarded, as the kernel does.
		if p.Family == packet.IPv4 && local.has(packet.IPv4, &p.Src) {
			return MartianSource
		}
		if local.has(p.Family, &p.Dst) {
			return Local
		}
	}
	return Forwarded
}
