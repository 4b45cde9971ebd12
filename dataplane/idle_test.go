package dataplane

import (
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
)

// TestStopWakesIdleWorker: an idle worker sleeps in poll with a long
// timeout (an idle gateway must cost nothing), so Stop wakes it through
// the eventfd in its poll set: Stop returns at once, not after the
// timeout.
func TestStopWakesIdleWorker(t *testing.T) {
	d, _, _ := testDataplane(t, cluster.LocalNode(2, 1, 0xdeadbeef), staticResolver{Route{Iface: 1, NextHop: nextHop, Verdict: Forwarded}})
	d.Start()
	time.Sleep(100 * time.Millisecond) // past the idle spins: asleep in poll
	start := time.Now()
	d.Stop()
	if took := time.Since(start); took > idlePollMs*time.Millisecond/4 {
		t.Fatalf("Stop took %v with the worker idle; the poll timeout is %d ms", took, idlePollMs)
	}
}
