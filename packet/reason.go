package packet

// Reason is the outcome of Decode: OK, NotIP (a frame for the control path
// or the kernel, not an error), or why the frame is malformed. It indexes
// fixed per-worker counter arrays, so the values are dense from 0 to
// NumReasons-1.
type Reason uint8

// Decode outcomes.
const (
	OK                Reason = iota
	NotIP                    // ARP, LLDP, any non-IP EtherType
	TruncEthernet            // shorter than an Ethernet header
	TruncVLAN                // a VLAN tag cut short
	TooManyVLANs             // more than two stacked tags
	TruncIPv4                // shorter than the IPv4 header or its IHL
	BadIPv4Header            // version not 4, or IHL below 5
	BadIPv4Length            // total length below the header or beyond the frame
	BadIPv4Checksum          // header checksum does not verify
	TruncIPv6                // shorter than the fixed IPv6 header
	BadIPv6Header            // version not 6
	BadIPv6Length            // payload length beyond the frame, or a jumbogram
	TruncExtHeader           // an IPv6 extension header cut short
	TooManyExtHeaders        // more extension headers than we walk
	TruncTCP                 // TCP header cut short
	BadTCPOffset             // data offset below 5 or beyond the packet
	TruncUDP                 // UDP/UDP-Lite header cut short
	BadUDPLength             // UDP length field below 8 or beyond the packet
	TruncPorts               // SCTP/DCCP header too short for ports
	TruncICMP                // ICMP/ICMPv6 header cut short
	NumReasons
)

var reasonNames = [NumReasons]string{
	OK:                "ok",
	NotIP:             "not_ip",
	TruncEthernet:     "truncated_ethernet",
	TruncVLAN:         "truncated_vlan",
	TooManyVLANs:      "too_many_vlans",
	TruncIPv4:         "truncated_ipv4",
	BadIPv4Header:     "bad_ipv4_header",
	BadIPv4Length:     "bad_ipv4_length",
	BadIPv4Checksum:   "bad_ipv4_checksum",
	TruncIPv6:         "truncated_ipv6",
	BadIPv6Header:     "bad_ipv6_header",
	BadIPv6Length:     "bad_ipv6_length",
	TruncExtHeader:    "truncated_ipv6_ext_header",
	TooManyExtHeaders: "too_many_ipv6_ext_headers",
	TruncTCP:          "truncated_tcp",
	BadTCPOffset:      "bad_tcp_data_offset",
	TruncUDP:          "truncated_udp",
	BadUDPLength:      "bad_udp_length",
	TruncPorts:        "truncated_ports",
	TruncICMP:         "truncated_icmp",
}

// String returns the reason's metric label, e.g. "truncated_tcp".
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Error makes a Reason usable as an error where one is wanted (off the hot
// path); Decode itself returns the Reason, which never allocates.
func (r Reason) Error() string { return "packet: " + r.String() }
