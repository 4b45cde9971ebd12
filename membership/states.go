package membership

import (
	"fmt"
	"net"
	"reflect"
	"sync"
	"unsafe"

	"github.com/hashicorp/memberlist"
)

// memberlist (v0.7.0) has no public way to read a member's state: Members
// returns only the live ones, with Node.State always zero (the state lives
// in its unexported nodeState), and its events never report suspicion. The
// assignment must see suspect members at once, and the View lists the dead
// and left members memberlist still remembers, so table reads memberlist's
// own node table (Memberlist.nodes, under Memberlist.nodeLock) through
// reflection. newTable checks the layout once, at Start, and fails with an
// error naming what changed, so a memberlist upgrade that moves these
// fields is caught by the first test rather than misread; go.mod pins the
// version.

// rawMember is one entry of memberlist's node table.
type rawMember struct {
	name  string
	addr  net.IP
	port  uint16
	meta  []byte
	state memberlist.NodeStateType
}

// table reads one Memberlist's node table.
type table struct {
	lock  *sync.RWMutex
	nodes reflect.Value // []*nodeState
}

func newTable(ml *memberlist.Memberlist) (*table, error) {
	v := reflect.ValueOf(ml).Elem()
	fail := func(what string) (*table, error) {
		return nil, fmt.Errorf("read memberlist's node table: %s (memberlist's internals changed; this package reads v0.7.0's Memberlist.nodeLock and Memberlist.nodes)", what)
	}
	lock := v.FieldByName("nodeLock")
	if !lock.IsValid() || lock.Type() != reflect.TypeOf(sync.RWMutex{}) {
		return fail("no field nodeLock of type sync.RWMutex")
	}
	nodes := v.FieldByName("nodes")
	if !nodes.IsValid() || nodes.Kind() != reflect.Slice || nodes.Type().Elem().Kind() != reflect.Pointer {
		return fail("no field nodes of type []*nodeState")
	}
	ns := nodes.Type().Elem().Elem()
	for _, f := range []struct {
		name string
		kind reflect.Kind
		typ  reflect.Type
	}{
		{"Name", reflect.String, nil},
		{"Addr", reflect.Slice, reflect.TypeOf(net.IP{})},
		{"Port", reflect.Uint16, nil},
		{"Meta", reflect.Slice, reflect.TypeOf([]byte{})},
		{"State", reflect.Int, reflect.TypeOf(memberlist.StateAlive)},
	} {
		sf, ok := ns.FieldByName(f.name)
		if !ok || sf.Type.Kind() != f.kind || (f.typ != nil && sf.Type != f.typ) {
			return fail(fmt.Sprintf("nodeState has no field %s of kind %s", f.name, f.kind))
		}
		// State must be nodeState's own field, not the embedded
		// Node.State that memberlist never sets.
		if f.name == "State" && len(sf.Index) != 1 {
			return fail("nodeState.State is not its own field")
		}
	}
	return &table{
		lock:  (*sync.RWMutex)(unsafe.Pointer(lock.UnsafeAddr())),
		nodes: nodes,
	}, nil
}

// read copies the table under memberlist's read lock. It must not be
// called from a memberlist delegate or event callback (those run with the
// lock held).
func (t *table) read() []rawMember {
	t.lock.RLock()
	defer t.lock.RUnlock()
	n := t.nodes.Len()
	out := make([]rawMember, 0, n)
	for i := 0; i < n; i++ {
		e := t.nodes.Index(i)
		if e.IsNil() {
			continue
		}
		e = e.Elem()
		out = append(out, rawMember{
			name:  e.FieldByName("Name").String(),
			addr:  net.IP(append([]byte(nil), e.FieldByName("Addr").Bytes()...)),
			port:  uint16(e.FieldByName("Port").Uint()),
			meta:  append([]byte(nil), e.FieldByName("Meta").Bytes()...),
			state: memberlist.NodeStateType(e.FieldByName("State").Int()),
		})
	}
	return out
}
