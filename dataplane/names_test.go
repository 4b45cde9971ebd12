package dataplane

import "testing"

// TestVerdictNames: the generated String gives exactly the metric labels
// the hand-written one gave (they are an interface), for every verdict.
func TestVerdictNames(t *testing.T) {
	want := []string{"forwarded", "foreign", "invalid", "malformed", "not_ip", "no_route",
		"no_neighbour", "ttl_expired", "tx_full", "local", "forwarded_kernel",
		"martian_source", "martian_destination", "broadcast", "multicast", "link_local",
		"route_blackhole", "route_unreachable", "route_prohibit"}
	if len(want) != NumVerdicts {
		t.Fatalf("%d verdicts named here, NumVerdicts %d", len(want), NumVerdicts)
	}
	for v, w := range want {
		if got := Verdict(v).String(); got != w {
			t.Errorf("Verdict(%d) = %q, want %q", v, got, w)
		}
	}
}
