package xsk

// Every workaround for github.com/asavie/xdp (v0.3.3) lives in this file,
// and asavie_test.go fails if the library changes what they rely on:
//
//   - bind flags: NewSocket takes them from the package variable
//     DefaultSocketFlags, not from its options. newSocket sets it for one
//     call under a lock and puts it back, so concurrent opens with
//     different zero-copy modes cannot bind with each other's flags.
//   - EBUSY: NewSocket formats the bind error with %v, so the errno is
//     lost to errors.Is; isBusy falls back to the errno's own text.
//   - Transmit panics when its sendto fails with an errno it does not
//     expect (e.g. ENETDOWN: the link went down); the frames are on the
//     ring by then. transmit recovers and reports it.
//   - unmapping: Close does not unmap the four rings, and a mapping keeps
//     the socket (and its queue) alive until the process exits. unmapRings
//     finds the mappings through the unexported ring fields, by name, and
//     fails if one is missing or has another type (it never skips one).

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unsafe"

	"github.com/asavie/xdp"
	"golang.org/x/sys/unix"
)

// bindMu serialises the write of xdp.DefaultSocketFlags with the bind
// that reads it.
var bindMu sync.Mutex

// newSocket is xdp.NewSocket with bind flags of its own.
func newSocket(ifindex, queue int, so *xdp.SocketOptions, flags uint16) (*xdp.Socket, error) {
	bindMu.Lock()
	defer bindMu.Unlock()
	old := xdp.DefaultSocketFlags
	xdp.DefaultSocketFlags = flags
	defer func() { xdp.DefaultSocketFlags = old }()
	return xdp.NewSocket(ifindex, queue, so)
}

// isBusy reports whether a NewSocket error is the bind's EBUSY (the queue
// is still held by a socket closed a moment ago).
func isBusy(err error) bool {
	return errors.Is(err, unix.EBUSY) || err != nil && strings.Contains(err.Error(), unix.EBUSY.Error())
}

// transmit is sock.Transmit(d), reporting false when it panicked (a
// kick failed hard).
func transmit(sock *xdp.Socket, d []xdp.Desc) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	sock.Transmit(d)
	return true
}

// ringField is one of the library's unexported rings: its field name, the
// type of its Descs slice's elements, and where the kernel puts the
// descriptors in the ring's mapping.
type ringField struct {
	name  string
	elem  reflect.Type
	descs func(*unix.XDPMmapOffsets) uint64
}

var ringFields = []ringField{
	{"fillRing", reflect.TypeFor[uint64](), func(o *unix.XDPMmapOffsets) uint64 { return o.Fr.Desc }},
	{"completionRing", reflect.TypeFor[uint64](), func(o *unix.XDPMmapOffsets) uint64 { return o.Cr.Desc }},
	{"rxRing", reflect.TypeFor[xdp.Desc](), func(o *unix.XDPMmapOffsets) uint64 { return o.Rx.Desc }},
	{"txRing", reflect.TypeFor[xdp.Desc](), func(o *unix.XDPMmapOffsets) uint64 { return o.Tx.Desc }},
}

// ringDescs returns the Descs slice field of each ring of sock, in
// ringFields' order, or an error naming what the library no longer has.
func ringDescs(sock reflect.Value) ([]reflect.Value, error) {
	var out []reflect.Value
	for _, r := range ringFields {
		ring := sock.FieldByName(r.name)
		if !ring.IsValid() || ring.Kind() != reflect.Struct {
			return nil, fmt.Errorf("asavie/xdp Socket has no struct field %s", r.name)
		}
		d := ring.FieldByName("Descs")
		if !d.IsValid() || d.Kind() != reflect.Slice || d.Type().Elem() != r.elem {
			return nil, fmt.Errorf("asavie/xdp Socket.%s has no field Descs of type []%v", r.name, r.elem)
		}
		out = append(out, d)
	}
	return out, nil
}

// unmapRings unmaps sock's four ring mappings (before the library's
// Close, which only forgets them) and empties their slices.
func unmapRings(sock *xdp.Socket) error {
	descs, err := ringDescs(reflect.ValueOf(sock).Elem())
	if err != nil {
		return fmt.Errorf("unmap rings: %w", err)
	}
	var off unix.XDPMmapOffsets
	size := uint32(unsafe.Sizeof(off))
	if _, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(sock.FD()), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&size)), 0); errno != 0 {
		return fmt.Errorf("unmap rings: getsockopt XDP_MMAP_OFFSETS: %w", errno)
	}
	var errs []error
	for i, r := range ringFields {
		hdr := (*struct {
			data     uintptr
			len, cap int
		})(unsafe.Pointer(descs[i].UnsafeAddr()))
		if hdr.data == 0 {
			continue // a ring the socket was opened without
		}
		at := uintptr(r.descs(&off))
		length := at + uintptr(hdr.len)*r.elem.Size()
		if _, _, errno := unix.Syscall(unix.SYS_MUNMAP, hdr.data-at, length, 0); errno != 0 {
			errs = append(errs, fmt.Errorf("unmap %s ring: %w", r.name, errno))
		}
		hdr.data, hdr.len, hdr.cap = 0, 0, 0
	}
	return errors.Join(errs...)
}
