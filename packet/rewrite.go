package packet

import "encoding/binary"

// checksum returns the Internet checksum (RFC 1071) of b added to the
// partial sum initial: 0 when b, including its checksum field, verifies.
func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// Checksum returns the Internet checksum of b (the value to store in a
// checksum field that was zero while summing).
func Checksum(b []byte) uint16 { return checksum(b, 0) }

// SetMACs writes the destination and source MAC addresses of an Ethernet
// frame. The frame must be at least 12 bytes long.
func SetMACs(frame []byte, dst, src *[6]byte) {
	_ = frame[11]
	copy(frame[0:6], dst[:])
	copy(frame[6:12], src[:])
}

// DecTTL decrements the IPv4 TTL or IPv6 hop limit of the packet p
// describes, updating the IPv4 header checksum incrementally (RFC 1624,
// eqn. 3). It returns false, changing nothing, when the TTL is already 0
// or 1: a router must drop such a packet (and may send ICMP time exceeded).
// p must come from a successful Decode of frame.
func DecTTL(frame []byte, p *Parsed) bool {
	if p.TTL <= 1 {
		return false
	}
	l3 := int(p.L3Off)
	switch p.Family {
	case IPv4:
		h := frame[l3 : l3+20]
		old := binary.BigEndian.Uint16(h[8:]) // TTL, protocol
		h[8]--
		p.TTL--
		nw := binary.BigEndian.Uint16(h[8:])
		// HC' = ~(~HC + ~m + m')
		sum := uint32(^binary.BigEndian.Uint16(h[10:])) + uint32(^old) + uint32(nw)
		sum = sum>>16 + sum&0xffff
		sum += sum >> 16
		binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	case IPv6:
		frame[l3+7]--
		p.TTL--
	default:
		return false
	}
	return true
}
