package xsk

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/asavie/xdp"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/dataplane"
)

// PortOptions size a port's frame memory and rings (powers of two).
type PortOptions struct {
	NumFrames int // frames in the UMEM: half for receiving, half for sending
	FrameSize int
	RingSize  int // entries of each of the four rings
	// ZeroCopy: zero-copy where the driver can, or forced on or off.
	ZeroCopy ZeroCopy
}

// ZeroCopy is the AF_XDP bind mode: "" or ZeroCopyAuto (zero-copy where
// the driver can, copy otherwise), ZeroCopyOn (zero-copy or fail),
// ZeroCopyOff (copy mode). PortOptions.Validate refuses anything else.
type ZeroCopy string

// Zero-copy modes, as the configuration spells them.
const (
	ZeroCopyAuto ZeroCopy = "auto"
	ZeroCopyOn   ZeroCopy = "on"
	ZeroCopyOff  ZeroCopy = "off"
)

// DefaultPortOptions are thousands of frames, not the library's 128.
func DefaultPortOptions() PortOptions {
	return PortOptions{NumFrames: 16384, FrameSize: 2048, RingSize: 8192}
}

// Bounds of PortOptions. The kernel takes UMEM chunks of 2048 bytes up to
// a page; the UMEM (frames × frame size) is mmapped and locked once per
// socket, so it is bounded to keep a mistyped size from failing at run
// time (or, with the "auto" backend, from silently falling back to raw
// sockets).
const (
	MinFrameSize = 2048
	MaxFrameSize = 4096
	MaxUMEMBytes = 1 << 30 // per socket
)

// OptionError is an invalid PortOptions field: Field is its name
// (num_frames, frame_size, ring_size, zero_copy), Rule what is allowed.
// Callers with their own names for the fields (the configuration's keys)
// rename Field and keep Rule, so the rule is written once, here.
type OptionError struct {
	Field string
	Value any
	Rule  string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("xsk %s %v: %s", e.Field, e.Value, e.Rule)
}

// Validate names the first invalid field (an *OptionError).
func (o PortOptions) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"num_frames", o.NumFrames}, {"frame_size", o.FrameSize}, {"ring_size", o.RingSize}} {
		if f.v <= 0 || f.v&(f.v-1) != 0 {
			return &OptionError{f.name, f.v, "must be a power of two"}
		}
	}
	if o.FrameSize < MinFrameSize || o.FrameSize > MaxFrameSize {
		return &OptionError{"frame_size", o.FrameSize, fmt.Sprintf("must be %d or %d", MinFrameSize, MaxFrameSize)}
	}
	if o.NumFrames > MaxUMEMBytes/o.FrameSize {
		return &OptionError{"num_frames", o.NumFrames, fmt.Sprintf("must be at most %d with frame_size %d (the UMEM, frames × frame_size, is at most %d MiB per socket)",
			MaxUMEMBytes/o.FrameSize, o.FrameSize, MaxUMEMBytes>>20)}
	}
	if o.RingSize > o.NumFrames/2 {
		return &OptionError{"ring_size", o.RingSize, fmt.Sprintf("must be at most num_frames/2 (%d)", o.NumFrames/2)}
	}
	switch o.ZeroCopy {
	case "", ZeroCopyAuto, ZeroCopyOn, ZeroCopyOff:
	default:
		return &OptionError{"zero_copy", fmt.Sprintf("%q", o.ZeroCopy), "must be one of auto, on, off"}
	}
	return nil
}

// Port is an AF_XDP socket on one interface queue (github.com/asavie/xdp),
// with the library's per-call costs worked around: our own free list of
// transmit buffers instead of GetDescs' scan, one kick per batch, our own
// poll, and Transmit's panic on an unexpected errno recovered and counted
// (the library's quirks are worked around in asavie.go).
type Port struct {
	name      string
	sock      *xdp.Socket
	frameSize uint64
	txFree    []uint64 // free transmit buffers
	inflight  []uint64 // submitted, in completion order
	head      int      // of inflight (a ring)
	count     int
	rx        []xdp.Desc
	fill      []xdp.Desc
	tx        []xdp.Desc
	zeroCopy  bool
	kicked    bool // Transmit kicked since the last Reap
	// stalledUntil (monotonic ns, 0: not stalled) holds back transmits
	// and kicks for a moment after a kick failed hard (the link is down),
	// so a worker with frames on the TX ring does not spin on failing
	// syscalls (it was 2.4 million a second).
	stalledUntil int64
	txErrors     atomic.Uint64
	txFull       atomic.Uint64
	fillEmpty    atomic.Uint64
}

// OpenPort binds an AF_XDP socket to queue of interface ifindex and fills
// its receive ring. Register its FD in the interface's Program.
func OpenPort(name string, ifindex, queue int, opts PortOptions) (*Port, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	var flags uint16
	switch opts.ZeroCopy {
	case ZeroCopyOn:
		flags = unix.XDP_ZEROCOPY
	case ZeroCopyOff:
		flags = unix.XDP_COPY
	}
	so := &xdp.SocketOptions{
		NumFrames: opts.NumFrames, FrameSize: opts.FrameSize,
		FillRingNumDescs: opts.RingSize, CompletionRingNumDescs: opts.RingSize,
		RxRingNumDescs: opts.RingSize, TxRingNumDescs: opts.RingSize,
	}
	sock, err := newSocket(ifindex, queue, so, flags)
	// A socket closed a moment ago (a restart) releases its queue
	// asynchronously: the bind answers EBUSY until it has.
	for try := 0; isBusy(err) && try < 20; try++ {
		time.Sleep(50 * time.Millisecond)
		sock, err = newSocket(ifindex, queue, so, flags)
	}
	if err != nil {
		return nil, fmt.Errorf("bind xsk to %s queue %d: %w", name, queue, err)
	}
	p := &Port{
		name: fmt.Sprintf("%s/q%d", name, queue), sock: sock, frameSize: uint64(opts.FrameSize),
		inflight: make([]uint64, opts.NumFrames/2),
		rx:       make([]xdp.Desc, 0, 256), fill: make([]xdp.Desc, 0, opts.RingSize), tx: make([]xdp.Desc, 0, 256),
	}
	half := opts.NumFrames / 2
	for i := 0; i < half; i++ {
		p.fill = append(p.fill, xdp.Desc{Addr: uint64(i) * p.frameSize})
	}
	sock.Fill(p.fill[:min(len(p.fill), opts.RingSize)])
	for i := half; i < opts.NumFrames; i++ {
		p.txFree = append(p.txFree, uint64(i)*p.frameSize)
	}
	p.zeroCopy = zeroCopy(sock.FD())
	return p, nil
}

// zeroCopy asks the kernel whether the socket runs in zero-copy mode.
func zeroCopy(fd int) bool {
	var opts uint32
	size := uint32(unsafe.Sizeof(opts))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_OPTIONS,
		uintptr(unsafe.Pointer(&opts)), uintptr(unsafe.Pointer(&size)), 0)
	return errno == 0 && opts&unix.XDP_OPTIONS_ZEROCOPY != 0
}

// Name implements dataplane.Port.
func (p *Port) Name() string { return p.name }

// Mode implements dataplane.Port.
func (p *Port) Mode() string {
	if p.zeroCopy {
		return "afxdp zero-copy"
	}
	return "afxdp copy"
}

// ZeroCopy reports whether the socket runs in zero-copy mode.
func (p *Port) ZeroCopy() bool { return p.zeroCopy }

// FD implements dataplane.Port.
func (p *Port) FD() int { return p.sock.FD() }

// Receive implements dataplane.Port.
func (p *Port) Receive(fs []dataplane.Frame) int {
	descs := p.sock.Receive(len(fs))
	for i, d := range descs {
		fs[i] = dataplane.Frame{Addr: d.Addr, Len: d.Len}
	}
	return len(descs)
}

// Bytes implements dataplane.Port.
func (p *Port) Bytes(f dataplane.Frame) []byte {
	return p.sock.GetFrame(xdp.Desc{Addr: f.Addr, Len: f.Len})
}

// Recycle implements dataplane.Port.
func (p *Port) Recycle(fs []dataplane.Frame) {
	d := p.fill[:0]
	for _, f := range fs {
		d = append(d, xdp.Desc{Addr: f.Addr &^ (p.frameSize - 1)})
	}
	if n := p.sock.Fill(d); n < len(d) {
		// Cannot happen while we own no more frames than the ring holds;
		// count it rather than lose track silently.
		p.fillEmpty.Add(uint64(len(d) - n))
	}
}

// AllocTx implements dataplane.Port.
func (p *Port) AllocTx() (dataplane.Frame, []byte, bool) {
	if len(p.txFree) == 0 {
		p.Reap()
		if len(p.txFree) == 0 {
			p.txFull.Add(1)
			return dataplane.Frame{}, nil, false
		}
	}
	a := p.txFree[len(p.txFree)-1]
	p.txFree = p.txFree[:len(p.txFree)-1]
	f := dataplane.Frame{Addr: a, Len: uint32(p.frameSize)}
	return f, p.sock.GetFrame(xdp.Desc{Addr: a, Len: uint32(p.frameSize)}), true
}

// FreeTx implements dataplane.Port.
func (p *Port) FreeTx(f dataplane.Frame) { p.txFree = append(p.txFree, f.Addr) }

// Transmit implements dataplane.Port.
func (p *Port) Transmit(fs []dataplane.Frame) (queued int) {
	if len(fs) == 0 {
		return 0
	}
	if p.stalled() {
		// The link failed a moment ago: drop (as the kernel does on a
		// downed link) instead of queueing behind a kick that fails.
		p.txErrors.Add(uint64(len(fs)))
		for _, f := range fs {
			p.txFree = append(p.txFree, f.Addr)
		}
		return 0
	}
	d := p.tx[:0]
	for _, f := range fs {
		d = append(d, xdp.Desc{Addr: f.Addr, Len: f.Len})
	}
	queued = min(p.sock.NumFreeTxSlots(), len(d))
	p.kicked = true
	if !transmit(p.sock, d[:queued]) {
		p.txErrors.Add(1)
		p.stall()
	}
	for _, f := range fs[:queued] {
		p.inflight[(p.head+p.count)%len(p.inflight)] = f.Addr
		p.count++
	}
	for _, f := range fs[queued:] {
		p.txFree = append(p.txFree, f.Addr)
	}
	if queued < len(fs) {
		p.txFull.Add(uint64(len(fs) - queued))
	}
	return queued
}

// Reap implements dataplane.Port. AF_XDP completes a queue's frames in the
// order they were submitted. In copy mode the kernel sends at most a small
// batch per kick, so Reap kicks again while frames are waiting.
func (p *Port) Reap() int {
	if n := p.sock.NumCompleted(); n > 0 {
		p.sock.Complete(n)
		for i := 0; i < n && p.count > 0; i++ {
			p.txFree = append(p.txFree, p.inflight[p.head])
			p.head = (p.head + 1) % len(p.inflight)
			p.count--
		}
	}
	// Kick again only if nothing did since the last reap: each kick is a
	// syscall, and Transmit has just made one.
	kicked := p.kicked
	p.kicked = false
	if p.count > 0 && !kicked {
		if p.stalled() || !p.kick() {
			return 0 // nothing will complete before the back-off ends: let the worker sleep
		}
	}
	return p.count
}

// stallBackoff is how long a port waits after a hard TX failure before it
// kicks again.
const stallBackoff = 5 * time.Millisecond

var monoStart = time.Now()

func monotonic() int64 { return int64(time.Since(monoStart)) }

// stall starts a back-off after a hard TX failure.
func (p *Port) stall() { p.stalledUntil = monotonic() + int64(stallBackoff) }

// stalled reports whether a back-off is running; it reads the clock only
// while one was started.
func (p *Port) stalled() bool {
	if p.stalledUntil == 0 {
		return false
	}
	if monotonic() < p.stalledUntil {
		return true
	}
	p.stalledUntil = 0
	return false
}

// kick asks the kernel to send what is on the TX ring. It reports false,
// and starts a back-off, when the kernel refused for good (e.g. ENETDOWN:
// the link is down).
func (p *Port) kick() bool {
	_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(p.sock.FD()), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.EINTR:
		return true
	default:
		p.txErrors.Add(1)
		p.stall()
		return false
	}
}

// Stats implements dataplane.Port.
func (p *Port) Stats() dataplane.PortStats {
	s := dataplane.PortStats{TxErrors: p.txErrors.Load(), TxRingFull: p.txFull.Load(), FillRingEmpty: p.fillEmpty.Load()}
	if st, err := p.sock.Stats(); err == nil {
		s.RxDropped = st.KernelStats.Rx_dropped
		s.RxInvalid = st.KernelStats.Rx_invalid_descs
		s.TxInvalid = st.KernelStats.Tx_invalid_descs
		s.RxFillEmpty = st.KernelStats.Rx_fill_ring_empty_descs
	}
	return s
}

// Close implements dataplane.Port. asavie/xdp's Close does not unmap the
// four ring mappings, and a mapping keeps the socket (and its queue) alive
// until the process exits: no restart could bind the queue again. Unmap
// them first (unmapRings).
func (p *Port) Close() error {
	if p.sock == nil {
		return nil
	}
	err := errors.Join(unmapRings(p.sock), p.sock.Close())
	p.sock = nil
	return err
}
