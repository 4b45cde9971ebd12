package packet

import "testing"

// TestNames: the generated String methods give exactly the names they
// gave when they were written by hand (Reason's are metric labels, an
// interface), and every value up to NumReasons has one.
func TestNames(t *testing.T) {
	reasons := []string{"ok", "not_ip", "truncated_ethernet", "truncated_vlan", "too_many_vlans",
		"truncated_ipv4", "bad_ipv4_header", "bad_ipv4_length", "bad_ipv4_checksum",
		"truncated_ipv6", "bad_ipv6_header", "bad_ipv6_length", "truncated_ipv6_ext_header", "too_many_ipv6_ext_headers",
		"truncated_tcp", "bad_tcp_data_offset", "truncated_udp", "bad_udp_length", "truncated_ports", "truncated_icmp"}
	if len(reasons) != NumReasons {
		t.Fatalf("%d reasons named here, NumReasons %d", len(reasons), NumReasons)
	}
	classes := []string{"routable", "martian_source", "martian_destination", "limited_broadcast", "multicast", "link_local"}
	var got []string
	for r := range Reason(NumReasons) {
		got = append(got, r.String())
	}
	for c := range AddrClass(len(classes)) {
		got = append(got, c.String())
	}
	got = append(got, IPv4.String(), IPv6.String(), Family(0).String())
	want := append(append(reasons, classes...), "ipv4", "ipv6", "Family(0)")
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("name %d: %q, want %q", i, got[i], want[i])
		}
	}
	if got := TruncTCP.Error(); got != "packet: truncated_tcp" {
		t.Errorf("TruncTCP.Error() = %q", got)
	}
	if IPv4 != 4 || IPv6 != 6 {
		t.Errorf("IPv4 %d, IPv6 %d: the families are numbered by IP version", IPv4, IPv6)
	}
}
