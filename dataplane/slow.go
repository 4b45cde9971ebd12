package dataplane

import (
	"sync"
	"sync/atomic"

	"github.com/xdpcluster/xdpcluster/packet"
)

// slowSlots is the depth of a worker's slow-path ring: room for the
// packets to one unresolved next hop that arrive while the kernel
// resolves it (about a millisecond of a busy 10 Gb/s link's 1,500-byte
// frames), which the kernel then queues in its own neighbour queue.
const slowSlots = 256

type slowSlot struct {
	family packet.Family
	n      int
	buf    [2048]byte
}

// slowRing is a single-producer (the worker), single-consumer (the
// drainer) ring of packets for the kernel to send. The worker copies into a
// fixed slot: no allocation, no syscall, no lock.
type slowRing struct {
	head atomic.Uint64 // next slot the worker fills
	tail atomic.Uint64 // next slot the drainer sends
	// wake (one slot) tells the drainer the ring has packets: it sleeps
	// until then, instead of ticking while the gateway is idle.
	wake  chan struct{}
	slots [slowSlots]slowSlot
}

// put copies ip into the ring; false when it is full (or ip too big).
func (r *slowRing) put(family packet.Family, ip []byte) bool {
	h := r.head.Load()
	if h-r.tail.Load() >= slowSlots || len(ip) > len(r.slots[0].buf) {
		return false
	}
	s := &r.slots[h%slowSlots]
	s.family, s.n = family, copy(s.buf[:], ip)
	r.head.Store(h + 1)
	return true
}

// drain sends everything queued.
func (r *slowRing) drain(send func(packet.Family, []byte)) {
	for t, h := r.tail.Load(), r.head.Load(); t < h; t++ {
		s := &r.slots[t%slowSlots]
		send(s.family, s.buf[:s.n])
		r.tail.Store(t + 1)
	}
}

// pending reports whether the ring holds packets not yet drained.
func (r *slowRing) pending() bool { return r.head.Load() != r.tail.Load() }

// wakeDrainer tells the drainer there is work, without blocking.
func (r *slowRing) wakeDrainer() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// drainSlow empties the workers' slow-path rings until Stop: one goroutine
// per worker, asleep until its worker queues a packet.
func (d *Dataplane) drainSlow() {
	var wg sync.WaitGroup
	for _, w := range d.workers {
		wg.Add(1)
		go func(r *slowRing) {
			defer wg.Done()
			for {
				select {
				case <-d.stop:
					return
				case <-r.wake:
				}
				r.drain(d.cfg.SlowPath)
			}
		}(&w.slow)
	}
	wg.Wait()
}
