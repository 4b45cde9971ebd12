package packet

// Reason is the outcome of Decode: OK, NotIP (a frame for the control path
// or the kernel, not an error), or why the frame is malformed. It indexes
// fixed per-worker counter arrays, so the values are dense from 0 to
// NumReasons-1. Its String (generated: reason_string.go) is the metric
// label, the line comment of its constant, e.g. "truncated_tcp".
type Reason uint8

//go:generate go run golang.org/x/tools/cmd/stringer@v0.52.0 -type=Reason -linecomment -output=reason_string.go

// Decode outcomes.
const (
	OK Reason = iota // ok
	// ARP, LLDP, any non-IP EtherType
	NotIP // not_ip
	// Shorter than an Ethernet header
	TruncEthernet // truncated_ethernet
	// A VLAN tag cut short
	TruncVLAN // truncated_vlan
	// More than two stacked tags
	TooManyVLANs // too_many_vlans
	// Shorter than the IPv4 header or its IHL
	TruncIPv4 // truncated_ipv4
	// Version not 4, or IHL below 5
	BadIPv4Header // bad_ipv4_header
	// Total length below the header or beyond the frame
	BadIPv4Length // bad_ipv4_length
	// Header checksum does not verify
	BadIPv4Checksum // bad_ipv4_checksum
	// Shorter than the fixed IPv6 header
	TruncIPv6 // truncated_ipv6
	// Version not 6
	BadIPv6Header // bad_ipv6_header
	// Payload length beyond the frame, or a jumbogram
	BadIPv6Length // bad_ipv6_length
	// An IPv6 extension header cut short
	TruncExtHeader // truncated_ipv6_ext_header
	// More extension headers than we walk
	TooManyExtHeaders // too_many_ipv6_ext_headers
	// TCP header cut short
	TruncTCP // truncated_tcp
	// Data offset below 5 or beyond the packet
	BadTCPOffset // bad_tcp_data_offset
	// UDP/UDP-Lite header cut short
	TruncUDP // truncated_udp
	// UDP length field below 8 or beyond the packet
	BadUDPLength // bad_udp_length
	// SCTP/DCCP header too short for ports
	TruncPorts // truncated_ports
	// ICMP/ICMPv6 header cut short
	TruncICMP // truncated_icmp

	// NumReasons is the number of outcomes (untyped: not a Reason).
	NumReasons = iota
)

// Error makes a Reason usable as an error where one is wanted (off the hot
// path); Decode itself returns the Reason, which never allocates.
func (r Reason) Error() string { return "packet: " + r.String() }
