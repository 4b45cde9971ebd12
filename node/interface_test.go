package node

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestValidate(t *testing.T) {
	mac := net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}
	good := Interface{Name: "eth1", ClusterMAC: mac, IPv4: []netip.Addr{netip.MustParseAddr("10.0.0.1")},
		IPv6: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, NDMAC: net.HardwareAddr{0x33, 0x33, 0, 0, 1, 1}}
	for _, tc := range []struct {
		name  string
		ifs   []Interface
		index int
		field string
	}{
		{"good", []Interface{good, {Name: "eth2", ClusterMAC: mac}}, 0, ""},
		{"none", nil, -1, ""},
		{"no name", []Interface{{ClusterMAC: mac}}, 0, "name"},
		{"loopback", []Interface{{Name: "lo", ClusterMAC: mac}}, 0, "name"},
		{"twice", []Interface{good, good}, 1, "name"},
		{"unicast", []Interface{good, {Name: "eth2", ClusterMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}}, 1, "cluster_mac"},
		{"no MAC", []Interface{{Name: "eth2"}}, 0, "cluster_mac"},
		{"broadcast", []Interface{{Name: "eth2", ClusterMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}}, 0, "cluster_mac"},
		{"empty nd_mac", []Interface{{Name: "eth2", ClusterMAC: mac, NDMAC: net.HardwareAddr{}}}, 0, "nd_mac"},
		{"IPv6 as IPv4", []Interface{{Name: "eth2", ClusterMAC: mac, IPv4: good.IPv6}}, 0, "cluster_addresses"},
		{"IPv4 as IPv6", []Interface{{Name: "eth2", ClusterMAC: mac, IPv6: good.IPv4}}, 0, "cluster_addresses"},
	} {
		err := Validate(tc.ifs)
		var fe *FieldError
		switch {
		case tc.name == "good":
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		case !errors.As(err, &fe) || fe.Index != tc.index || fe.Field != tc.field || fe.Rule == "":
			t.Errorf("%s: %#v, want a *FieldError for interface %d field %q", tc.name, err, tc.index, tc.field)
		}
	}
	if a := good.Addrs(); len(a) != 2 || !a[0].Is4() || !a[1].Is6() {
		t.Errorf("Addrs: %v", a)
	}
}
