package config

import (
	"strings"
	"testing"
)

// TestMemoryAFPacketFlowCache: with dataplane.io: afpacket the gateway
// creates the flow cache too (its tc program reads it), so the memory
// check and Settings.Memory (xdpcluster check's memory line) count it, but
// no AF_XDP memory; with the fast path off, neither. On 1 GiB a
// 2 M-connection table (256 MiB) fits in half the RAM alone, not with the
// flow cache (544 MiB).
func TestMemoryAFPacketFlowCache(t *testing.T) {
	saved := SystemMemory
	SystemMemory = func() (uint64, error) { return 1 << 30, nil }
	t.Cleanup(func() { SystemMemory = saved })
	big := strings.Replace(example, "max_entries: 1048576", "max_entries: 2097152", 1)
	if big == example || !strings.Contains(example, "io: auto") {
		t.Fatal("the example changed: adjust the replacements")
	}
	for _, io := range []string{"io: auto", "io: afpacket"} {
		if _, err := Parse([]byte(strings.Replace(big, "io: auto", io, 1))); err == nil || !strings.Contains(err.Error(), "flow cache for 2097152 connections") {
			t.Errorf("%s, max_entries 2097152 on 1 GiB: %v; want refused for the table and the flow cache", io, err)
		}
	}
	s, err := Parse([]byte(strings.Replace(big, "io: auto", "io: afpacket\n  fast_path: off", 1)))
	if err != nil {
		t.Fatalf("io afpacket, fast_path off, max_entries 2097152 on 1 GiB refused: %v", err)
	}
	if m := s.Memory(); m.FlowCache != 0 || m.UMEMPerQueue != 0 || m.Table != 256<<20 {
		t.Errorf("io afpacket, fast_path off: Memory() %+v, want the table's 256 MiB, no flow cache, no UMEM", m)
	}
	small := strings.Replace(example, "io: auto", "io: afpacket", 1)
	if s, err = Parse([]byte(small)); err != nil {
		t.Fatal(err)
	}
	if m := s.Memory(); m.FlowCache != 272<<20 || m.UMEMPerQueue != 0 {
		t.Errorf("io afpacket: Memory() %+v, want the flow cache's 272 MiB and no UMEM", m)
	}
}
