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
	for r, want := range reasons {
		if got := Reason(r).String(); got != want {
			t.Errorf("Reason(%d) = %q, want %q", r, got, want)
		}
	}
	if got := TruncTCP.Error(); got != "packet: truncated_tcp" {
		t.Errorf("TruncTCP.Error() = %q", got)
	}
	for c, want := range []string{"routable", "martian_source", "martian_destination", "limited_broadcast", "multicast", "link_local"} {
		if got := AddrClass(c).String(); got != want {
			t.Errorf("AddrClass(%d) = %q, want %q", c, got, want)
		}
	}
	for _, c := range []struct {
		f    Family
		want string
	}{{IPv4, "ipv4"}, {IPv6, "ipv6"}, {0, "Family(0)"}} {
		if got := c.f.String(); got != c.want {
			t.Errorf("Family(%d) = %q, want %q", uint8(c.f), got, c.want)
		}
	}
	if IPv4 != 4 || IPv6 != 6 {
		t.Errorf("IPv4 %d, IPv6 %d: the families are numbered by IP version", IPv4, IPv6)
	}
}
