package daemon

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/config"
)

// matchOnlyEngine is an engine with a match and nothing else, for the
// control API and reload checks that need no dataplane.
type matchOnlyEngine struct{ m *cluster.Match }

func (e matchOnlyEngine) Match() cluster.Match { return *e.m }
func (e matchOnlyEngine) SetMatch(m cluster.Match) error {
	if err := m.Validate(); err != nil {
		return err
	}
	*e.m = m
	return nil
}
func (matchOnlyEngine) Modes() map[string]string              { return nil }
func (matchOnlyEngine) Connections() int                      { return 0 }
func (matchOnlyEngine) Packets() map[string]uint64            { return nil }
func (matchOnlyEngine) Announce()                             {}
func (matchOnlyEngine) Collector(string) prometheus.Collector { return nil }
func (matchOnlyEngine) Close() error                          { return nil }
func (matchOnlyEngine) Health() error                         { return nil }

const checkConfig = `cluster:
  total_nodes: 32
  local_node: 1
  hash_seed: 0xdeadbeef
interfaces:
  - name: eth1
    cluster_mac: "01:00:5e:00:01:01"
dataplane:
  frames: 8192
`

func matchOnlyDaemon(t *testing.T, yaml string) (*Daemon, *cluster.Match, string) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Match
	d := New(path, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.eng = matchOnlyEngine{&m}
	return d, &m, path
}

// TestControlAPIHugeNode: a node number beyond int's range is refused
// with its own value, not converted to a negative node.
func TestControlAPIHugeNode(t *testing.T) {
	d, m, _ := matchOnlyDaemon(t, checkConfig)
	api := d.controlAPI()
	for _, tc := range []struct{ path, want string }{
		{"/takeover?node=9223372036854775809", "node 9223372036854775809: must be 1..32"},
		{"/release?node=9223372036854775809", "node 9223372036854775809: must be 1..32"},
		{"/takeover?node=18446744073709551615", "node 18446744073709551615: must be 1..32"},
		{"/takeover?node=4294967297", "node 4294967297: must be 1..32"},
		{"/takeover?node=33", "node 33: must be 1..32"},
		{"/mask?mask=0x100000001", "mask 0x100000001: must fit in 32 bits"},
	} {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest("POST", tc.path, nil))
		var body map[string]string
		json.NewDecoder(rec.Body).Decode(&body)
		if rec.Code != http.StatusBadRequest || body["error"] != tc.want {
			t.Errorf("%s: %d %q, want 400 %q", tc.path, rec.Code, body["error"], tc.want)
		}
	}
	if m.NodeMask != 1 {
		t.Errorf("mask changed to %#x by refused requests", m.NodeMask)
	}
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest("POST", "/takeover?node=32", nil))
	if rec.Code != http.StatusOK || m.NodeMask != 1|1<<31 {
		t.Errorf("takeover 32: %d %s, mask %#x", rec.Code, rec.Body, m.NodeMask)
	}
}

// TestReloadNamesRestartKeys: a reload that changes a key needing a
// restart is refused naming that key; the run-time keys still apply.
func TestReloadNamesRestartKeys(t *testing.T) {
	d, m, path := matchOnlyDaemon(t, checkConfig)
	for _, tc := range []struct{ from, to, want string }{
		{"hash_seed: 0xdeadbeef", "hash_seed: 0xbeef", "cluster.hash_seed changed"},
		{"total_nodes: 32", "total_nodes: 31", "cluster.total_nodes changed"},
		{"frames: 8192", "frames: 16384", "dataplane.frames, dataplane.ring_size changed"},
		{`"01:00:5e:00:01:01"`, `"01:00:5e:00:01:02"`, "interfaces[0].cluster_mac changed"},
		{"dataplane:", "state_dir: /tmp/elsewhere\ndataplane:", "state_dir changed"},
		{"frames: 8192", "frames: 8192\n  fast_path: off", "dataplane.fast_path changed"},
		{"frames: 8192", "frames: 8192\n  fast_path_entries: 4096", "dataplane.fast_path_entries changed"},
		{"  local_node: 1\n  hash_seed: 0xdeadbeef", "  local_node: 2\n  hash_seed: 1", "cluster.hash_seed changed"},
	} {
		in := strings.Replace(checkConfig, tc.from, tc.to, 1)
		if in == checkConfig {
			t.Fatalf("%q: replacement did not apply", tc.from)
		}
		os.WriteFile(path, []byte(in), 0o644)
		err := d.Reload()
		if err == nil || !strings.Contains(err.Error(), "reload refused, keeping the running configuration: "+tc.want+", which needs a restart") {
			t.Errorf("%s -> %s: %v, want %q", tc.from, tc.to, err, tc.want)
		}
		if m.NodeMask != 1 {
			t.Fatalf("refused reload changed the mask to %#x", m.NodeMask)
		}
	}
	os.WriteFile(path, []byte(strings.Replace(checkConfig, "local_node: 1", "local_nodemask: 6\n  invert: true", 1)), 0o644)
	if err := d.Reload(); err != nil || m.NodeMask != 6 || !m.Invert {
		t.Errorf("run-time reload: %v, match %+v", err, *m)
	}
}
