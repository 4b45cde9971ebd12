package xsk

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/asavie/xdp"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestAsavieLayout fails when asavie/xdp no longer has the unexported ring
// fields unmapRings relies on (names, Descs slices and their element
// types), instead of Close silently leaving a ring mapped (which keeps the
// queue bound until the process exits).
func TestAsavieLayout(t *testing.T) {
	descs, err := ringDescs(reflect.ValueOf(&xdp.Socket{}).Elem())
	if err != nil {
		t.Fatalf("asavie/xdp changed: %v; update asavie.go", err)
	}
	if len(descs) != 4 {
		t.Fatalf("%d rings, want 4", len(descs))
	}
	if s := reflect.TypeFor[xdp.Desc]().Size(); s != 16 {
		t.Fatalf("xdp.Desc is %d bytes, the kernel's xdp_desc 16", s)
	}
	// A layout without one of the rings, or with another element type, is
	// an error naming the field, never a skipped ring.
	type ring[T any] struct{ Descs []T }
	for _, c := range []struct {
		v    any
		want string
	}{
		{&struct {
			fillRing, completionRing ring[uint64]
			rxRing                   ring[xdp.Desc]
		}{}, "no struct field txRing"},
		{&struct {
			fillRing, completionRing ring[uint64]
			rxRing, txRing           ring[uint64]
		}{}, "rxRing has no field Descs of type []xdp.Desc"},
		{&struct {
			fillRing       struct{ Ring []uint64 }
			completionRing ring[uint64]
			rxRing, txRing ring[xdp.Desc]
		}{}, "fillRing has no field Descs"},
	} {
		if _, err := ringDescs(reflect.ValueOf(c.v).Elem()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%T: error %v, want one containing %q", c.v, err, c.want)
		}
	}
}

// TestIsBusy: the EBUSY test matches the library's %v-formatted bind error
// and a wrapped errno, and nothing else.
func TestIsBusy(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("syscall.Bind SockaddrXDP failed: %v", unix.EBUSY), true},
		{fmt.Errorf("bind: %w", unix.EBUSY), true},
		{fmt.Errorf("syscall.Bind SockaddrXDP failed: %v", unix.EINVAL), false},
		{errors.New("syscall.Socket failed: operation not permitted"), false},
		{nil, false},
	} {
		if got := isBusy(c.err); got != c.want {
			t.Errorf("isBusy(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestNewSocketKeepsGlobalFlags: newSocket leaves the library's global bind
// flags as it found them, whether or not the open succeeds.
func TestNewSocketKeepsGlobalFlags(t *testing.T) {
	before := xdp.DefaultSocketFlags
	sock, err := newSocket(1<<30, 0, &xdp.SocketOptions{NumFrames: 64, FrameSize: 2048,
		FillRingNumDescs: 32, CompletionRingNumDescs: 32, RxRingNumDescs: 32, TxRingNumDescs: 32}, unix.XDP_ZEROCOPY)
	if err == nil {
		sock.Close()
		t.Fatal("bound to ifindex 1<<30")
	}
	if xdp.DefaultSocketFlags != before {
		t.Fatalf("DefaultSocketFlags %#x after newSocket, want %#x", xdp.DefaultSocketFlags, before)
	}
}

// TestAsavieBusyAndRebind (root): through the real library and kernel, a
// second bind to a bound queue is recognised as EBUSY, and after Close
// (rings unmapped) the queue can be bound again at once.
func TestAsavieBusyAndRebind(t *testing.T) {
	ns := nstest.New(t, "xskb")
	nstest.Run(t, ns, "ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0")
	nstest.Run(t, ns, "ip", "link", "set", "a0", "up")
	nstest.Run(t, ns, "ip", "link", "set", "b0", "up")
	opts := PortOptions{NumFrames: 64, FrameSize: 2048, RingSize: 32}
	so := &xdp.SocketOptions{NumFrames: 64, FrameSize: 2048,
		FillRingNumDescs: 32, CompletionRingNumDescs: 32, RxRingNumDescs: 32, TxRingNumDescs: 32}
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName("a0")
		if err != nil {
			return err
		}
		p, err := OpenPort("a0", ifc.Index, 0, opts)
		if err != nil {
			return fmt.Errorf("first open: %w", err)
		}
		second, err := newSocket(ifc.Index, 0, so, 0)
		if err == nil {
			second.Close()
			p.Close()
			return errors.New("a second socket bound the same queue")
		}
		if !isBusy(err) {
			p.Close()
			return fmt.Errorf("second bind: %v, not recognised as EBUSY", err)
		}
		if err := p.Close(); err != nil {
			return fmt.Errorf("close: %w", err)
		}
		p, err = OpenPort("a0", ifc.Index, 0, opts)
		if err != nil {
			return fmt.Errorf("reopen after close: %w", err)
		}
		return p.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}
