package backend

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/xdpcluster/xdpcluster/arp"
	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/node"
)

// Config configures Start.
type Config struct {
	Interfaces []node.Interface
	Match      cluster.Match
	Logger     *slog.Logger
	// StateDir, if set, is where Start records each change it makes to
	// the host before making it (backend-net<netns inode>.json), and
	// takes the lock of the namespace's lo: the next start undoes what a
	// run that did not stop cleanly left behind.
	StateDir string
}

// Node is a running back-end server: our program on each data interface,
// the cluster addresses on lo, the ARP/ND responders. Its methods may be
// called concurrently once Start has returned it.
type Node struct {
	// Set by Start, one per data interface, and never changed after.
	programs   []*Program
	responders []*arp.Responder
	modes      []node.Mode
	names      []string
	ifindexes  []int

	mu      sync.Mutex
	match   cluster.Match
	handle  *netlink.Handle // of the server's namespace, for Close
	lo      netlink.Link
	added   []netlink.Addr // cluster addresses Start put on lo
	sysctls map[string]sysctl
	// The record of our changes (see Config.StateDir).
	statePath string
	lock      *os.File
	rec       changes
	keepState bool // a previous run's changes could not all be undone
	once      sync.Once
	err       error
}

// sysctl is a sysctl file opened in the server's namespace and its old
// value, so Close restores it from any thread.
type sysctl struct {
	f   *os.File
	old string
}

// Start sets the node up. Call it with the thread in the server's network
// namespace. The kernel must serve the cluster addresses but never answer
// ARP/ND for them with its own MAC, so they go on lo, and on each data
// interface arp_ignore=1 (answer only for addresses of that interface) and
// arp_announce=2 (never use them as the source of its own ARP requests);
// for IPv6 the kernel answers solicitations only for addresses of the
// receiving interface. Close undoes all of it. The addresses it adds are
// marked ours (AddrProto), and with cfg.StateDir each change is recorded
// before it is made, so that a later start undoes a killed run's changes.
func Start(cfg Config) (n *Node, err error) {
	if err := node.Validate(cfg.Interfaces); err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	if err := cfg.Match.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	n = &Node{match: cfg.Match, sysctls: map[string]sysctl{}}
	defer func() {
		if err != nil {
			n.Close()
			n = nil
		}
	}()
	if n.handle, err = netlink.NewHandle(); err != nil {
		return n, fmt.Errorf("backend: netlink: %w", err)
	}
	lo, err := n.handle.LinkByName("lo")
	if err != nil {
		return n, fmt.Errorf("backend: lo: %w", err)
	}
	n.lo = lo
	if cfg.StateDir != "" {
		var ours []netip.Addr
		var ifaces []string
		for _, ic := range cfg.Interfaces {
			ours = append(ours, ic.Addrs()...)
			ifaces = append(ifaces, ic.Name)
		}
		if err := n.openState(cfg.StateDir, ours, ifaces, log); err != nil {
			return n, err
		}
	}
	// What is on lo now is the operator's: ours, marked, were removed by
	// openState if a previous run left them.
	have, _ := n.handle.AddrList(lo, netlink.FAMILY_ALL)
	for _, ic := range cfg.Interfaces {
		link, err := n.handle.LinkByName(ic.Name)
		if err != nil {
			return n, fmt.Errorf("backend: interface %s: %w", ic.Name, err)
		}
		for _, kv := range arpSysctls {
			if err := n.setSysctl(arpSysctlPath(ic.Name, kv[0]), kv[1]); err != nil {
				return n, err
			}
		}
		for _, a := range ic.Addrs() {
			if onLo(have, a) {
				continue
			}
			bits := 32
			if a.Is6() {
				bits = 128
			}
			p := netip.PrefixFrom(a, bits)
			n.rec.Addresses = append(n.rec.Addresses, p.String())
			if err := n.saveState(); err != nil {
				return n, err
			}
			if err := addMarked(lo.Attrs().Index, p); err != nil {
				return n, fmt.Errorf("backend: add cluster address %s to lo: %w", a, err)
			}
			addr := netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
			n.added = append(n.added, addr)
		}
		p, err := NewProgram(ic.ClusterMAC, link.Attrs().HardwareAddr, cfg.Match)
		if err != nil {
			return n, fmt.Errorf("backend: interface %s: %w", ic.Name, err)
		}
		n.programs = append(n.programs, p)
		n.names = append(n.names, ic.Name)
		n.ifindexes = append(n.ifindexes, link.Attrs().Index)
		mode, err := p.Attach(link.Attrs().Index, bpfutil.ModeAuto)
		if err != nil {
			return n, err
		}
		n.modes = append(n.modes, node.Mode{Role: node.RoleBackend, XDP: mode.String(), IO: node.None, Copy: node.None})
		r, err := arp.Start(arp.Config{Interface: ic.Name, ClusterMAC: ic.ClusterMAC, NDMAC: ic.NDMAC, IPv4: ic.IPv4, IPv6: ic.IPv6, Logger: log})
		if err != nil {
			return n, err
		}
		n.responders = append(n.responders, r)
	}
	return n, nil
}

func onLo(have []netlink.Addr, a netip.Addr) bool {
	for _, h := range have {
		if ip, ok := netip.AddrFromSlice(h.IP); ok && ip.Unmap() == a {
			return true
		}
	}
	return false
}

// setSysctl writes a sysctl of the calling thread's namespace, keeping the
// file open and the old value for Close.
func (n *Node) setSysctl(path, value string) error {
	if _, ok := n.sysctls[path]; ok {
		return nil
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("backend: read %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("backend: open %s: %w (needs CAP_NET_ADMIN)", path, err)
	}
	sc := sysctl{f: f, old: strings.TrimSpace(string(old))}
	if n.rec.Sysctls != nil { // recorded before it is changed
		n.rec.Sysctls[path] = sc.old
		if err := n.saveState(); err != nil {
			f.Close()
			return err
		}
	}
	n.sysctls[path] = sc
	if _, err := f.WriteString(value); err != nil {
		return fmt.Errorf("backend: set %s=%s: %w (needs CAP_NET_ADMIN)", path, value, err)
	}
	return nil
}

// Match returns the match in force.
func (n *Node) Match() cluster.Match {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.match
}

// SetMatch changes the decision of every interface's program at once.
// As for the gateway, only the node mask and invert flag may change at
// run time (cluster.Match.CanChangeTo): the node count, seed and hash mode
// are the whole cluster's, and a node changing them alone would serve a
// share other nodes serve too, or nobody's.
func (n *Node) SetMatch(m cluster.Match) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.match.CanChangeTo(m); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	for _, p := range n.programs {
		if err := p.SetMatch(m); err != nil {
			return err
		}
	}
	n.match = m
	return nil
}

// Interfaces names the data interfaces, in the order of Config.Interfaces.
// The slice is the caller's.
func (n *Node) Interfaces() []string { return slices.Clone(n.names) }

// Programs returns the XDP program of each data interface, in the order
// of Interfaces. The slice is the caller's; a Program is safe for
// concurrent use.
func (n *Node) Programs() []*Program { return slices.Clone(n.programs) }

// Responders returns the ARP/ND responders, one per data interface, in
// the order of Interfaces. The slice is the caller's; a Responder is safe
// for concurrent use.
func (n *Node) Responders() []*arp.Responder { return slices.Clone(n.responders) }

// Modes describes how each data interface runs (e.g. "backend xdp
// generic"), in the order of Interfaces. The slice is the caller's.
func (n *Node) Modes() []string { return node.Strings(n.modes) }

// InterfaceModes is Modes as structured values.
func (n *Node) InterfaceModes() []node.Mode { return slices.Clone(n.modes) }

// Close detaches the programs, stops the responders, removes the addresses
// it added to lo and restores the sysctls (through handles opened in the
// server's namespace, so from any thread). It may be called more than once.
func (n *Node) Close() error {
	n.once.Do(func() {
		var errs []error
		for _, r := range n.responders {
			errs = append(errs, r.Close())
		}
		for _, p := range n.programs {
			errs = append(errs, p.Close())
		}
		for _, a := range n.added {
			if err := n.handle.AddrDel(n.lo, &a); err != nil {
				errs = append(errs, fmt.Errorf("remove %s from lo: %w", a.IPNet, err))
			}
		}
		for path, sc := range n.sysctls {
			if _, err := sc.f.WriteAt([]byte(sc.old), 0); err != nil {
				errs = append(errs, fmt.Errorf("restore %s: %w", path, err))
			}
			sc.f.Close()
		}
		if n.handle != nil {
			n.handle.Close()
		}
		n.err = errors.Join(errs...)
		n.closeState(n.err == nil)
	})
	return n.err
}

// Health reports whether the node can serve: nil when every data
// interface is up and still runs our XDP program, else an error saying
// what is wrong. It asks the kernel each time.
func (n *Node) Health() error {
	n.mu.Lock()
	h := n.handle
	n.mu.Unlock()
	if h == nil {
		return errors.New("the node is stopped")
	}
	for i, p := range n.programs {
		if err := bpfutil.CheckAttached(h, n.ifindexes[i], p.Prog); err != nil {
			return fmt.Errorf("%s: %w", n.names[i], err)
		}
	}
	return nil
}
