package node

import (
	"fmt"
	"strconv"
)

// The values of Mode's fields.
const (
	RoleGateway = "gateway"
	RoleBackend = "backend"

	None = "none" // XDP, IO, Copy: not used by this interface

	IOAFXDP    = "afxdp"    // AF_XDP sockets
	IOAFPacket = "afpacket" // raw (AF_PACKET) sockets

	CopyZero = "zerocopy" // AF_XDP zero-copy: the driver fills user-space frames
	Copy     = "copy"     // the kernel copies every frame to user space
)

// Mode is how one data interface runs, as structured values (the
// xdpcluster_interface_info labels); String gives the one-line form the
// logs and `ctl status` show.
type Mode struct {
	Role string // RoleGateway or RoleBackend
	// XDP is the XDP program's attach mode: "native" or "generic"; None
	// without a program (the gateway's raw-socket backend).
	XDP string
	// IO is how frames reach the workers: IOAFXDP or IOAFPacket; None on
	// a back-end node (its XDP program decides alone).
	IO string
	// Copy is CopyZero or Copy with AF_XDP, Copy with raw sockets, None
	// on a back-end node.
	Copy string
	// Queues is the number of receive queues the workers read (0 on a
	// back-end node); with raw sockets and the tc fast path, 2: one
	// socket per family.
	Queues int
	// TC: the fast path runs as a tc program (raw sockets only).
	TC bool
}

// Strings returns each mode's String, in order, in a new slice.
func Strings(ms []Mode) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.String()
	}
	return out
}

// String returns the mode as the logs and `ctl status` show it: "xdp
// native, afxdp copy, 2 queue(s)", "afpacket, 1 queue", "afpacket, 2
// sockets (IPv4, IPv6), fast path in tc" or "backend xdp generic".
func (m Mode) String() string {
	switch {
	case m.Role == RoleBackend:
		return "backend xdp " + m.XDP
	case m.IO == IOAFPacket && m.TC:
		return "afpacket, " + strconv.Itoa(m.Queues) + " sockets (IPv4, IPv6), fast path in tc"
	case m.IO == IOAFPacket:
		return "afpacket, " + strconv.Itoa(m.Queues) + " queue"
	}
	cp := "copy"
	if m.Copy == CopyZero {
		cp = "zero-copy"
	}
	return fmt.Sprintf("xdp %s, %s %s, %d queue(s)", m.XDP, m.IO, cp, m.Queues)
}
