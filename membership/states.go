package membership

import (
	"net"
	"sync"

	"github.com/hashicorp/memberlist"
)

// table is the node's own record of the members, fed by memberlist's
// public events: NotifyJoin and NotifyUpdate mark a member alive with its
// address and meta, NotifyLeave marks it dead (memberlist reports a
// failure and a graceful leave alike). memberlist's public API does not
// report suspicion (Members lists suspect members as members, and
// Node.State is not set), so a member is taken over when it is declared
// dead: the detection time is the probe plus the suspicion timeout (see
// Timing). Members are remembered once seen, so a View keeps listing the
// dead ones.
type table struct {
	mu sync.Mutex
	m  map[string]rawMember
}

// rawMember is one member as the events last reported it.
type rawMember struct {
	name  string
	addr  net.IP
	port  uint16
	meta  []byte
	state memberlist.NodeStateType
}

func newTable() *table { return &table{m: map[string]rawMember{}} }

// set records n (copied: memberlist owns it) in state st. It runs inside
// memberlist's callbacks, so it only takes the table's own lock.
func (t *table) set(n *memberlist.Node, st memberlist.NodeStateType) {
	r := rawMember{name: n.Name, addr: append(net.IP(nil), n.Addr...), port: n.Port, meta: append([]byte(nil), n.Meta...), state: st}
	t.mu.Lock()
	t.m[n.Name] = r
	t.mu.Unlock()
}

// read copies the table.
func (t *table) read() []rawMember {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]rawMember, 0, len(t.m))
	for _, r := range t.m {
		out = append(out, r)
	}
	return out
}
