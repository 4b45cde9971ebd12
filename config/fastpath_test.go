package config

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/dataplane"
)

// TestFastPathKeys: dataplane.fast_path and dataplane.fast_path_entries
// reach the settings, the entries resolved to conntrack.max_entries when
// left out, and the effective configuration (what `check` prints) shows
// both with the values in force.
func TestFastPathKeys(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		path           dataplane.FastPath
		entries        int
	}{
		{"defaults", "io: auto", "io: auto", dataplane.FastPathAuto, 1048576},
		{"off", "io: auto", "io: auto\n  fast_path: off", dataplane.FastPathOff, 1048576},
		{"auto written", "io: auto", "io: auto\n  fast_path: auto", dataplane.FastPathAuto, 1048576},
		{"empty is auto", "io: auto", "io: auto\n  fast_path: ''", dataplane.FastPathAuto, 1048576},
		{"entries follow max_entries", "max_entries: 1048576", "max_entries: 4096", dataplane.FastPathAuto, 4096},
		{"entries set", "io: auto", "io: auto\n  fast_path_entries: 65536", dataplane.FastPathAuto, 65536},
		{"entries hex", "io: auto", "io: auto\n  fast_path_entries: 0x400", dataplane.FastPathAuto, 1024},
		{"entries one", "io: auto", "io: auto\n  fast_path_entries: 1", dataplane.FastPathAuto, 1},
		{"entries at max_entries", "io: auto", "io: auto\n  fast_path_entries: 1048576", dataplane.FastPathAuto, 1048576},
		{"entries null is unset", "io: auto", "io: auto\n  fast_path_entries:", dataplane.FastPathAuto, 1048576},
		{"off with afpacket", "io: auto", "io: afpacket\n  fast_path: off\n  fast_path_entries: 10", dataplane.FastPathOff, 10},
	} {
		in := strings.Replace(example, tc.from, tc.to, 1)
		s, err := Parse([]byte(in))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if s.FastPath != tc.path || s.FastPathEntries != tc.entries {
			t.Errorf("%s: fast path %q, %d entries; want %q, %d", tc.name, s.FastPath, s.FastPathEntries, tc.path, tc.entries)
		}
		y := s.YAML()
		entries := strconv.Itoa(tc.entries)
		if strings.Contains(tc.to, "fast_path_entries: 0x400") {
			entries = "0x400" // as written
		}
		shown := string(tc.path)
		if shown == "off" {
			shown = `"off"` // YAML 1.1 would read a bare off as false
		}
		for _, want := range []string{"\n    fast_path: " + shown + "\n", "\n    fast_path_entries: " + entries + "\n"} {
			if !strings.Contains(y, want) {
				t.Errorf("%s: effective configuration lacks %q:\n%s", tc.name, want, y)
			}
		}
		// What check prints reads back to the same settings.
		again, err := Parse([]byte(y))
		if err != nil || again.FastPath != s.FastPath || again.FastPathEntries != s.FastPathEntries || again.YAML() != y {
			t.Errorf("%s: round trip: %v, %+v", tc.name, err, again)
		}
	}
}

// TestFastPathErrors: each bad value is refused naming the key, the value
// and what is allowed; the back-end role refuses both keys.
func TestFastPathErrors(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"on", "io: auto", "io: auto\n  fast_path: on", `dataplane.fast_path "on": must be auto or off`},
		{"yes", "io: auto", "io: auto\n  fast_path: xdp", `dataplane.fast_path "xdp": must be auto or off`},
		{"zero entries", "io: auto", "io: auto\n  fast_path_entries: 0",
			"dataplane.fast_path_entries 0: must be 1..1048576 (at most conntrack.max_entries: the cache holds tracked connections only; leave the key out for conntrack.max_entries)"},
		{"above max_entries", "io: auto", "io: auto\n  fast_path_entries: 1048577", "dataplane.fast_path_entries 1048577: must be 1..1048576"},
		{"above a small max_entries", "max_entries: 1048576\n  tcp_loose: false\ndataplane:\n  io: auto", "max_entries: 1000\n  tcp_loose: false\ndataplane:\n  io: auto\n  fast_path_entries: 1001",
			"dataplane.fast_path_entries 1001: must be 1..1000"},
		{"huge", "io: auto", "io: auto\n  fast_path_entries: 0xffffffffffffffff", "dataplane.fast_path_entries 18446744073709551615: must be 1..1048576"},
		{"not a number", "io: auto", "io: auto\n  fast_path_entries: many", `"many" is not a number`},
		{"unknown key", "io: auto", "io: auto\n  fastpath: off", `unknown key "fastpath" in dataplane`},
	} {
		in := strings.Replace(example, tc.from, tc.to, 1)
		if in == example {
			t.Fatalf("%s: replacement did not apply", tc.name)
		}
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// conntrack.max_entries refused by itself adds no second error.
	_, err := Parse([]byte(strings.Replace(example, "max_entries: 1048576", "max_entries: 0", 1)))
	if err == nil || strings.Contains(err.Error(), "fast_path") {
		t.Errorf("max_entries 0: %v", err)
	}

	backend, err := os.ReadFile("../deploy/examples/backend-three-servers.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ add, want string }{
		{"dataplane:\n  fast_path: off\n", `dataplane.fast_path "off": only for role gateway (a back-end server decides every packet in XDP already; remove the key)`},
		{"dataplane:\n  fast_path: auto\n", `dataplane.fast_path "auto": only for role gateway`},
		{"dataplane:\n  fast_path_entries: 1000\n", "dataplane.fast_path_entries 1000: only for role gateway (a back-end server has no connection tracker to cache; remove the key)"},
	} {
		if _, err := Parse(append(backend, tc.add...)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("backend with %q: %v, want %q", tc.add, err, tc.want)
		}
	}
	// Left out, they do not apply and are not shown.
	s, err := Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	if s.FastPath != "" || s.FastPathEntries != 0 || strings.Contains(s.YAML(), "fast_path") {
		t.Errorf("backend: fast path %q, %d entries, effective configuration:\n%s", s.FastPath, s.FastPathEntries, s.YAML())
	}
	if again, err := Parse([]byte(s.YAML())); err != nil || again.YAML() != s.YAML() {
		t.Errorf("backend round trip: %v", err)
	}
}
