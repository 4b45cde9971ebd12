package packet

import (
	"net/netip"
	"testing"
)

func tupleOf(src, dst string) Tuple {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	var t Tuple
	if s.Is4() {
		t.Family = 4
		a, b := s.As4(), d.As4()
		copy(t.Src[:], a[:])
		copy(t.Dst[:], b[:])
	} else {
		t.Family, t.Src, t.Dst = 6, s.As16(), d.As16()
	}
	return t
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		src, dst string
		want     AddrClass
	}{
		{"198.51.100.10", "203.0.113.80", Routable},
		{"127.0.0.1", "203.0.113.80", MartianSource},
		{"127.255.0.9", "203.0.113.80", MartianSource},
		{"0.0.0.0", "203.0.113.80", MartianSource},
		{"0.1.2.3", "203.0.113.80", Routable}, // 0/8 but 0.0.0.0: unicast since Linux 5.2
		{"224.0.0.1", "203.0.113.80", MartianSource},
		{"239.255.255.255", "203.0.113.80", MartianSource},
		{"255.255.255.255", "203.0.113.80", MartianSource},
		{"198.51.100.10", "255.255.255.255", LimitedBroadcast},
		{"0.0.0.0", "255.255.255.255", LimitedBroadcast}, // DHCP discover: the kernel receives it
		{"0.0.0.0", "0.0.0.0", LimitedBroadcast},
		{"198.51.100.10", "0.0.0.0", MartianDestination},
		{"198.51.100.10", "0.9.9.9", Routable},
		{"198.51.100.10", "127.0.0.1", MartianDestination},
		{"127.0.0.1", "127.0.0.1", MartianSource},
		{"198.51.100.10", "224.0.0.1", MulticastDest},
		{"198.51.100.10", "239.1.1.1", MulticastDest},
		{"169.254.1.1", "203.0.113.80", LinkLocal},
		{"198.51.100.10", "169.254.255.255", LinkLocal},
		{"240.0.0.1", "203.0.113.80", Routable}, // class E: the kernel routes it by default
		{"198.51.100.10", "240.0.0.1", Routable},
		{"198.51.100.10", "255.255.255.254", Routable},
		{"169.253.255.255", "169.255.0.0", Routable},
		{"1.0.0.0", "126.255.255.255", Routable},
		{"2001:db8:100::10", "2001:db8:200::80", Routable},
		{"::1", "2001:db8:200::80", MartianSource},
		{"::", "2001:db8:200::80", MartianSource},
		{"ff02::1", "2001:db8:200::80", MartianSource},
		{"ff0e::1", "2001:db8:200::80", MartianSource},
		{"::ffff:127.0.0.1", "2001:db8:200::80", Routable}, // the kernel forwards it
		{"::ffff:198.51.100.10", "2001:db8:200::80", Routable},
		{"2001:db8:100::10", "::1", MartianDestination},
		{"2001:db8:100::10", "::", MartianDestination},
		{"2001:db8:100::10", "ff02::1", MulticastDest},
		{"2001:db8:100::10", "ff0e::1", MulticastDest},
		{"2001:db8:100::10", "ff01::1", MulticastDest},
		{"fe80::1", "2001:db8:200::80", LinkLocal},
		{"febf::1", "2001:db8:200::80", LinkLocal},
		{"2001:db8:100::10", "fe80::1", LinkLocal},
		{"fec0::1", "2001:db8:200::80", Routable}, // deprecated site-local: routed
		{"::2", "2001:db8:200::80", Routable},
		{"::fffe:0:1", "2001:db8:200::80", Routable},
		{"64:ff9b::1", "2001:db8:200::80", Routable},
		{"2001:db8:100::10", "::ffff:1.2.3.4", Routable}, // the kernel checks v4-mapped sources only
	} {
		tp := tupleOf(c.src, c.dst)
		if got := tp.Classify(); got != c.want {
			t.Errorf("%s -> %s: %s, want %s", c.src, c.dst, got, c.want)
		}
	}
}

func TestClassifyAllocs(t *testing.T) {
	tp := tupleOf("2001:db8:100::10", "fe80::1")
	if n := testing.AllocsPerRun(100, func() { tp.Classify() }); n != 0 {
		t.Fatalf("Classify allocates %v times", n)
	}
}
