package daemon

import (
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/config"
	"github.com/xdpcluster/xdpcluster/dataplane"
)

// TestGatewayConfigFastPath: the flow cache keys of the file reach the
// gateway's configuration, the entries resolved to conntrack.max_entries
// when the file leaves them out.
func TestGatewayConfigFastPath(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		path           dataplane.FastPath
		entries        int
	}{
		{"defaults", "", "", dataplane.FastPathAuto, 1 << 20},
		{"entries follow max_entries", "dataplane:", "conntrack:\n  max_entries: 50000\ndataplane:", dataplane.FastPathAuto, 50000},
		{"off", "frames: 8192", "frames: 8192\n  fast_path: off", dataplane.FastPathOff, 1 << 20},
		{"entries", "frames: 8192", "frames: 8192\n  fast_path_entries: 300", dataplane.FastPathAuto, 300},
	} {
		s, err := config.Parse([]byte(strings.Replace(checkConfig, tc.from, tc.to, 1)))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		gc := gatewayConfig(s, nil)
		if gc.FastPath != tc.path || gc.FastPathEntries != tc.entries {
			t.Errorf("%s: gateway.Config fast path %q, %d entries; want %q, %d", tc.name, gc.FastPath, gc.FastPathEntries, tc.path, tc.entries)
		}
	}
}
