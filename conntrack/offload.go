package conntrack

import "github.com/xdpcluster/xdpcluster/packet"

// Offload is what the tracker asks its caller to do with a packet's
// connection in a kernel fast path (Result.Offload): the XDP flow cache
// carries a connection's packets without the tracker seeing them, so the
// tracker says when one may enter it and when it must leave.
type Offload uint8

// Offload actions.
const (
	// Nothing to do.
	OffloadNone Offload = iota
	// Install (or re-install) the connection: a TCP connection that is
	// ESTABLISHED, a datagram connection from its first packet.
	OffloadInstall
	// Remove it: the connection is closing (FIN, RST) or gone.
	OffloadRemove
)

// Offloader is a kernel fast path holding the connections the tracker
// asked to install. The table's sweeper asks it before it expires an
// installed connection, so that a connection carried by the fast path
// never expires while active, and tells it when it removes one.
type Offloader interface {
	// Seen reports when each direction of the connection whose original
	// direction is orig last passed through the fast path, in the
	// table's clock (0: never), and whether the fast path still holds
	// it.
	Seen(orig *packet.Tuple) (origLast, replyLast int64, ok bool)
	// Forget removes the connection from the fast path.
	Forget(orig *packet.Tuple)
}
