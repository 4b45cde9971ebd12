package backend

import (
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/cluster"
)

// TestNodeSetMatchFixed: a back-end node, like the gateway, changes only
// its node mask and invert flag at run time; a new node count, seed or
// hash mode is refused and the match in force is kept.
func TestNodeSetMatchFixed(t *testing.T) {
	m := cluster.LocalNode(3, 1, 7)
	n := &Node{match: m}
	for _, next := range []cluster.Match{cluster.LocalNode(4, 1, 7), cluster.LocalNode(3, 1, 8)} {
		if err := n.SetMatch(next); err == nil || !strings.Contains(err.Error(), "cannot change at run time") {
			t.Errorf("SetMatch(%s): %v, want refused", next, err)
		}
		if n.Match() != m {
			t.Fatalf("a refused SetMatch changed the match to %s", n.Match())
		}
	}
	next := m
	next.NodeMask, next.Invert = 0b011, true
	if err := n.SetMatch(next); err != nil || n.Match() != next {
		t.Errorf("SetMatch(%s): %v; match %s", next, err, n.Match())
	}
}
