// Package afpacket is the raw-socket dataplane backend, for kernels or
// NICs without AF_XDP: an AF_PACKET socket with memory-mapped TPACKET_V2
// receive and transmit rings. A classic BPF socket filter passes only IPv4
// and IPv6 frames addressed to the interface's cluster MAC (VLAN tags are
// taken off by the kernel here, so tagged frames are not supported by this
// backend). The kernel stack still sees every frame too (it drops what is
// not for it); that is the price of the fallback.
//
// By default a Port is bound to ETH_P_ALL: a tap, which the kernel serves
// before tc ingress. With Options.Protocol ETH_P_IP or ETH_P_IPV6 it
// reads one family, served after tc ingress: it sees only the frames a tc
// program (the fast path, dataplane/xsk's TCProgram) left to the stack, so
// a gateway opens one Port per family on each interface. A frame the
// worker sends through it must be of its family (forwarding keeps it).
//
// A Port is used by one worker; it is not safe for concurrent use.
package afpacket

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
)

// Options size the rings (frame counts are powers of two).
type Options struct {
	FrameSize int // bytes per slot, a multiple of 16, at least 2048
	RxFrames  int
	TxFrames  int
	// Protocol is the EtherType the socket is bound to: 0 for every
	// frame (ETH_P_ALL, before tc ingress), or unix.ETH_P_IP or
	// unix.ETH_P_IPV6 (after tc ingress).
	Protocol uint16
}

// DefaultOptions are 4096 slots of 2 KiB per ring.
func DefaultOptions() Options { return Options{FrameSize: 2048, RxFrames: 4096, TxFrames: 4096} }

// RingBytes is the memory a Port's rings take: its receive and transmit
// slots (16 MiB with DefaultOptions).
func (o Options) RingBytes() uint64 { return uint64(o.RxFrames+o.TxFrames) * uint64(o.FrameSize) }

const (
	blockSize = 1 << 16
	txDataOff = 32 // TPACKET_ALIGN(sizeof(struct tpacket2_hdr))
)

// Port is an AF_PACKET socket on one interface.
type Port struct {
	name      string
	fd        int
	ring      []byte
	frameSize int
	rxN, txN  int
	rxHead    int // next RX slot to look at
	txHead    int // next TX slot to hand out
	spare     []int
	txPending []int
	txErrors  atomic.Uint64
	txFull    atomic.Uint64
	rxDrops   atomic.Uint64
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// filter accepts IPv4/IPv6 frames to mac.
func filter(mac net.HardwareAddr) ([]unix.SockFilter, error) {
	hi := uint32(mac[0])<<24 | uint32(mac[1])<<16 | uint32(mac[2])<<8 | uint32(mac[3])
	lo := uint32(mac[4])<<8 | uint32(mac[5])
	return bpfutil.SocketFilter([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: hi, SkipTrue: 6},
		bpf.LoadAbsolute{Off: 4, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: lo, SkipTrue: 4},
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x86dd, SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
}

// Open creates the socket and its rings on interface ifindex (call it with
// the thread in the interface's network namespace).
func Open(name string, ifindex int, clusterMAC net.HardwareAddr, o Options) (p *Port, err error) {
	if o.FrameSize < 2048 || o.FrameSize%16 != 0 || blockSize%o.FrameSize != 0 {
		return nil, fmt.Errorf("afpacket frame_size %d: must be a multiple of 16, at least 2048, dividing %d", o.FrameSize, blockSize)
	}
	for _, n := range []int{o.RxFrames, o.TxFrames} {
		if n <= 0 || n&(n-1) != 0 || n*o.FrameSize < blockSize {
			return nil, fmt.Errorf("afpacket ring of %d frames: must be a power of two of at least %d frames", n, blockSize/o.FrameSize)
		}
	}
	proto, suffix := uint16(unix.ETH_P_ALL), "/q0"
	switch o.Protocol {
	case 0:
	case unix.ETH_P_IP:
		proto, suffix = unix.ETH_P_IP, "/ipv4"
	case unix.ETH_P_IPV6:
		proto, suffix = unix.ETH_P_IPV6, "/ipv6"
	default:
		return nil, fmt.Errorf("afpacket protocol %#04x: must be 0 (every frame), ETH_P_IP or ETH_P_IPV6", o.Protocol)
	}
	// Protocol 0 at creation: the socket receives nothing until Bind,
	// after its filter and rings are in place.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("afpacket socket on %s: %w (needs CAP_NET_RAW)", name, err)
	}
	p = &Port{name: name + suffix, fd: fd, frameSize: o.FrameSize, rxN: o.RxFrames, txN: o.TxFrames}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	f, err := filter(clusterMAC)
	if err != nil {
		return p, err
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}); err != nil {
		return p, fmt.Errorf("afpacket filter on %s: %w", name, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return p, fmt.Errorf("afpacket TPACKET_V2 on %s: %w", name, err)
	}
	unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	for _, r := range []struct {
		opt, n int
	}{{unix.PACKET_RX_RING, o.RxFrames}, {unix.PACKET_TX_RING, o.TxFrames}} {
		req := unix.TpacketReq{Block_size: blockSize, Block_nr: uint32(r.n * o.FrameSize / blockSize), Frame_size: uint32(o.FrameSize), Frame_nr: uint32(r.n)}
		if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, r.opt, &req); err != nil {
			return p, fmt.Errorf("afpacket ring on %s: %w", name, err)
		}
	}
	size := (o.RxFrames + o.TxFrames) * o.FrameSize
	if p.ring, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return p, fmt.Errorf("afpacket mmap on %s: %w", name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}); err != nil {
		return p, fmt.Errorf("bind afpacket to %s: %w", name, err)
	}
	return p, nil
}

func (p *Port) hdr(slot int) *unix.Tpacket2Hdr {
	return (*unix.Tpacket2Hdr)(unsafe.Pointer(&p.ring[slot*p.frameSize]))
}

func (p *Port) status(slot int) uint32 { return atomic.LoadUint32(&p.hdr(slot).Status) }

func (p *Port) setStatus(slot int, s uint32) { atomic.StoreUint32(&p.hdr(slot).Status, s) }

// Name implements dataplane.Port.
func (p *Port) Name() string { return p.name }

// Mode implements dataplane.Port.
func (p *Port) Mode() string { return "afpacket" }

// FD implements dataplane.Port.
func (p *Port) FD() int { return p.fd }

// Receive implements dataplane.Port: Addr is the RX slot.
func (p *Port) Receive(fs []dataplane.Frame) int {
	n := 0
	for n < len(fs) && p.status(p.rxHead)&unix.TP_STATUS_USER != 0 {
		fs[n] = dataplane.Frame{Addr: uint64(p.rxHead), Len: p.hdr(p.rxHead).Snaplen}
		n++
		p.rxHead = (p.rxHead + 1) & (p.rxN - 1)
	}
	return n
}

// Bytes implements dataplane.Port.
func (p *Port) Bytes(f dataplane.Frame) []byte {
	slot := int(f.Addr)
	h := p.hdr(slot)
	start := slot*p.frameSize + int(h.Mac)
	end := min(start+int(f.Len), (slot+1)*p.frameSize)
	return p.ring[start:end]
}

// Recycle implements dataplane.Port.
func (p *Port) Recycle(fs []dataplane.Frame) {
	for _, f := range fs {
		p.setStatus(int(f.Addr), unix.TP_STATUS_KERNEL)
	}
}

// AllocTx implements dataplane.Port: Addr is the TX slot.
func (p *Port) AllocTx() (dataplane.Frame, []byte, bool) {
	slot := -1
	if n := len(p.spare); n > 0 {
		slot, p.spare = p.spare[n-1], p.spare[:n-1]
	} else {
		s := p.rxN + p.txHead
		switch st := p.status(s); {
		case st == unix.TP_STATUS_AVAILABLE, st&unix.TP_STATUS_WRONG_FORMAT != 0:
			if st&unix.TP_STATUS_WRONG_FORMAT != 0 {
				p.txErrors.Add(1)
			}
			slot = s
			p.txHead = (p.txHead + 1) & (p.txN - 1)
		default:
			p.txFull.Add(1)
			return dataplane.Frame{}, nil, false
		}
	}
	base := slot * p.frameSize
	buf := p.ring[base+txDataOff : base+p.frameSize]
	return dataplane.Frame{Addr: uint64(slot), Len: uint32(len(buf))}, buf, true
}

// FreeTx implements dataplane.Port.
func (p *Port) FreeTx(f dataplane.Frame) { p.spare = append(p.spare, int(f.Addr)) }

// Transmit implements dataplane.Port.
func (p *Port) Transmit(fs []dataplane.Frame) int {
	for _, f := range fs {
		h := p.hdr(int(f.Addr))
		h.Len = f.Len
		atomic.StoreUint32(&h.Status, unix.TP_STATUS_SEND_REQUEST)
	}
	if len(fs) > 0 {
		if _, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(p.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0); errno != 0 &&
			errno != unix.EAGAIN && errno != unix.ENOBUFS {
			p.txErrors.Add(1)
		}
	}
	return len(fs)
}

// Reap implements dataplane.Port: the kernel marks sent slots available
// itself and sends the whole ring per kick.
func (p *Port) Reap() int { return 0 }

// Stats implements dataplane.Port.
func (p *Port) Stats() dataplane.PortStats {
	s := dataplane.PortStats{TxErrors: p.txErrors.Load(), TxRingFull: p.txFull.Load()}
	// The kernel resets its counters on each read: accumulate them here.
	if st, err := unix.GetsockoptTpacketStats(p.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
		p.rxDrops.Add(uint64(st.Drops))
	}
	s.RxDropped = p.rxDrops.Load()
	return s
}

// Close implements dataplane.Port.
func (p *Port) Close() error {
	var errs []error
	if p.ring != nil {
		errs = append(errs, unix.Munmap(p.ring))
		p.ring = nil
	}
	if p.fd >= 0 {
		errs = append(errs, unix.Close(p.fd))
		p.fd = -1
	}
	return errors.Join(errs...)
}
