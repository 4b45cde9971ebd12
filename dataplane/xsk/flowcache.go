package xsk

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/packet"
)

// FlowCache is the XDP fast path's connection cache (bpf/flow.h), shared
// by the programs of every data interface (NewProgram): an LRU hash of
// both directions of each connection the tracker installed, with its bucket
// and each direction's last-seen time and counters; the ownership
// parameters (SetMatch); and the data interfaces the fast path forwards to
// (AddEgress).
//
// It implements dataplane.FlowCache for the workers (Install, Remove: one
// batch syscall per 32 connections and direction set, no allocation, no
// lock) and conntrack.Offloader for the tracker's sweeper (Seen, Forget).
// All methods are safe for concurrent use.
type FlowCache struct {
	flows, params, egress *ebpf.Map
	fd                    int
	// mapped is xc_params' memory (BPF_F_MMAPABLE): SetMatch stores its
	// one word (offset 0) with one atomic store, which the program reads
	// with one load. mu keeps Close from unmapping it under a SetMatch.
	mu     sync.Mutex
	mapped *bpfutil.Mapped
	clock  conntrack.Clock
	offset int64 // CLOCK_MONOTONIC (the program's clock, coarse or not) minus clock.Now()
	// counter is bpf/count.c's program on flows (nil where the kernel
	// cannot load it; countErr says why and Stats walks the map).
	counter  *ebpf.Program
	countErr error

	installs, removals, lost atomic.Uint64
}

var (
	_ dataplane.FlowCache = (*FlowCache)(nil)
	_ conntrack.Offloader = (*FlowCache)(nil)
)

// The entry counter's object and bindings (count_bpfel.o, count_bpfel.go).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -output-stem count count ../../bpf/count.c -- -mcpu=v3 -Wall -Werror

// MaxEgress bounds the data interfaces a FlowCache forwards to.
const MaxEgress = 64

// MaxFlowCacheConns bounds NewFlowCache's conns (two entries each).
const MaxFlowCacheConns = 1 << 30

// FlowCacheBytes is the kernel memory a flow cache for conns connections
// takes, allocated in full when it is created: two LRU hash entries per
// connection (one per direction), 120 bytes each (the kernel's element
// header, a 40-byte key and a 32-byte value), and a bucket array of 16
// bytes per entry rounded up to a power of two. Checked against the map's
// memlock (/proc/self/fdinfo) by TestFlowCacheBytes: 272 bytes per
// connection at powers of two (285 MB for 1,048,576), up to about 300
// just above one.
func FlowCacheBytes(conns int) uint64 {
	if conns <= 0 {
		return 0
	}
	entries := uint64(2 * conns)
	buckets := uint64(1)
	for buckets < entries {
		buckets <<= 1
	}
	return entries*120 + buckets*16
}

// flowValue is bpf/flow.h's struct xc_flow.
type flowValue struct {
	LastSeen uint64 // CLOCK_MONOTONIC: the install's time, then the program's bpf_ktime_get_coarse_ns (the clock at its last tick)
	Packets  uint64
	Bytes    uint64
	Bucket   uint8
	Dir      uint8 // 0: original direction, 1: reply
	_        [6]byte
}

// The bits of bpf/flow.h's struct xc_params word (XC_PARAMS_*): the
// mask in the low 32 bits.
const (
	paramsInvert  = 1 << 32
	paramsEnabled = 1 << 33
)

// NewFlowCache creates the cache's maps for conns connections (2*conns
// entries: one per direction). Times it reports (Seen) are in clock's
// time, which must not be the zero Clock. The fast path stays off until
// the first SetMatch. It needs CAP_BPF (or root).
func NewFlowCache(conns int, clock conntrack.Clock) (*FlowCache, error) {
	if conns < 1 || conns > MaxFlowCacheConns {
		return nil, fmt.Errorf("flow cache entries %d: must be 1 to %d connections", conns, MaxFlowCacheConns)
	}
	if clock.IsZero() {
		return nil, errors.New("flow cache: the conntrack clock is zero (use conntrack.NewClock)")
	}
	spec, err := loadBpf()
	if err != nil {
		return nil, fmt.Errorf("read XDP program object: %w", err)
	}
	c := &FlowCache{clock: clock}
	mk := func(name string, entries uint32) (*ebpf.Map, error) {
		ms := spec.Maps[name].Copy()
		if entries != 0 {
			ms.MaxEntries = entries
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			return nil, fmt.Errorf("create flow cache map %s (%d entries): %w (needs CAP_BPF/root)", name, ms.MaxEntries, err)
		}
		return m, nil
	}
	if c.flows, err = mk(bpfMapXcFlows, uint32(2*conns)); err != nil {
		return nil, err
	}
	if c.params, err = mk(bpfMapXcParams, 0); err != nil {
		c.flows.Close()
		return nil, err
	}
	if c.mapped, err = bpfutil.MapMemory(c.params); err != nil {
		c.flows.Close()
		c.params.Close()
		return nil, fmt.Errorf("flow cache: %w", err)
	}
	if c.egress, err = mk(bpfMapXcEgress, MaxEgress); err != nil {
		c.mapped.Close()
		c.flows.Close()
		c.params.Close()
		return nil, err
	}
	c.fd = c.flows.FD()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		c.Close()
		return nil, fmt.Errorf("flow cache: read CLOCK_MONOTONIC: %w", err)
	}
	c.offset = ts.Nano() - clock.Now()
	c.counter, c.countErr = newEntryCounter(c.flows)
	return c, nil
}

// newEntryCounter loads bpf/count.c's program on flows: it returns the
// map's entry count from the count the kernel keeps, in one run.
func newEntryCounter(flows *ebpf.Map) (*ebpf.Program, error) {
	spec, err := loadCount()
	if err != nil {
		return nil, fmt.Errorf("read the entry counter's object: %w", err)
	}
	spec.Maps[countMapXcFlows].MaxEntries = flows.MaxEntries()
	var progs countPrograms
	opts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{countMapXcFlows: flows}}
	if err := spec.LoadAndAssign(&progs, opts); err != nil {
		return nil, fmt.Errorf("load the entry counter (its kfunc, bpf_map_sum_elem_count, needs Linux 6.6 or later and the kernel's BTF): %w", err)
	}
	return progs.XcFlowCount, nil
}

// CountErr is nil when Stats reads the entry count the kernel keeps, or
// why it walks the map instead (a kernel before 6.6, or without BTF).
func (c *FlowCache) CountErr() error { return c.countErr }

// SetMatch sets the ownership the fast path applies to every cached
// connection on its next packet: the node owns bucket b when bit b of mask
// is set, inverted by invert (cluster.Match.OwnsNode). The first call
// turns the fast path on.
//
// Mask, invert and enabled are one word, stored atomically: a packet on
// another CPU sees the old ownership or the new one, never the new mask
// with the old invert (as a map update, a memcpy, could show it).
func (c *FlowCache) SetMatch(mask uint32, invert bool) error {
	w := uint64(mask) | paramsEnabled
	if invert {
		w |= paramsInvert
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mapped == nil {
		return fmt.Errorf("flow cache: set mask %#x invert %v: the cache is closed", mask, invert)
	}
	atomic.StoreUint64(c.mapped.Uint64(0), w)
	return nil
}

// AddEgress lets the fast path forward to the interface ifindex (a data
// interface, with the program attached or not). Call it with the thread in
// the interface's network namespace: the kernel resolves the index there.
func (c *FlowCache) AddEgress(ifindex int) error {
	if ifindex <= 0 {
		return fmt.Errorf("flow cache egress ifindex %d: must be positive", ifindex)
	}
	if err := c.egress.Put(uint32(ifindex), uint32(ifindex)); err != nil {
		return fmt.Errorf("flow cache: add egress interface %d: %w", ifindex, err)
	}
	return nil
}

// RemoveEgress stops forwarding to the interface ifindex; a missing one is
// no error.
func (c *FlowCache) RemoveEgress(ifindex int) error {
	if err := c.egress.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("flow cache: remove egress interface %d: %w", ifindex, err)
	}
	return nil
}

// Close removes the cache's maps (programs loaded with it keep their
// references until closed).
func (c *FlowCache) Close() error {
	c.mu.Lock()
	unmap := c.mapped.Close()
	c.mapped = nil
	c.mu.Unlock()
	var counter error
	if c.counter != nil {
		counter = c.counter.Close()
	}
	return errors.Join(unmap, counter, c.flows.Close(), c.params.Close(), c.egress.Close())
}

// CacheStats are a FlowCache's counters.
type CacheStats struct {
	Entries  uint64 // entries now (two per connection)
	Installs uint64 // connections installed (or refreshed)
	Removals uint64 // connections removed (Remove, Forget) that were in the cache
	Lost     uint64 // installed connections Seen found missing (evicted)
}

// Stats reads the counters. Entries is the count the kernel keeps for the
// map, read by one run of the entry counter; where it cannot load
// (CountErr), a walk of the map's keys (call it at scrape time, not per
// packet).
func (c *FlowCache) Stats() (CacheStats, error) {
	s := CacheStats{Installs: c.installs.Load(), Removals: c.removals.Load(), Lost: c.lost.Load()}
	if c.counter != nil {
		n, err := c.counter.Run(&ebpf.RunOptions{})
		if err != nil {
			return s, fmt.Errorf("flow cache: count entries: %w", err)
		}
		s.Entries = uint64(n)
		return s, nil
	}
	// Counted in batches of 4,096 entries (one syscall each: about 500
	// for a full cache of a million connections), at scrape time.
	err := c.walk(func(dataplane.FlowKey, *flowValue) { s.Entries++ })
	if err != nil {
		return s, fmt.Errorf("flow cache: count entries: %w", err)
	}
	return s, nil
}

// ktime is now in CLOCK_MONOTONIC, the program's clock.
func (c *FlowCache) ktime() uint64 { return uint64(c.clock.Now() + c.offset) }

// batchConns is the connections per batch syscall: its keys and values
// live on the caller's stack (2 directions x (40 + 32) bytes each).
const batchConns = 32

var errBucketsLen = errors.New("flow cache install: len(buckets) != len(orig)")

// Install adds or refreshes both directions of connections (see
// dataplane.FlowCache): last seen now, counters zero.
func (c *FlowCache) Install(orig []dataplane.FlowKey, buckets []uint8) error {
	if len(buckets) != len(orig) {
		return errBucketsLen
	}
	now := c.ktime()
	var keys [2 * batchConns]dataplane.FlowKey
	var vals [2 * batchConns]flowValue
	for len(orig) > 0 {
		n := min(len(orig), batchConns)
		for i := range n {
			putBoth(keys[2*i:], &orig[i])
			vals[2*i] = flowValue{LastSeen: now, Bucket: buckets[i]}
			// The reply direction has not been seen until the program
			// sees it (0: never): Seen tells the tracker a reply passed
			// only then.
			vals[2*i+1] = flowValue{Bucket: buckets[i], Dir: 1}
		}
		if _, err := mapBatch(bpfMapUpdateBatch, c.fd, unsafe.Pointer(&keys[0]), unsafe.Pointer(&vals[0]), 2*n); err != nil {
			return fmt.Errorf("flow cache install %d connections: %w", n, err)
		}
		c.installs.Add(uint64(n))
		orig, buckets = orig[n:], buckets[n:]
	}
	return nil
}

// putBoth writes a connection's two keys into dst[0] (its original
// direction, built afresh so that the padding is zero) and dst[1].
func putBoth(dst []dataplane.FlowKey, k *dataplane.FlowKey) {
	dst[0] = dataplane.FlowKey{Family: k.Family, Proto: k.Proto, SrcPort: k.SrcPort, DstPort: k.DstPort, Src: k.Src, Dst: k.Dst}
	dst[1] = k.Reverse()
}

// Remove deletes both directions of connections (see dataplane.FlowCache);
// keys not in the cache are skipped.
func (c *FlowCache) Remove(orig []dataplane.FlowKey) error {
	var keys [2 * batchConns]dataplane.FlowKey
	for len(orig) > 0 {
		n := min(len(orig), batchConns)
		for i := range n {
			putBoth(keys[2*i:], &orig[i])
		}
		removed := uint64(n)
		// The kernel deletes in order and stops at the first missing key,
		// telling how many it deleted: skip that key and go on.
		for at := 0; at < 2*n; {
			done, err := mapBatch(bpfMapDeleteBatch, c.fd, unsafe.Pointer(&keys[at]), nil, 2*n-at)
			if err == nil {
				break
			}
			if err != unix.ENOENT {
				return fmt.Errorf("flow cache remove %d connections: %w", n, err)
			}
			if (at+done)%2 == 0 {
				removed-- // the original direction was not there
			}
			at += done + 1
		}
		c.removals.Add(removed)
		orig = orig[n:]
	}
	return nil
}

// Seen reports when each direction of the connection last passed the fast
// path (the original direction: or was installed; 0: never), in the
// clock's time, and whether the cache still holds the connection (see
// conntrack.Offloader). A connection missing is counted as lost (Seen is
// asked only about installed ones); so is one direction missing, which
// Seen puts back: the LRU evicts the directions separately, and a
// connection carried one way is live.
func (c *FlowCache) Seen(orig *packet.Tuple) (origLast, replyLast int64, ok bool) {
	k := dataplane.KeyOf(orig)
	r := k.Reverse()
	var vo, vr flowValue
	okOrig := mapLookup(c.fd, unsafe.Pointer(&k), unsafe.Pointer(&vo)) == nil
	okReply := mapLookup(c.fd, unsafe.Pointer(&r), unsafe.Pointer(&vr)) == nil
	if okOrig && vo.LastSeen != 0 {
		origLast = int64(vo.LastSeen) - c.offset
	}
	if okReply && vr.LastSeen != 0 {
		replyLast = int64(vr.LastSeen) - c.offset
	}
	switch {
	case okOrig && okReply:
		return origLast, replyLast, true
	case !okOrig && !okReply:
		c.lost.Add(1)
		return 0, 0, false
	}
	// The LRU evicts the two directions separately (the idle one first):
	// the connection is still carried one way. Put the missing direction
	// back, with the bucket the other one holds, so it is carried both
	// ways again and its times reach the tracker.
	c.lost.Add(1)
	if okOrig {
		vr = flowValue{Bucket: vo.Bucket, Dir: 1}
		mapBatch(bpfMapUpdateBatch, c.fd, unsafe.Pointer(&r), unsafe.Pointer(&vr), 1)
	} else {
		vo = flowValue{Bucket: vr.Bucket}
		mapBatch(bpfMapUpdateBatch, c.fd, unsafe.Pointer(&k), unsafe.Pointer(&vo), 1)
	}
	return origLast, replyLast, true
}

// Forget removes the connection from the cache (see conntrack.Offloader).
func (c *FlowCache) Forget(orig *packet.Tuple) {
	keys := [1]dataplane.FlowKey{dataplane.KeyOf(orig)}
	_ = c.Remove(keys[:]) // nothing to do about a failure: the sweeper drops the connection anyway
}

// The bpf(2) commands the cache issues directly (linux/bpf.h).
const (
	bpfMapLookupElem  = 1
	bpfMapUpdateBatch = 26
	bpfMapDeleteBatch = 27
)

// batchAttr is union bpf_attr's batch member.
type batchAttr struct {
	inBatch, outBatch, keys, values uint64
	count, mapFD                    uint32
	elemFlags, flags                uint64
}

// elemAttr is union bpf_attr's element member.
type elemAttr struct {
	mapFD      uint32
	_          uint32
	key, value uint64
	flags      uint64
}

// mapBatch issues a batch command over n keys (and values) and returns how
// many elements the kernel processed. keys and values usually point into
// the caller's stack: they become integers only here, with no call but the
// (nosplit) system call before the kernel reads them, so the stack cannot
// move in between.
func mapBatch(cmd uintptr, fd int, keys, values unsafe.Pointer, n int) (int, error) {
	attr := batchAttr{keys: uint64(uintptr(keys)), values: uint64(uintptr(values)), count: uint32(n), mapFD: uint32(fd)}
	_, _, errno := unix.Syscall(unix.SYS_BPF, cmd, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(keys)
	runtime.KeepAlive(values)
	if errno != 0 {
		return int(attr.count), errno
	}
	return int(attr.count), nil
}

// mapLookup reads one element (as mapBatch, without allocating).
func mapLookup(fd int, key, value unsafe.Pointer) error {
	attr := elemAttr{mapFD: uint32(fd), key: uint64(uintptr(key)), value: uint64(uintptr(value))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, bpfMapLookupElem, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	if errno != 0 {
		return errno
	}
	return nil
}

// Conns is the number of connections the cache holds (NewFlowCache's
// conns).
func (c *FlowCache) Conns() int { return int(c.flows.MaxEntries() / 2) }

// PurgeSources removes every cached connection with a packet from one of
// the given IPv4 addresses (in either direction) and returns how many
// entries (directions) it removed. The workers drop an IPv4 packet from one of the node's own
// addresses as a martian source; a connection cached before the address
// became the node's would be carried on in XDP without that check, so the
// gateway purges such connections when its addresses change (rare: it
// walks the whole map).
func (c *FlowCache) PurgeSources(addrs []netip.Addr) (int, error) {
	set := make(map[[4]byte]bool)
	for _, a := range addrs {
		if a.Is4() {
			set[a.As4()] = true
		}
	}
	if len(set) == 0 {
		return 0, nil
	}
	local := func(a [16]byte) bool { return set[[4]byte(a[:4])] }
	return c.Reconcile(func(orig *packet.Tuple) bool {
		return orig.Family != packet.IPv4 || !local(orig.Src) && !local(orig.Dst)
	})
}

// Reconcile walks the cache and removes every connection that keep,
// asked with its original-direction tuple (once per direction found),
// does not want, and returns how many entries (directions) it found so.
// The gateway runs it now and then with the tracker's view: an entry the tracker did not install (a re-install that raced
// another worker's removal, a failed removal) would otherwise stay until
// the LRU evicts it. It walks the whole map (4,096 entries a syscall):
// call it from a background goroutine.
func (c *FlowCache) Reconcile(keep func(orig *packet.Tuple) bool) (int, error) {
	var drop []dataplane.FlowKey // a connection may be in it twice (both directions): Remove skips what is gone
	err := c.walk(func(k dataplane.FlowKey, v *flowValue) {
		if v.Dir != 0 {
			k = k.Reverse()
		}
		tp := k.Tuple()
		if !keep(&tp) {
			drop = append(drop, k)
		}
	})
	if err != nil {
		return 0, fmt.Errorf("flow cache: walk: %w", err)
	}
	if err := c.Remove(drop); err != nil {
		return 0, err
	}
	return len(drop), nil
}

// walk calls f for every entry of the flow map, reading it 4,096 entries
// a syscall (not per packet: at scrape time and in the background).
func (c *FlowCache) walk(f func(k dataplane.FlowKey, v *flowValue)) error {
	keys := make([]dataplane.FlowKey, 4096)
	vals := make([]flowValue, len(keys))
	var cursor ebpf.MapBatchCursor
	for {
		n, err := c.flows.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			f(keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
