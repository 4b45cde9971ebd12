package gateway

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/packet"
)

// ResolverNamespace creates a namespace (deleted when the test ends)
// with a veth pair dpa-dpb, up, and dpa addressed 203.0.113.2/24 and
// 2001:db8:200::2/64.
func ResolverNamespace(t testing.TB, prefix string) *netns.NS {
	t.Helper()
	ns := nstest.New(t, prefix)
	nstest.Run(t, ns, "ip", "link", "add", "dpa", "type", "veth", "peer", "name", "dpb")
	for _, dev := range []string{"dpa", "dpb"} {
		nstest.Run(t, ns, "ip", "link", "set", dev, "up")
	}
	nstest.Run(t, ns, "ip", "addr", "add", "203.0.113.2/24", "dev", "dpa")
	nstest.Run(t, ns, "ip", "addr", "add", "2001:db8:200::2/64", "dev", "dpa", "nodad")
	return ns
}

// ResolveAddr asks r for the route to a.
func ResolveAddr(r *NetlinkResolver, a netip.Addr) dataplane.Route {
	if a.Is4() {
		var b [16]byte
		v := a.As4()
		copy(b[:], v[:])
		return r.Resolve(packet.IPv4, b)
	}
	return r.Resolve(packet.IPv6, a.As16())
}

// ResolverIn returns a resolver with a handle of namespace ns (closed when
// the test ends) for the one data interface link.
func ResolverIn(t testing.TB, ns *netns.NS, link string) *NetlinkResolver {
	t.Helper()
	var r *NetlinkResolver
	if err := ns.Do(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		t.Cleanup(h.Close)
		l, err := h.LinkByName(link)
		if err != nil {
			return err
		}
		r = NewNetlinkResolver(h, []int{l.Attrs().Index})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestResolverNeighbourCache (root): while the resolver follows the
// kernel's neighbour events, misses cost no neighbour dump (one at the
// start), and the events alone keep its next-hop MACs right: a changed
// MAC, a deleted neighbour, a new one.
func TestResolverNeighbourCache(t *testing.T) {
	ns := ResolverNamespace(t, "xc-ncache")
	nstest.Run(t, ns, "ip", "route", "add", "198.51.100.0/24", "via", "203.0.113.1")
	nstest.Run(t, ns, "ip", "neigh", "add", "203.0.113.1", "lladdr", "02:00:00:00:00:01", "dev", "dpa", "nud", "permanent")
	nstest.Run(t, ns, "ip", "neigh", "add", "203.0.113.80", "lladdr", "02:00:00:00:00:80", "dev", "dpa", "nud", "permanent")
	nstest.Run(t, ns, "ip", "neigh", "add", "2001:db8:200::80", "lladdr", "02:00:00:00:06:80", "dev", "dpa", "nud", "permanent")

	r := ResolverIn(t, ns, "dpa")
	events := make(chan netlink.NeighUpdate, 256)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	if err := ns.Do(func() error { return netlink.NeighSubscribe(events, done) }); err != nil {
		t.Fatal(err)
	}
	r.followNeighbours()
	go func() {
		for u := range events {
			r.neighbourEvent(u)
		}
	}()

	resolve := func(dst string) dataplane.Route { return ResolveAddr(r, netip.MustParseAddr(dst)) }
	mac := func(s string) [6]byte {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return [6]byte(m)
	}
	// eventually waits until dst resolves as wanted (events are applied
	// asynchronously).
	eventually := func(dst string, v dataplane.Verdict, hw string) {
		t.Helper()
		var got dataplane.Route
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if got = resolve(dst); got.Verdict == v && (hw == "" || got.NextHop == mac(hw)) {
				return
			}
		}
		t.Fatalf("%s: %v via %x, want %v via %s", dst, got.Verdict, got.NextHop, v, hw)
	}

	eventually("203.0.113.80", dataplane.Forwarded, "02:00:00:00:00:80")
	eventually("198.51.100.7", dataplane.Forwarded, "02:00:00:00:00:01") // through the gateway's MAC
	eventually("2001:db8:200::80", dataplane.Forwarded, "02:00:00:00:06:80")
	for i := 0; i < 50; i++ {
		resolve("203.0.113.99") // no neighbour: each miss asks the kernel, never dumps
		resolve("198.51.100.7")
	}
	nstest.Run(t, ns, "ip", "neigh", "replace", "203.0.113.80", "lladdr", "02:00:00:00:00:81", "dev", "dpa", "nud", "permanent")
	eventually("203.0.113.80", dataplane.Forwarded, "02:00:00:00:00:81")
	nstest.Run(t, ns, "ip", "neigh", "del", "203.0.113.80", "dev", "dpa")
	eventually("203.0.113.80", dataplane.NoNeighbour, "")
	nstest.Run(t, ns, "ip", "neigh", "replace", "203.0.113.99", "lladdr", "02:00:00:00:00:99", "dev", "dpa", "nud", "permanent")
	eventually("203.0.113.99", dataplane.Forwarded, "02:00:00:00:00:99")

	r.mu.Lock()
	dumps := r.dumps
	r.mu.Unlock()
	if dumps != 1 {
		t.Errorf("%d neighbour dumps while following the events, want 1", dumps)
	}

	// Not following (the events stopped): every miss reads the table.
	r.unfollowNeighbours()
	resolve("203.0.113.99")
	resolve("203.0.113.99")
	r.mu.Lock()
	dumps = r.dumps
	r.mu.Unlock()
	if dumps != 3 {
		t.Errorf("%d neighbour dumps after two lookups unfollowed, want 3", dumps)
	}
}
