package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Cluster is a test, demo and benchmark topology: a client namespace and a
// server namespace, each joined through its own Linux bridge (the switch;
// multicast snooping off, so frames to the cluster MACs flood) to every
// node namespace. Each node has two interfaces, "front" (client side) and
// "back" (server side).
//
//	client (eth0) -- brf --+-- (front) node1 (back) --+-- brb -- (eth0) server
//	                       +-- (front) node2 (back) --+
//	                       +-- ...                  --+
//
// The nodes also share a management network, a third bridge (brm) that
// each node joins with its "mgmt" interface (Mgmt4: 192.0.2.11, .12, ...),
// for gossip and state resync; no data traffic crosses it.
type Cluster struct {
	Switch, Client, Server *NS
	Nodes                  []*NS

	FrontMAC, BackMAC net.HardwareAddr // the cluster MACs of each side

	ClusterFront4, ClusterBack4 netip.Addr // the cluster IPs
	ClusterFront6, ClusterBack6 netip.Addr
	Clients4, Clients6          []netip.Addr // the client's source addresses
	Server4, Server6            netip.Addr
	// Mgmt4 are the nodes' management addresses, by node (192.0.2.11+i/24
	// on each node's "mgmt"); MgmtPort(i) names node i's port on brm.
	Mgmt4 []netip.Addr
	// Static reports whether the client and server have static neighbour
	// entries for the cluster IPs (ClusterOptions.StaticNeighbours).
	Static bool

	all []*NS
}

// ClusterOptions size a Cluster.
type ClusterOptions struct {
	Nodes    int // default 3
	Clients4 int // IPv4 client addresses, default 20 (at most 200)
	Clients6 int // IPv6 client addresses, default 5
	// StaticNeighbours points the cluster IPs at the cluster MACs in the
	// client's and the server's neighbour tables (for dataplanes without
	// the ARP/ND control path).
	StaticNeighbours bool
}

// NewCluster builds the topology; Close removes it. prefix names the
// namespaces (each gets a random suffix).
func NewCluster(prefix string, o ClusterOptions) (c *Cluster, err error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Clients4 == 0 {
		o.Clients4 = 20
	}
	if o.Clients6 == 0 {
		o.Clients6 = 5
	}
	if o.Nodes > 32 || o.Clients4 > 200 || o.Clients6 > 200 {
		return nil, fmt.Errorf("cluster topology: at most 32 nodes and 200 clients per family")
	}
	c = &Cluster{
		FrontMAC:      net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x01, 0x01},
		BackMAC:       net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x01, 0x02},
		ClusterFront4: netip.MustParseAddr("198.51.100.1"),
		ClusterBack4:  netip.MustParseAddr("203.0.113.1"),
		ClusterFront6: netip.MustParseAddr("2001:db8:100::1"),
		ClusterBack6:  netip.MustParseAddr("2001:db8:200::1"),
		Server4:       netip.MustParseAddr("203.0.113.80"),
		Server6:       netip.MustParseAddr("2001:db8:200::80"),
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	mk := func(name string) (*NS, error) {
		ns, err := Create(prefix + "-" + name)
		if err == nil {
			c.all = append(c.all, ns)
		}
		return ns, err
	}
	if c.Switch, err = mk("sw"); err != nil {
		return c, err
	}
	if c.Client, err = mk("cli"); err != nil {
		return c, err
	}
	if c.Server, err = mk("srv"); err != nil {
		return c, err
	}
	for i := 1; i <= o.Nodes; i++ {
		ns, err := mk(fmt.Sprintf("n%d", i))
		if err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, ns)
	}
	type step struct {
		ns   *NS
		args []string
	}
	var steps []step
	run := func(ns *NS, args ...string) { steps = append(steps, step{ns, args}) }
	sw := c.Switch
	run(sw, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	run(sw, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
	for _, br := range []string{"brf", "brb", "brm"} {
		run(sw, "ip", "link", "add", br, "type", "bridge", "mcast_snooping", "0")
		run(sw, "ip", "link", "set", br, "up")
	}
	plug := func(ns *NS, dev, peer, bridge string) {
		run(ns, "ip", "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", sw.Name)
		run(sw, "ip", "link", "set", peer, "master", bridge, "up")
		run(ns, "ip", "link", "set", dev, "up")
	}
	plug(c.Client, "eth0", "swc", "brf")
	plug(c.Server, "eth0", "sws", "brb")
	// veth hands frames over with checksums left to "offload" (partial);
	// a real wire carries complete ones, which a user-space forwarder
	// needs. Make the endpoints compute them in full.
	run(c.Client, "ethtool", "-K", "eth0", "tx", "off")
	run(c.Server, "ethtool", "-K", "eth0", "tx", "off")
	for i := 0; i < o.Clients4; i++ {
		a := netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})
		c.Clients4 = append(c.Clients4, a)
		run(c.Client, "ip", "addr", "add", a.String()+"/24", "dev", "eth0")
	}
	for i := 0; i < o.Clients6; i++ {
		a := netip.MustParseAddr(fmt.Sprintf("2001:db8:100::%x", 0x10+i))
		c.Clients6 = append(c.Clients6, a)
		run(c.Client, "ip", "addr", "add", a.String()+"/64", "dev", "eth0", "nodad")
	}
	run(c.Client, "ip", "route", "add", "203.0.113.0/24", "via", c.ClusterFront4.String(), "dev", "eth0")
	run(c.Client, "ip", "-6", "route", "add", "2001:db8:200::/64", "via", c.ClusterFront6.String(), "dev", "eth0")
	run(c.Server, "ip", "addr", "add", c.Server4.String()+"/24", "dev", "eth0")
	run(c.Server, "ip", "addr", "add", c.Server6.String()+"/64", "dev", "eth0", "nodad")
	run(c.Server, "ip", "route", "add", "198.51.100.0/24", "via", c.ClusterBack4.String(), "dev", "eth0")
	run(c.Server, "ip", "-6", "route", "add", "2001:db8:100::/64", "via", c.ClusterBack6.String(), "dev", "eth0")
	c.Static = o.StaticNeighbours
	if o.StaticNeighbours {
		for _, n := range []struct {
			ns  *NS
			ip  netip.Addr
			mac net.HardwareAddr
		}{{c.Client, c.ClusterFront4, c.FrontMAC}, {c.Client, c.ClusterFront6, c.FrontMAC},
			{c.Server, c.ClusterBack4, c.BackMAC}, {c.Server, c.ClusterBack6, c.BackMAC}} {
			run(n.ns, "ip", "neigh", "replace", n.ip.String(), "lladdr", n.mac.String(), "dev", "eth0", "nud", "permanent")
		}
	}
	for i, ns := range c.Nodes {
		plug(ns, "front", fmt.Sprintf("swf%d", i+1), "brf")
		plug(ns, "back", fmt.Sprintf("swb%d", i+1), "brb")
		// A gateway node forwards: the XDP fast path's route lookup
		// (bpf_fib_lookup) routes only where the kernel would. And a
		// frame the fast path redirects into a veth reaches the other
		// end only if that end runs NAPI, which GRO turns on.
		run(ns, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding=1")
		run(sw, "ethtool", "-K", fmt.Sprintf("swf%d", i+1), "gro", "on")
		run(sw, "ethtool", "-K", fmt.Sprintf("swb%d", i+1), "gro", "on")
		run(ns, "ip", "addr", "add", fmt.Sprintf("198.51.100.%d/24", 2+i), "dev", "front")
		run(ns, "ip", "addr", "add", fmt.Sprintf("203.0.113.%d/24", 2+i), "dev", "back")
		run(ns, "ip", "addr", "add", fmt.Sprintf("2001:db8:100::%x/64", 2+i), "dev", "front", "nodad")
		run(ns, "ip", "addr", "add", fmt.Sprintf("2001:db8:200::%x/64", 2+i), "dev", "back", "nodad")
		plug(ns, "mgmt", c.MgmtPort(i), "brm")
		m := netip.AddrFrom4([4]byte{192, 0, 2, byte(11 + i)})
		c.Mgmt4 = append(c.Mgmt4, m)
		run(ns, "ip", "addr", "add", m.String()+"/24", "dev", "mgmt")
		run(ns, "ip", "link", "set", "lo", "up")
	}
	for _, s := range steps {
		if _, err := s.ns.Run(s.args[0], s.args[1:]...); err != nil {
			return c, err
		}
	}
	return c, nil
}

// MgmtPort is the name, in the switch namespace, of node i's (0-based)
// port on the management bridge: set it down to cut the node off the
// management network (a partition) while its data interfaces stay up.
func (c *Cluster) MgmtPort(i int) string { return fmt.Sprintf("swm%d", i+1) }

// ServerFor is the server address of a's family.
func (c *Cluster) ServerFor(a netip.Addr) netip.Addr {
	if a.Is6() {
		return c.Server6
	}
	return c.Server4
}

// Close deletes every namespace of the cluster (and so its interfaces).
func (c *Cluster) Close() error {
	var errs []error
	for i := len(c.all) - 1; i >= 0; i-- {
		errs = append(errs, c.all[i].Close())
	}
	c.all = nil
	return errors.Join(errs...)
}
