package config

import (
	"strings"
	"testing"
)

// TestMemoryAFPacketNoFlowCache: with dataplane.io: afpacket the gateway
// never creates the XDP flow cache (raw sockets, no XDP program), so
// neither the memory check nor Settings.Memory (xdpcluster check's memory
// line) counts it. On 1 GiB a 2 M-connection table (256 MiB) fits in half
// the RAM; with io auto the flow cache (544 MiB) makes it too much.
func TestMemoryAFPacketNoFlowCache(t *testing.T) {
	saved := SystemMemory
	SystemMemory = func() (uint64, error) { return 1 << 30, nil }
	t.Cleanup(func() { SystemMemory = saved })
	big := strings.Replace(example, "max_entries: 1048576", "max_entries: 2097152", 1)
	if big == example || !strings.Contains(example, "io: auto") {
		t.Fatal("the example changed: adjust the replacements")
	}
	s, err := Parse([]byte(strings.Replace(big, "io: auto", "io: afpacket", 1)))
	if err != nil {
		t.Fatalf("io afpacket, max_entries 2097152 on 1 GiB refused: %v", err)
	}
	if m := s.Memory(); m.FlowCache != 0 || m.UMEMPerQueue != 0 || m.Table != 256<<20 {
		t.Errorf("io afpacket: Memory() %+v, want the table's 256 MiB, no flow cache, no UMEM", m)
	}
	if _, err := Parse([]byte(big)); err == nil || !strings.Contains(err.Error(), "XDP flow cache for 2097152 connections") {
		t.Errorf("io auto, max_entries 2097152 on 1 GiB: %v; want refused for the table and the flow cache", err)
	}
}
