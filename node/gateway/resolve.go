package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/packet"
)

// NetlinkResolver answers routes from the kernel's routing and neighbour
// tables (so operators keep using `ip route` and `ip neigh`). When the next
// hop's MAC is unknown it asks the kernel to resolve it (NTF_USE) and
// reports NoNeighbour; the worker retries shortly. It is safe for
// concurrent use; each call costs a netlink round trip (the route lookup),
// which is why the workers cache its answers.
//
// The resolver keeps the data interfaces' neighbours in a map (next hop
// to MAC), filled from one neighbour dump. While it follows the kernel's
// neighbour events (followNeighbours, then each event to neighbourEvent:
// the Gateway does this) the map stays fresh and a miss costs one route
// lookup and a map read; otherwise every miss dumps the table again.
type NetlinkResolver struct {
	h      *netlink.Handle
	ifaces map[int]int // kernel link index -> dataplane interface index
	mu     sync.Mutex  // the handle, and the fields below

	neigh     map[neighKey][6]byte // usable neighbours of the data interfaces
	following bool                 // neighbour events keep neigh fresh
	stale     bool                 // neigh must be dumped again before use
	dumps     int                  // neighbour dumps made (for tests)
}

// neighKey is a neighbour: link and address (IPv4 unmapped).
type neighKey struct {
	link int
	ip   netip.Addr
}

// NewNetlinkResolver uses handle h (of the node's network namespace) and
// maps the kernel's link indexes to the dataplane's interfaces.
func NewNetlinkResolver(h *netlink.Handle, linkIndexes []int) *NetlinkResolver {
	r := &NetlinkResolver{h: h, ifaces: map[int]int{}, neigh: map[neighKey][6]byte{}, stale: true}
	for i, li := range linkIndexes {
		r.ifaces[li] = i
	}
	return r
}

// usable neighbour states.
const neighUsable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE |
	netlink.NUD_PERMANENT | netlink.NUD_NOARP

// Resolve implements dataplane.Resolver.
func (r *NetlinkResolver) Resolve(family packet.Family, dst [16]byte) dataplane.Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	ip := net.IP(dst[:16])
	fam := netlink.FAMILY_V6
	if family == packet.IPv4 {
		ip = net.IP(dst[:4])
		fam = netlink.FAMILY_V4
	}
	routes, err := r.h.RouteGet(ip)
	if err != nil || len(routes) == 0 {
		return dataplane.Route{Verdict: routeError(err)}
	}
	rt := routes[0]
	if v := routeType(rt.Type); v != dataplane.Forwarded {
		return dataplane.Route{Verdict: v}
	}
	idx, ok := r.ifaces[rt.LinkIndex]
	if !ok {
		return dataplane.Route{Verdict: dataplane.NoRoute} // not out of a data interface
	}
	nh := ip
	if rt.Gw != nil {
		nh = rt.Gw
	}
	if mac, ok := r.neighbour(rt.LinkIndex, nh); ok {
		return dataplane.Route{Iface: idx, Verdict: dataplane.Forwarded, NextHop: mac}
	}
	// Ask the kernel to resolve it; the packet is dropped meanwhile.
	r.h.NeighSet(&netlink.Neigh{LinkIndex: rt.LinkIndex, Family: fam, IP: nh, State: netlink.NUD_NONE, Flags: netlink.NTF_USE})
	return dataplane.Route{Iface: idx, Verdict: dataplane.NoNeighbour}
}

// neighbour returns the MAC of a usable neighbour (r.mu held), dumping the
// neighbour table first when the map is stale.
func (r *NetlinkResolver) neighbour(link int, ip net.IP) ([6]byte, bool) {
	k, ok := neighKeyOf(link, ip)
	if !ok {
		return [6]byte{}, false
	}
	if r.stale {
		r.dumps++
		if neighs, err := r.h.NeighList(0, netlink.FAMILY_ALL); err == nil {
			clear(r.neigh)
			for i := range neighs {
				r.apply(unix.RTM_NEWNEIGH, &neighs[i])
			}
			r.stale = !r.following
		}
	}
	mac, ok := r.neigh[k]
	return mac, ok
}

func neighKeyOf(link int, ip net.IP) (neighKey, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return neighKey{link, a.Unmap()}, ok
}

// apply records a neighbour message (r.mu held): a usable neighbour of a
// data interface is added or updated, anything else removed.
func (r *NetlinkResolver) apply(typ uint16, n *netlink.Neigh) {
	if _, ok := r.ifaces[n.LinkIndex]; !ok {
		return
	}
	k, ok := neighKeyOf(n.LinkIndex, n.IP)
	if !ok {
		return
	}
	if typ == unix.RTM_NEWNEIGH && n.State&neighUsable != 0 && len(n.HardwareAddr) == 6 {
		r.neigh[k] = [6]byte(n.HardwareAddr)
		return
	}
	delete(r.neigh, k)
}

// followNeighbours says that from now on every neighbour event of the
// namespace reaches neighbourEvent (call it once subscribed, before the
// first event is handled): the map is dumped once more, then kept fresh by
// the events alone.
func (r *NetlinkResolver) followNeighbours() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.following, r.stale = true, true
}

// unfollowNeighbours says the events stopped (the subscription ended):
// every miss dumps the table again.
func (r *NetlinkResolver) unfollowNeighbours() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.following, r.stale = false, true
}

// neighbourEvent applies one neighbour event to the map.
func (r *NetlinkResolver) neighbourEvent(u netlink.NeighUpdate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stale {
		r.apply(u.Type, &u.Neigh)
	}
}

// routeError names why the kernel's route lookup failed: the errno of a
// reject route (blackhole: EINVAL, unreachable: EHOSTUNREACH, prohibit:
// EACCES, as `ip route get` shows them), else no route (ENETUNREACH).
func routeError(err error) dataplane.Verdict {
	switch {
	case errors.Is(err, unix.EINVAL):
		return dataplane.RouteBlackhole
	case errors.Is(err, unix.EHOSTUNREACH):
		return dataplane.RouteUnreachable
	case errors.Is(err, unix.EACCES):
		return dataplane.RouteProhibit
	}
	return dataplane.NoRoute
}

// routeType is the verdict for a route of kernel type t: only unicast
// routes forward (ip_route_input_slow: local is received, broadcast is
// received unless bc_forwarding, any other type is a martian
// destination; there is no multicast routing here).
func routeType(t int) dataplane.Verdict {
	switch t {
	case unix.RTN_UNICAST:
		return dataplane.Forwarded
	case unix.RTN_LOCAL:
		return dataplane.Local
	case unix.RTN_BROADCAST:
		return dataplane.Broadcast
	case unix.RTN_MULTICAST:
		return dataplane.Multicast
	case unix.RTN_BLACKHOLE:
		return dataplane.RouteBlackhole
	case unix.RTN_UNREACHABLE:
		return dataplane.RouteUnreachable
	case unix.RTN_PROHIBIT:
		return dataplane.RouteProhibit
	}
	return dataplane.MartianDestination
}

// LocalAddrs lists the addresses of the node's network namespace (the
// kernel's own: a packet from one of them is a martian source).
func (r *NetlinkResolver) LocalAddrs() ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	list, err := r.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list the node's addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

// refreshLocal gives the workers the node's own addresses: the kernel's
// and the cluster addresses. Address changes also change the local
// routing table, so followKernel calls it on route events.
func (g *Gateway) refreshLocal() error {
	addrs, err := g.resolver.LocalAddrs()
	if err != nil {
		return err
	}
	all := append(addrs, g.clusterAddrs...)
	g.dp.SetLocalAddrs(all)
	// An IPv4 address that became the node's makes its connections'
	// packets martian; those the fast path carries never meet the
	// workers' check, so they leave the cache (and, their next packet
	// dropped by the workers, are never installed again).
	var added []netip.Addr
	for _, a := range all {
		if a.Is4() && !g.local4[a] {
			added = append(added, a)
		}
	}
	g.local4 = make(map[netip.Addr]bool, len(all))
	for _, a := range all {
		if a.Is4() {
			g.local4[a] = true
		}
	}
	if g.flows != nil && len(added) > 0 {
		if n, err := g.flows.PurgeSources(added); err != nil {
			g.log.Warn("fast path: connections from the node's new addresses not purged", "addresses", added, "error", err)
		} else if n > 0 {
			g.log.Info("fast path: purged connections from addresses that became the node's", "addresses", added, "entries", n)
		}
	}
	return nil
}

// kernelSender sends IP packets through raw sockets (the header included),
// so the kernel routes them, resolves the next hop and queues them
// meanwhile: the dataplane's slow path for packets whose next hop is not
// yet in the neighbour table. Open it in the node's namespace.
type kernelSender struct {
	fd4, fd6 int
	errors   atomic.Uint64
}

func newKernelSender() (*kernelSender, error) {
	fd4, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw IPv4 socket: %w", err)
	}
	fd6, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		unix.Close(fd4)
		return nil, fmt.Errorf("raw IPv6 socket: %w", err)
	}
	return &kernelSender{fd4: fd4, fd6: fd6}, nil
}

func (k *kernelSender) send(family packet.Family, ip []byte) {
	var err error
	if family == packet.IPv4 && len(ip) >= 20 {
		err = unix.Sendto(k.fd4, ip, 0, &unix.SockaddrInet4{Addr: [4]byte(ip[16:20])})
	} else if family == packet.IPv6 && len(ip) >= 40 {
		err = unix.Sendto(k.fd6, ip, 0, &unix.SockaddrInet6{Addr: [16]byte(ip[24:40])})
	}
	if err != nil {
		k.errors.Add(1)
	}
}

func (k *kernelSender) Close() error {
	return errors.Join(unix.Close(k.fd4), unix.Close(k.fd6))
}
