package gateway

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
	"github.com/xdpcluster/xdpcluster/node"
)

// waitFor polls cond until it holds, or fails the test after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting: %s", what)
		}
	}
}

// TestKernelFollowRestarts (root): when the kernel's neighbour subscription
// ends the way the netlink library ends it on a receive error (the error
// callback, then the channel closed), the gateway logs and counts it,
// subscribes again, and keeps following: a neighbour added afterwards
// reaches the resolver's map through the events (no new dump) and an
// address added afterwards flushes the route caches. Close then returns
// and leaves no goroutine behind.
//
// Not parallel: it replaces the package's subscribeNeighs.
func TestKernelFollowRestarts(t *testing.T) {
	ns := ResolverNamespace(t, "xc-frst")
	injected := errors.New("Receive failed: no buffer space available (injected)")
	real := subscribeNeighs
	t.Cleanup(func() { subscribeNeighs = real })
	var calls atomic.Int32
	endFirst := make(chan struct{})
	// The first subscription is real, seen through a relay that, once
	// endFirst is closed, ends it as the library does on ENOBUFS.
	subscribeNeighs = func(ch chan<- netlink.NeighUpdate, done <-chan struct{}, o netlink.NeighSubscribeOptions) error {
		if calls.Add(1) > 1 {
			return real(ch, done, o)
		}
		mine := make(chan netlink.NeighUpdate, 256)
		if err := real(mine, done, o); err != nil {
			return err
		}
		go func() {
			defer func() {
				for range mine { // until done closes the real one
				}
			}()
			for {
				select {
				case u, ok := <-mine:
					if !ok {
						close(ch)
						return
					}
					ch <- u
				case <-endFirst:
					o.ErrorCallback(injected)
					close(ch)
					return
				}
			}
		}()
		return nil
	}

	base := runtime.NumGoroutine()
	logs := &nstest.LogBuffer{}
	var g *Gateway
	if err := ns.Do(func() (err error) {
		g, err = Start(Config{Interfaces: []node.Interface{{Name: "dpa", ClusterMAC: net.HardwareAddr{1, 0, 0x5e, 0, 1, 1}}},
			Match: cluster.LocalNode(2, 1, 1), IO: "afpacket",
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			g.Close()
		}
	})
	r := g.resolver
	following := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.following
	}
	dumps := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.dumps
	}
	if g.KernelFollowRestarts() != 0 || !following() {
		t.Fatalf("at start: %d restarts, following %v", g.KernelFollowRestarts(), following())
	}

	// (a) The subscription ends: counted and logged, then made again.
	close(endFirst)
	waitFor(t, "the restart counted", func() bool { return g.KernelFollowRestarts() == 1 })
	waitFor(t, "subscribed again", func() bool { return calls.Load() >= 2 && following() })
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "kernel following stopped") || !strings.Contains(l, injected.Error()) {
		t.Errorf("the restart is not logged as a warning with its error; logs:\n%s", l)
	}

	// (b) Changes made after the restart are still followed.
	nb := netip.MustParseAddr("203.0.113.80")
	if got := ResolveAddr(r, nb); got.Verdict != dataplane.NoNeighbour {
		t.Fatalf("before the neighbour exists: %v", got.Verdict)
	}
	dumped := dumps() // the one dump after subscribing again
	gen := g.Dataplane().RouteGeneration()
	nstest.Run(t, ns, "ip", "addr", "add", "198.51.100.77/32", "dev", "dpa")
	waitFor(t, "an address added after the restart flushes the route caches", func() bool { return g.Dataplane().RouteGeneration() != gen })
	nstest.Run(t, ns, "ip", "neigh", "replace", "203.0.113.80", "lladdr", "02:00:00:00:00:80", "dev", "dpa", "nud", "permanent")
	want := [6]byte{2, 0, 0, 0, 0, 0x80}
	waitFor(t, "a neighbour added after the restart reaches the resolver", func() bool {
		got := ResolveAddr(r, nb)
		return got.Verdict == dataplane.Forwarded && got.NextHop == want
	})
	if d := dumps(); d != dumped {
		t.Errorf("%d neighbour dumps after the restart's first, want 0: the events are not followed", d-dumped)
	}
	if n := g.KernelFollowRestarts(); n != 1 {
		t.Errorf("%d restarts, want 1", n)
	}

	// (c) Close returns, following stopped, no goroutine left behind.
	closeDone := make(chan struct{})
	go func() { g.Close(); close(closeDone) }()
	select {
	case <-closeDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	closed = true
	select {
	case <-g.followed:
	default:
		t.Error("Close returned while the kernel was still followed")
	}
	var n int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if n = runtime.NumGoroutine(); n <= base {
			break
		}
	}
	if n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after Close, %d before Start:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}
