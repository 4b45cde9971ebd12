package daemon

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/config"
	"github.com/xdpcluster/xdpcluster/membership"
)

// flakyEngine refuses the next fail SetMatch calls.
type flakyEngine struct {
	fakeEngine
	fail int
}

func (e *flakyEngine) SetMatch(m cluster.Match) error {
	e.mu.Lock()
	if e.fail > 0 {
		e.fail--
		e.mu.Unlock()
		return errors.New("flow cache: map update failed")
	}
	e.mu.Unlock()
	return e.fakeEngine.SetMatch(m)
}

// TestApplyRetries: a view the dataplane refused once is applied again
// at the next try (the membership's loop tries at every health tick), so
// one failed switch never leaves a bucket unserved.
func TestApplyRetries(t *testing.T) {
	base := cluster.Match{TotalNodes: 6, NodeMask: 0x3, Seed: 1}
	e := &flakyEngine{fakeEngine: fakeEngine{m: base}, fail: 1}
	d := New("", &config.Settings{Role: "gateway"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.eng = e
	ms := &mship{d: d, cfg: config.MembershipSettings{ManageShares: true}, log: d.log, base: base, applied: 0x3}
	ms.view = membership.View{Self: "a", Mask: 0xb} // node 2 failed: bucket 4 falls to this node
	ms.apply()
	if got := e.Match(); got.NodeMask != 0x3 || ms.applied != 0x3 {
		t.Fatalf("after a refused switch: dataplane %#x, applied %#x; want both still 0x3", got.NodeMask, ms.applied)
	}
	ms.apply()
	if got := e.Match(); got.NodeMask != 0xb || got.Invert || ms.applied != 0xb {
		t.Fatalf("after the retry: dataplane %s, applied %#x; want mask 0xb", got.String(), ms.applied)
	}
	// Buckets go only after dropGrace (make before break); serving
	// nothing (a node not ready while its peers serve its share) is every
	// bucket inverted.
	ms.view.Mask = 0
	ms.apply()
	if got := e.Match(); got.NodeMask != 0xb || got.Invert {
		t.Fatalf("buckets given up at once: %s; want them kept for %v", got.String(), dropGrace)
	}
	time.Sleep(dropGrace + 50*time.Millisecond)
	ms.apply()
	if got := e.Match(); !got.Invert || got.NodeMask != 0x3f {
		t.Fatalf("serving nothing: %s", got.String())
	}
	for b := 0; b < 6; b++ {
		if m := e.Match(); m.OwnsNode(b) {
			t.Errorf("serving nothing owns bucket %d", b+1)
		}
	}
	// manage_shares false: the view is never applied.
	ms.cfg.ManageShares = false
	ms.view.Mask = 0x3f
	ms.apply()
	if got := e.Match(); !got.Invert {
		t.Errorf("manage_shares false applied the view: %s", got.String())
	}
}

// TestHomeBuckets: the home share is the configured match's buckets,
// invert applied.
func TestHomeBuckets(t *testing.T) {
	for _, tc := range []struct {
		m    cluster.Match
		want uint32
	}{
		{cluster.Match{TotalNodes: 3, NodeMask: 0x2}, 0x2},
		{cluster.Match{TotalNodes: 3, NodeMask: 0x2, Invert: true}, 0x5},
		{cluster.Match{TotalNodes: 32, NodeMask: 0x1, Invert: true}, 0xfffffffe},
		{cluster.Match{TotalNodes: 12, NodeMask: 0xf00}, 0xf00},
	} {
		if got := homeBuckets(tc.m); got != tc.want {
			t.Errorf("homeBuckets(%s) = %#x, want %#x", tc.m.String(), got, tc.want)
		}
	}
}
