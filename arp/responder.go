// Package arp is the control path's neighbour responder: it answers ARP
// requests and IPv6 neighbour solicitations for an interface's cluster
// addresses with the cluster MAC, announces them (gratuitous ARP,
// unsolicited neighbour advertisements), and joins the cluster multicast
// MAC on the interface. It replaces the classic recipe's `ip maddr add`
// and arptables mangle rules.
//
// Replies carry the cluster MAC inside ARP (sender hardware address) and
// ND (target link-layer address option); the Ethernet source stays the
// node's own MAC, because bridges and switches drop frames whose source is
// a multicast address. Every node sends the same ARP/ND payload.
//
// The kernel must never answer for a cluster address with the node's own
// MAC: in gateway mode the cluster addresses are simply not assigned to
// the interface, and Start refuses to run if one is.
//
// A Responder runs one goroutine per interface; its methods are safe for
// concurrent use.
package arp

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
)

// Config is one interface's cluster addresses.
type Config struct {
	Interface  string
	ClusterMAC net.HardwareAddr
	IPv4, IPv6 []netip.Addr
	// NDMAC, if set, is the link-layer address advertised for the IPv6
	// cluster addresses (e.g. a 33:33:... IPv6 multicast MAC); default
	// ClusterMAC. The dataplane must then accept frames to it too.
	NDMAC net.HardwareAddr
	// Router sets the R flag of neighbour advertisements: the cluster
	// address is the hosts' router (gateway mode).
	Router bool
	// RateLimit bounds replies per second (default 1000, burst 200);
	// excess requests are dropped and counted.
	RateLimit int
	Logger    *slog.Logger
}

// Stats are the responder's counters for one interface.
type Stats struct {
	ARPRequests   uint64 // requests for a cluster address
	ARPReplies    uint64
	NSRequests    uint64 // solicitations for a cluster address
	NAReplies     uint64
	Announcements uint64 // gratuitous ARP + unsolicited NA sent
	RateLimited   uint64 // requests dropped by the rate limit
	Ignored       uint64 // ARP/ND for other addresses (the kernel's business)
	Errors        uint64 // send failures
	// SocketDrops are ARP/ND frames the kernel dropped before the
	// responder read them, because the socket's receive buffer was full
	// (a flood faster than the responder): PACKET_STATISTICS tp_drops,
	// accumulated (reading the kernel's counter resets it).
	SocketDrops uint64
}

// Responder answers for one interface.
type Responder struct {
	cfg     Config
	fd      int
	ifindex int
	ownMAC  net.HardwareAddr
	log     *slog.Logger
	done    chan struct{}
	wg      sync.WaitGroup

	arpReq, arpRep, nsReq, naRep, ann, limited, ignored, errs atomic.Uint64

	mu     sync.Mutex
	tokens float64
	last   time.Time

	// dropsMu guards drops and the fd against Close while the kernel's
	// drop counter is read.
	dropsMu  sync.Mutex
	drops    uint64
	dropsErr bool // a failed read was logged
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// filter lets through ARP and ICMPv6 neighbour solicitations (no
// extension headers: NS carries none).
func filter() ([]unix.SockFilter, error) {
	return bpfutil.SocketFilter([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0806, SkipTrue: 5},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x86dd, SkipTrue: 5},
		bpf.LoadAbsolute{Off: 20, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 58, SkipTrue: 3},
		bpf.LoadAbsolute{Off: 54, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 135, SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
}

// SolicitedNodeMAC is the multicast MAC of an IPv6 address's
// solicited-node group (33:33:ff + its last three bytes).
func SolicitedNodeMAC(a netip.Addr) net.HardwareAddr {
	b := a.As16()
	return net.HardwareAddr{0x33, 0x33, 0xff, b[13], b[14], b[15]}
}

// SolicitedNodeAddr is the solicited-node multicast address of a.
func SolicitedNodeAddr(a netip.Addr) netip.Addr {
	b := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
}

// Start opens the responder on cfg.Interface (call it with the thread in
// the interface's network namespace), joins the multicast MACs, sends the
// announcements and starts answering.
func Start(cfg Config) (r *Responder, err error) {
	if len(cfg.ClusterMAC) != 6 {
		return nil, fmt.Errorf("arp %s: cluster MAC %q: want 6 bytes", cfg.Interface, cfg.ClusterMAC)
	}
	if cfg.NDMAC == nil {
		cfg.NDMAC = cfg.ClusterMAC
	}
	if cfg.RateLimit <= 0 {
		cfg.RateLimit = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, a := range cfg.IPv4 {
		if !a.Is4() {
			return nil, fmt.Errorf("arp %s: %s is not an IPv4 address", cfg.Interface, a)
		}
	}
	for _, a := range cfg.IPv6 {
		if !a.Is6() || a.Is4In6() {
			return nil, fmt.Errorf("arp %s: %s is not an IPv6 address", cfg.Interface, a)
		}
	}
	link, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("arp: interface %s: %w", cfg.Interface, err)
	}
	if err := notAssigned(link, cfg); err != nil {
		return nil, err
	}
	r = &Responder{cfg: cfg, ifindex: link.Attrs().Index, ownMAC: link.Attrs().HardwareAddr, log: cfg.Logger,
		done: make(chan struct{}), tokens: float64(min(cfg.RateLimit, 200)), last: time.Now(), fd: -1}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if r.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL))); err != nil {
		return r, fmt.Errorf("arp %s: packet socket: %w (needs CAP_NET_RAW)", cfg.Interface, err)
	}
	f, err := filter()
	if err != nil {
		return r, err
	}
	if err := unix.SetsockoptSockFprog(r.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}); err != nil {
		return r, fmt.Errorf("arp %s: filter: %w", cfg.Interface, err)
	}
	unix.SetsockoptInt(r.fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	if err := unix.Bind(r.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: r.ifindex}); err != nil {
		return r, fmt.Errorf("arp %s: bind: %w", cfg.Interface, err)
	}
	// Multicast membership (`ip maddr add`), dropped with the socket.
	macs := []net.HardwareAddr{cfg.ClusterMAC}
	if cfg.NDMAC.String() != cfg.ClusterMAC.String() {
		macs = append(macs, cfg.NDMAC)
	}
	for _, a := range cfg.IPv6 {
		macs = append(macs, SolicitedNodeMAC(a))
	}
	for _, m := range macs {
		mreq := unix.PacketMreq{Ifindex: int32(r.ifindex), Type: unix.PACKET_MR_MULTICAST, Alen: 6}
		copy(mreq.Address[:], m)
		if err := unix.SetsockoptPacketMreq(r.fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
			return r, fmt.Errorf("arp %s: join multicast %s: %w", cfg.Interface, m, err)
		}
	}
	// A receive timeout lets the loop notice Close.
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	unix.SetsockoptTimeval(r.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	r.Announce()
	r.wg.Add(1)
	go r.loop()
	r.log.Debug("neighbour responder started", "interface", cfg.Interface, "cluster_mac", cfg.ClusterMAC.String(),
		"ipv4", cfg.IPv4, "ipv6", cfg.IPv6)
	return r, nil
}

// notAssigned refuses cluster addresses that the kernel owns: it would
// answer for them with the node's own MAC.
func notAssigned(link netlink.Link, cfg Config) error {
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("arp %s: list addresses: %w", cfg.Interface, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		for _, c := range append(append([]netip.Addr(nil), cfg.IPv4...), cfg.IPv6...) {
			if c == ip {
				return fmt.Errorf("arp %s: cluster address %s is assigned to the interface, so the kernel would answer for it with the node's own MAC: remove it (ip addr del %s dev %s); xdpcluster answers for it", cfg.Interface, c, a.IPNet, cfg.Interface)
			}
		}
	}
	return nil
}

// readDrops adds the kernel's count of frames dropped at the socket since
// the last read (the read resets it) and returns the total.
func (r *Responder) readDrops() uint64 {
	r.dropsMu.Lock()
	defer r.dropsMu.Unlock()
	if r.fd >= 0 {
		st, err := unix.GetsockoptTpacketStats(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err == nil {
			r.drops += uint64(st.Drops)
		} else if !r.dropsErr {
			r.dropsErr = true
			r.log.Warn("neighbour responder: cannot read socket drop statistics", "interface", r.cfg.Interface, "error", err)
		}
	}
	return r.drops
}

func (r *Responder) loop() {
	defer r.wg.Done()
	buf := make([]byte, 2048)
	// The kernel's counter is 32 bits: fold it in every second even when
	// nobody scrapes.
	lastDrops := time.Now()
	for {
		if now := time.Now(); now.Sub(lastDrops) >= time.Second {
			lastDrops = now
			r.readDrops()
		}
		select {
		case <-r.done:
			return
		default:
		}
		n, _, err := unix.Recvfrom(r.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			select {
			case <-r.done:
				return
			default:
			}
			r.log.Warn("neighbour responder receive failed", "interface", r.cfg.Interface, "error", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		r.handle(buf[:n])
	}
}

// allow takes a token from the rate limit's bucket.
func (r *Responder) allow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	burst := float64(min(r.cfg.RateLimit, 200))
	r.tokens = min(burst, r.tokens+now.Sub(r.last).Seconds()*float64(r.cfg.RateLimit))
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}

func (r *Responder) handle(frame []byte) {
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth == nil {
		return
	}
	if a, ok := pkt.Layer(layers.LayerTypeARP).(*layers.ARP); ok {
		if a.Operation != layers.ARPRequest || len(a.DstProtAddress) != 4 || len(a.SourceHwAddress) != 6 ||
			bytes.Equal(a.SourceProtAddress, a.DstProtAddress) || // a gratuitous ARP (another node announcing)
			net.HardwareAddr(a.SourceHwAddress).String() == r.cfg.ClusterMAC.String() {
			r.ignored.Add(1)
			return
		}
		target := netip.AddrFrom4([4]byte(a.DstProtAddress))
		if !contains(r.cfg.IPv4, target) {
			r.ignored.Add(1)
			return
		}
		r.arpReq.Add(1)
		if !r.allow() {
			r.limited.Add(1)
			return
		}
		r.send(r.arpFrame(layers.ARPReply, net.HardwareAddr(a.SourceHwAddress), target, a.SourceHwAddress, a.SourceProtAddress), &r.arpRep)
		return
	}
	ip6, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	ns, _ := pkt.Layer(layers.LayerTypeICMPv6NeighborSolicitation).(*layers.ICMPv6NeighborSolicitation)
	if ip6 == nil || ns == nil || ip6.HopLimit != 255 {
		r.ignored.Add(1)
		return
	}
	target, ok := netip.AddrFromSlice(ns.TargetAddress)
	if !ok || !contains(r.cfg.IPv6, target) {
		r.ignored.Add(1)
		return
	}
	r.nsReq.Add(1)
	if !r.allow() {
		r.limited.Add(1)
		return
	}
	src, _ := netip.AddrFromSlice(ip6.SrcIP)
	dstMAC := eth.SrcMAC
	for _, o := range ns.Options {
		if o.Type == layers.ICMPv6OptSourceAddress && len(o.Data) == 6 {
			dstMAC = net.HardwareAddr(o.Data)
		}
	}
	solicited := true
	dst := src
	if src.IsUnspecified() { // duplicate address detection: answer to all nodes
		dst, solicited = netip.MustParseAddr("ff02::1"), false
		dstMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	}
	r.send(r.naFrame(target, dst, dstMAC, solicited), &r.naRep)
}

func contains(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// arpFrame builds an ARP packet whose sender is the cluster address at the
// cluster MAC, from the node's own MAC.
func (r *Responder) arpFrame(op uint16, ethDst net.HardwareAddr, cluster netip.Addr, tha, tpa []byte) []byte {
	c := cluster.As4()
	return serialize(
		&layers.Ethernet{SrcMAC: r.ownMAC, DstMAC: ethDst, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: op, SourceHwAddress: r.cfg.ClusterMAC, SourceProtAddress: c[:], DstHwAddress: tha, DstProtAddress: tpa})
}

// naFrame builds a neighbour advertisement for target at the ND MAC.
func (r *Responder) naFrame(target, dst netip.Addr, dstMAC net.HardwareAddr, solicited bool) []byte {
	var flags uint8 = 0x20 // override
	if solicited {
		flags |= 0x40
	}
	if r.cfg.Router {
		flags |= 0x80
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: target.AsSlice(), DstIP: dst.AsSlice()}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborAdvertisement, 0)}
	icmp.SetNetworkLayerForChecksum(ip)
	na := &layers.ICMPv6NeighborAdvertisement{Flags: flags, TargetAddress: target.AsSlice(),
		Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: r.cfg.NDMAC}}}
	return serialize(&layers.Ethernet{SrcMAC: r.ownMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv6}, ip, icmp, na)
}

func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		return nil
	}
	return buf.Bytes()
}

func (r *Responder) send(frame []byte, counter *atomic.Uint64) {
	if frame == nil {
		r.errs.Add(1)
		return
	}
	sa := &unix.SockaddrLinklayer{Ifindex: r.ifindex, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	if err := unix.Sendto(r.fd, frame, 0, sa); err != nil {
		r.errs.Add(1)
		return
	}
	counter.Add(1)
}

// Announce sends a gratuitous ARP for every cluster IPv4 address and an
// unsolicited neighbour advertisement for every cluster IPv6 address, so
// peers that cached another MAC learn the cluster MAC at once.
func (r *Responder) Announce() {
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	for _, a := range r.cfg.IPv4 {
		b := a.As4()
		r.send(r.arpFrame(layers.ARPRequest, bcast, a, make([]byte, 6), b[:]), &r.ann)
	}
	for _, a := range r.cfg.IPv6 {
		r.send(r.naFrame(a, netip.MustParseAddr("ff02::1"), net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, false), &r.ann)
	}
}

// Stats returns the counters.
func (r *Responder) Stats() Stats {
	return Stats{ARPRequests: r.arpReq.Load(), ARPReplies: r.arpRep.Load(), NSRequests: r.nsReq.Load(), NAReplies: r.naRep.Load(),
		Announcements: r.ann.Load(), RateLimited: r.limited.Load(), Ignored: r.ignored.Load(), Errors: r.errs.Load(),
		SocketDrops: r.readDrops()}
}

// Interface is the interface's name.
func (r *Responder) Interface() string { return r.cfg.Interface }

// Close stops answering and leaves the multicast groups.
func (r *Responder) Close() error {
	select {
	case <-r.done:
		return nil
	default:
		close(r.done)
	}
	r.wg.Wait()
	r.readDrops() // keep the last drops in Stats
	r.dropsMu.Lock()
	defer r.dropsMu.Unlock()
	if r.fd >= 0 {
		err := unix.Close(r.fd)
		r.fd = -1
		return err
	}
	return nil
}
