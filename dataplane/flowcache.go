package dataplane

import (
	"fmt"

	"github.com/xdpcluster/xdpcluster/packet"
)

// FlowKey is one direction of a connection as a kernel flow cache keys it
// (the XDP program's struct xc_flow_key, bpf/flow.h): 40 bytes, ports in
// host byte order, IPv4 addresses in Src[0:4]/Dst[0:4] with the rest zero.
// Only connections with ports (TCP, UDP, UDP-Lite, SCTP, DCCP) are cached.
type FlowKey struct {
	Family  uint8 // packet.IPv4 or packet.IPv6
	Proto   uint8
	SrcPort uint16
	DstPort uint16
	_       uint16
	Src     [16]byte
	Dst     [16]byte
}

// KeyOf returns the flow key of a tuple's direction.
func KeyOf(tp *packet.Tuple) FlowKey {
	return FlowKey{Family: uint8(tp.Family), Proto: tp.Proto, SrcPort: tp.SrcPort, DstPort: tp.DstPort, Src: tp.Src, Dst: tp.Dst}
}

// Tuple returns the tuple of the key's direction (the inverse of KeyOf).
func (k FlowKey) Tuple() packet.Tuple {
	return packet.Tuple{Src: k.Src, Dst: k.Dst, SrcPort: k.SrcPort, DstPort: k.DstPort, Proto: k.Proto,
		Family: packet.Family(k.Family), HasPorts: true}
}

// Reverse returns the key of the other direction.
func (k FlowKey) Reverse() FlowKey {
	return FlowKey{Family: k.Family, Proto: k.Proto, SrcPort: k.DstPort, DstPort: k.SrcPort, Src: k.Dst, Dst: k.Src}
}

// FlowCache is a kernel fast path's connection cache (dataplane/xsk's
// flow map, read by the XDP program): the packets of a connection in it
// are decided in the kernel and never reach the workers, except those
// the program always hands to the slow path (TCP SYN, FIN, RST,
// fragments, anything it cannot forward). Workers call it at most twice
// per receive batch, with every change of the batch; it must not allocate
// and must be safe for concurrent use by all workers.
type FlowCache interface {
	// Install adds or refreshes both directions of connections: orig[i]
	// is connection i's original direction and buckets[i] its bucket
	// (0-based node, conntrack.Result.Tag).
	Install(orig []FlowKey, buckets []uint8) error
	// Remove deletes both directions of connections (keys of their
	// original direction); a connection not in the cache is no error.
	Remove(orig []FlowKey) error
	// SetMatch sets which buckets the fast path forwards: bucket b's
	// connections are this node's if bit b of mask is set, xor invert.
	// The dataplane calls it from New and SetMatch, so a takeover acts
	// on the next packet of every cached connection.
	SetMatch(mask uint32, invert bool) error
}

// FastPath says whether a gateway uses the XDP flow cache.
type FastPath string

// Fast path settings, as the configuration (dataplane.fast_path) spells
// them.
const (
	FastPathAuto FastPath = "auto" // on where the kernel and driver allow it, else off with the reason logged ("" too)
	FastPathOff  FastPath = "off"  // every packet through the workers
)

// Validate reports a FastPath that is neither setting.
func (f FastPath) Validate() error {
	switch f {
	case "", FastPathAuto, FastPathOff:
		return nil
	}
	return fmt.Errorf("%q: must be auto or off", string(f))
}
