// Package packet parses the frames a cluster gateway sees, without
// allocating, into a caller-owned Parsed value, and rewrites headers for
// forwarding.
//
// Decode understands Ethernet II with up to two 802.1Q / 802.1ad tags;
// IPv4 with options and fragments; IPv6 with its extension headers
// (hop-by-hop, routing, fragment, destination options, AH; the walk stops
// at ESP, No Next Header or anything unknown); TCP, UDP, UDP-Lite, SCTP and
// DCCP ports; ICMP and ICMPv6 type, code and query identifier; and, for
// ICMP errors, the tuple of the embedded original packet. Every length is
// checked before it is used: a truncated or lying header yields a Reason,
// never a panic or a read out of range.
//
// Parsed keeps offsets into the frame, not copies of it, except for the
// addresses and ports it extracts. One Parsed may be reused for any number
// of frames; it is not safe for concurrent use. The package imports only
// the standard library.
package packet

import "encoding/binary"

// EtherTypes and IP protocol numbers used here.
const (
	EtherTypeIPv4  = 0x0800
	EtherTypeARP   = 0x0806
	EtherTypeVLAN  = 0x8100 // 802.1Q
	EtherTypeQinQ  = 0x88a8 // 802.1ad
	EtherTypeQinQ2 = 0x9100 // pre-standard QinQ
	EtherTypeIPv6  = 0x86dd

	ProtoHopByHop = 0
	ProtoICMP     = 1
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoDCCP     = 33
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoESP      = 50
	ProtoAH       = 51
	ProtoICMPv6   = 58
	ProtoNoNext   = 59
	ProtoDstOpts  = 60
	ProtoSCTP     = 132
	ProtoUDPLite  = 136
)

// TCP flag bits as they appear in byte 13 of the TCP header.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
	TCPEce = 0x40
	TCPCwr = 0x80
)

// MaxExtHeaders bounds the IPv6 extension header walk.
const MaxExtHeaders = 8

// Tuple is a packet's addresses, protocol and ports. IPv4 addresses occupy
// Src[0:4] and Dst[0:4], the rest is zero. For ICMP queries (echo,
// timestamp, information, address mask) both ports hold the identifier, so
// a request and its reply have mirrored tuples.
type Tuple struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            uint8
	Family           Family // IPv4 or IPv6; 0 when not set
	HasPorts         bool   // SrcPort/DstPort are meaningful
}

// Parsed is the result of Decode.
type Parsed struct {
	Tuple

	VLANs     uint8     // number of tags, 0..2
	VLAN      [2]uint16 // TCI of the outer and inner tag
	EtherType uint16    // after the tags

	L3Off      uint16 // IP header
	L4Off      uint16 // transport header; 0 when there is none (non-first fragment, ESP...)
	PayloadOff uint16 // transport payload; 0 when unknown
	End        uint16 // end of the IP packet in the frame (Ethernet padding excluded); with Cut, the end of the frame

	// Cut is set only by DecodeCaptured: the capture cut the frame before
	// the end of its IP packet (a short snap length), so the payload, or
	// part of it, was not captured. Lengths were checked against the IP
	// header and the frame's length on the wire.
	Cut bool

	TTL uint8 // IPv4 TTL or IPv6 hop limit

	// Fragments. A non-first fragment has no transport header: L4Off,
	// HasPorts and the TCP/ICMP fields are zero.
	Fragment   bool   // a fragment (IPv4 MF or offset, or an IPv6 Fragment header that is not atomic)
	FragOffset uint16 // in bytes
	MoreFrags  bool
	FragID     uint32 // IPv4 identification or IPv6 fragment identification

	// TCP.
	TCPFlags uint8
	Seq, Ack uint32

	// ICMP / ICMPv6.
	ICMPType, ICMPCode uint8
	ICMPQuery          bool  // echo or another query carrying an identifier
	ICMPError          bool  // an error message that embeds a packet
	Inner              Tuple // of the embedded packet, when InnerValid
	InnerValid         bool
}

// IsFirstFragment reports whether p is the first fragment of a fragmented
// packet: it carries the transport header.
func (p *Parsed) IsFirstFragment() bool { return p.Fragment && p.FragOffset == 0 }

// Decode parses frame into p, overwriting every field. It returns OK, NotIP
// for a frame that is not IPv4/IPv6, or the reason the frame is malformed.
// It never allocates and never panics.
//
// Decode is for frames off the wire: a frame shorter than its IP header
// says is malformed. DecodeCaptured is for frames from capture files.
func (p *Parsed) Decode(frame []byte) Reason { return p.decode(frame, len(frame)) }

// MaxCapturedFrame is the longest frame DecodeCaptured parses (offsets are
// 16 bits); it reads longer frames as cut at this length.
const MaxCapturedFrame = 0xffff

// DecodeCaptured parses a frame read from a capture file whose record says
// the frame was wireLen bytes long on the wire. A whole frame (wireLen at
// most len(frame)) is decoded exactly as Decode does. A frame the capture
// cut short (a snap length: tcpdump -s 96) is decoded from the headers it
// holds: the IP header's lengths are checked against wireLen instead of the
// captured bytes, End is the end of the captured bytes, and p.Cut is set
// when the IP packet goes on beyond them. Headers the capture cut in the
// middle are still malformed (truncated_tcp, truncated_ipv6, ...), since
// the fields the tracker needs are missing. The dataplane never calls it:
// on the wire a frame shorter than its IP header says is malformed.
func (p *Parsed) DecodeCaptured(frame []byte, wireLen int) Reason {
	if len(frame) > MaxCapturedFrame {
		wireLen = max(wireLen, len(frame))
		frame = frame[:MaxCapturedFrame]
	}
	return p.decode(frame, max(wireLen, len(frame)))
}

// decode parses frame, which was wire bytes long on the wire (wire ==
// len(frame) for a live frame; more for a capture cut by its snap length).
func (p *Parsed) decode(frame []byte, wire int) Reason {
	*p = Parsed{}
	if len(frame) < 14 {
		return TruncEthernet
	}
	off := 12
	et := binary.BigEndian.Uint16(frame[off:])
	for et == EtherTypeVLAN || et == EtherTypeQinQ || et == EtherTypeQinQ2 {
		if p.VLANs == 2 {
			return TooManyVLANs
		}
		if len(frame) < off+6 {
			return TruncVLAN
		}
		p.VLAN[p.VLANs] = binary.BigEndian.Uint16(frame[off+2:]) & 0x0fff
		p.VLANs++
		off += 4
		et = binary.BigEndian.Uint16(frame[off:])
	}
	p.EtherType = et
	off += 2
	p.L3Off = uint16(off)
	switch et {
	case EtherTypeIPv4:
		return p.decodeIPv4(frame, off, wire)
	case EtherTypeIPv6:
		return p.decodeIPv6(frame, off, wire)
	}
	return NotIP
}

func (p *Parsed) decodeIPv4(frame []byte, off, wire int) Reason {
	if len(frame) < off+20 {
		return TruncIPv4
	}
	h := frame[off:]
	if h[0]>>4 != 4 {
		return BadIPv4Header
	}
	ihl := int(h[0]&0x0f) * 4
	if ihl < 20 {
		return BadIPv4Header
	}
	if len(h) < ihl {
		return TruncIPv4
	}
	total := int(binary.BigEndian.Uint16(h[2:]))
	if total < ihl || total > wire-off {
		return BadIPv4Length
	}
	if checksum(h[:ihl], 0) != 0 {
		return BadIPv4Checksum
	}
	ipEnd, end := off+total, off+total
	if end > len(frame) { // only from DecodeCaptured: cut by the snap length
		end, p.Cut = len(frame), true
	}
	h = frame[off:end] // drop Ethernet padding
	p.End = uint16(end)
	p.Family = IPv4
	p.TTL = h[8]
	p.Proto = h[9]
	copy(p.Src[:4], h[12:16])
	copy(p.Dst[:4], h[16:20])
	frag := binary.BigEndian.Uint16(h[6:])
	p.FragID = uint32(binary.BigEndian.Uint16(h[4:]))
	p.FragOffset = (frag & 0x1fff) * 8
	p.MoreFrags = frag&0x2000 != 0
	p.Fragment = p.MoreFrags || p.FragOffset != 0
	if p.FragOffset != 0 {
		return OK // non-first fragment: no transport header
	}
	return p.decodeL4(frame[:end], off+ihl, ipEnd)
}

func (p *Parsed) decodeIPv6(frame []byte, off, wire int) Reason {
	if len(frame) < off+40 {
		return TruncIPv6
	}
	h := frame[off:]
	if h[0]>>4 != 6 {
		return BadIPv6Header
	}
	plen := int(binary.BigEndian.Uint16(h[4:]))
	if plen == 0 && h[6] == ProtoHopByHop {
		return BadIPv6Length // jumbogram: not on Ethernet
	}
	if 40+plen > wire-off {
		return BadIPv6Length
	}
	ipEnd, end := off+40+plen, off+40+plen
	if end > len(frame) { // only from DecodeCaptured: cut by the snap length
		end, p.Cut = len(frame), true
	}
	p.End = uint16(end)
	p.Family = IPv6
	p.TTL = h[7]
	copy(p.Src[:], h[8:24])
	copy(p.Dst[:], h[24:40])
	frame = frame[:end]
	next, l4, r := p.walkExt(frame, h[6], off+40, true)
	if r != OK {
		return r
	}
	p.Proto = next
	if l4 < 0 {
		return OK // non-first fragment, ESP or no next header
	}
	return p.decodeL4(frame, l4, ipEnd)
}

// walkExt follows IPv6 extension headers from off, where next names the
// first. It returns the transport protocol and its offset, or offset -1
// when there is no transport header to parse (non-first fragment, ESP, No
// Next Header). When outer is set it records fragment information in p.
func (p *Parsed) walkExt(frame []byte, next uint8, off int, outer bool) (uint8, int, Reason) {
	for n := 0; ; n++ {
		switch next {
		case ProtoHopByHop, ProtoRouting, ProtoDstOpts, ProtoAH, ProtoFragment:
		case ProtoESP, ProtoNoNext:
			return next, -1, OK
		default:
			return next, off, OK
		}
		if n == MaxExtHeaders {
			return next, -1, TooManyExtHeaders
		}
		if len(frame) < off+8 {
			return next, -1, TruncExtHeader
		}
		e := frame[off:]
		size := (int(e[1]) + 1) * 8
		switch next {
		case ProtoAH:
			size = (int(e[1]) + 2) * 4
		case ProtoFragment:
			size = 8
			fo := binary.BigEndian.Uint16(e[2:])
			offset, more := fo&0xfff8, fo&1 != 0
			if outer {
				p.FragID = binary.BigEndian.Uint32(e[4:])
				p.FragOffset = offset
				p.MoreFrags = more
				p.Fragment = offset != 0 || more // an atomic fragment is a whole packet
			}
			if offset != 0 {
				return e[0], -1, OK
			}
		}
		if len(frame) < off+size {
			return next, -1, TruncExtHeader
		}
		next = e[0]
		off += size
	}
}

// decodeL4 parses the transport header at off. frame ends where the IP
// packet does, or where the capture cut it; ipEnd is where the IP packet
// ends on the wire (len(frame) for a live frame). Header fields must be in
// frame; length fields are checked against ipEnd.
func (p *Parsed) decodeL4(frame []byte, off, ipEnd int) Reason {
	p.L4Off = uint16(off)
	l4 := frame[off:]
	wl4 := ipEnd - off // the transport segment's length on the wire
	switch p.Proto {
	case ProtoTCP:
		if len(l4) < 20 {
			return TruncTCP
		}
		doff := int(l4[12]>>4) * 4
		if doff < 20 || doff > wl4 {
			return BadTCPOffset
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:])
		p.DstPort = binary.BigEndian.Uint16(l4[2:])
		p.Seq = binary.BigEndian.Uint32(l4[4:])
		p.Ack = binary.BigEndian.Uint32(l4[8:])
		p.TCPFlags = l4[13]
		p.HasPorts = true
		if doff <= len(l4) { // else options were cut by the capture: payload offset unknown
			p.PayloadOff = uint16(off + doff)
		}
	case ProtoUDP, ProtoUDPLite:
		if len(l4) < 8 {
			return TruncUDP
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:]))
		// UDP-Lite's field is a checksum coverage (0 = everything).
		if p.Proto == ProtoUDP && (ulen < 8 || ulen > wl4) ||
			p.Proto == ProtoUDPLite && ulen != 0 && (ulen < 8 || ulen > wl4) {
			return BadUDPLength
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:])
		p.DstPort = binary.BigEndian.Uint16(l4[2:])
		p.HasPorts = true
		p.PayloadOff = uint16(off + 8)
	case ProtoSCTP, ProtoDCCP:
		if len(l4) < 4 {
			return TruncPorts
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:])
		p.DstPort = binary.BigEndian.Uint16(l4[2:])
		p.HasPorts = true
	case ProtoICMP, ProtoICMPv6:
		if p.Proto == ProtoICMP && p.Family != IPv4 || p.Proto == ProtoICMPv6 && p.Family != IPv6 {
			return OK // ICMP over IPv6 or ICMPv6 over IPv4: an opaque protocol
		}
		if len(l4) < 8 {
			return TruncICMP
		}
		p.ICMPType, p.ICMPCode = l4[0], l4[1]
		p.PayloadOff = uint16(off + 8)
		if p.Family == IPv4 {
			p.ICMPQuery = icmp4Query(p.ICMPType)
			p.ICMPError = icmp4Error(p.ICMPType)
		} else {
			p.ICMPQuery = p.ICMPType == 128 || p.ICMPType == 129
			p.ICMPError = p.ICMPType >= 1 && p.ICMPType <= 4
		}
		if p.ICMPQuery {
			id := binary.BigEndian.Uint16(l4[4:])
			p.SrcPort, p.DstPort, p.HasPorts = id, id, true
		}
		if p.ICMPError && !p.Fragment {
			p.InnerValid = p.decodeInner(l4[8:])
		}
	}
	return OK
}

// icmp4Query: echo, timestamp, information and address mask requests and
// replies, the types the kernel's conntrack tracks by identifier.
func icmp4Query(t uint8) bool {
	switch t {
	case 0, 8, 13, 14, 15, 16, 17, 18:
		return true
	}
	return false
}

// icmp4Error: the types the kernel's conntrack treats as errors that embed
// a packet (destination unreachable, source quench, redirect, time
// exceeded, parameter problem).
func icmp4Error(t uint8) bool {
	switch t {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// decodeInner parses the IP header and the first transport bytes of the
// packet embedded in an ICMP error. The embedded packet is usually
// truncated, so its length fields are not checked against b.
func (p *Parsed) decodeInner(b []byte) bool {
	in := &p.Inner
	var l4 []byte
	fragNonFirst := false
	switch p.Family {
	case IPv4:
		if len(b) < 20 || b[0]>>4 != 4 {
			return false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return false
		}
		in.Family, in.Proto = IPv4, b[9]
		copy(in.Src[:4], b[12:16])
		copy(in.Dst[:4], b[16:20])
		fragNonFirst = binary.BigEndian.Uint16(b[6:])&0x1fff != 0
		l4 = b[ihl:]
	case IPv6:
		if len(b) < 40 || b[0]>>4 != 6 {
			return false
		}
		in.Family = IPv6
		copy(in.Src[:], b[8:24])
		copy(in.Dst[:], b[24:40])
		var scratch Parsed
		next, off, r := scratch.walkExt(b, b[6], 40, false)
		if r != OK {
			return false
		}
		in.Proto = next
		if off < 0 {
			fragNonFirst = true
			l4 = nil
		} else {
			l4 = b[off:]
		}
	}
	if fragNonFirst {
		return true // addresses only
	}
	switch in.Proto {
	case ProtoTCP, ProtoUDP, ProtoUDPLite, ProtoSCTP, ProtoDCCP:
		if len(l4) < 4 {
			return false
		}
		in.SrcPort = binary.BigEndian.Uint16(l4[0:])
		in.DstPort = binary.BigEndian.Uint16(l4[2:])
		in.HasPorts = true
	case ProtoICMP, ProtoICMPv6:
		if len(l4) < 8 {
			return false
		}
		t := l4[0]
		if in.Proto == ProtoICMP && icmp4Query(t) || in.Proto == ProtoICMPv6 && (t == 128 || t == 129) {
			id := binary.BigEndian.Uint16(l4[4:])
			in.SrcPort, in.DstPort, in.HasPorts = id, id, true
		}
	}
	return true
}
