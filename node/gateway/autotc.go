package gateway

import (
	"github.com/vishvananda/netlink"

	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
)

// AutoTCReason is why dataplane.io auto chooses raw sockets with the fast
// path in tc on veth, for the log and the docs.
const AutoTCReason = "on veth every XDP program, generic or native, first copies each cloned frame " +
	"(every frame a bridge floods, every TCP segment a local stack sends); a tc program reads it in place " +
	"and copies only the header of the frames it forwards"

// autoTC is dataplane.io auto's first choice where the fast path is on and
// every data interface is a veth, with xdp_mode auto, GRO off (a veth's
// default: raw sockets need it off, and a veth fed XDP frames by its peer
// receives them only with it on, so GRO on is left alone, with AF_XDP)
// and not the port of a bridge or bond: raw sockets with the fast path in tc
// (AutoTCReason; measured in docs/performance.md, "The fast path in tc").
// Elsewhere, or if the tc program or the sockets cannot be set up (logged),
// it returns nil, with nothing left open, and auto goes on with AF_XDP and
// the fast path in XDP.
func (g *Gateway) autoTC(h *netlink.Handle, cfg Config) []dataplane.Iface {
	if g.flows == nil || cfg.XDPMode != bpfutil.ModeAuto {
		return nil
	}
	for _, ifindex := range g.links {
		link, err := h.LinkByIndex(ifindex)
		if err != nil || !bpfutil.AutoGeneric(link) {
			return nil
		}
	}
	if bridgePort(h, cfg, g.links) != "" {
		return nil
	}
	for _, ic := range cfg.Interfaces {
		if !g.openEthtool(ic.Name) {
			return nil
		}
		on, err := groOn(g.ethtool, ic.Name)
		if err != nil {
			g.log.Info("dataplane.io auto: AF_XDP on veth "+ic.Name+": its GRO cannot be read, and raw sockets (the choice on veth) would turn it off", "interface", ic.Name, "error", err)
			return nil
		}
		if on {
			g.log.Info("dataplane.io auto: AF_XDP on veth "+ic.Name+": its GRO is on, which raw sockets (the choice on veth) would turn off, "+
				"and a veth fed XDP frames by its peer receives them only with GRO on", "interface", ic.Name)
			return nil
		}
	}
	if err := g.attachTC(cfg); err != nil {
		g.log.Info("dataplane.io auto: the tc fast path cannot be set up on veth; using AF_XDP with the fast path in XDP", "error", err)
		return nil
	}
	ifaces, err := g.openPacket(h, cfg)
	if err != nil {
		g.log.Warn("dataplane.io auto: raw sockets cannot be opened on veth; using AF_XDP", "error", err)
		g.closePorts()
		for _, err := range g.groBackOn() {
			g.log.Warn("dataplane.io auto: raw sockets", "error", err)
		}
		return nil
	}
	g.log.Info("dataplane.io auto: raw sockets with the fast path in tc on veth (io: afxdp keeps AF_XDP)", "why", AutoTCReason)
	return ifaces
}
