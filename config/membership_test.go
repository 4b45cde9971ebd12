package config

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSecret writes a secret file with the given content and mode.
func writeSecret(t *testing.T, content []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(p, content, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMembershipKeys: the membership section reaches the settings with
// its defaults resolved (name, advertise, resync port and timeout), the
// effective configuration shows them and reads back the same, and every
// bad value is refused naming its key.
func TestMembershipKeys(t *testing.T) {
	key32 := []byte(strings.Repeat("k", 32))
	b64 := writeSecret(t, []byte(base64.StdEncoding.EncodeToString(key32)+"\n"), 0o600)
	raw16 := writeSecret(t, []byte(strings.Repeat("r", 16)), 0o400)
	open := writeSecret(t, key32, 0o644)
	short := writeSecret(t, []byte("short"), 0o600)
	section := func(body string) string { return example + "membership:\n" + body }

	t.Run("none", func(t *testing.T) {
		s, err := Parse([]byte(example))
		if err != nil || s.Membership != nil || strings.Contains(s.YAML(), "membership") {
			t.Fatalf("without the section: %v, %+v", err, s.Membership)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		s, err := Parse([]byte(section("  bind: 192.0.2.11:7946\n  join: [192.0.2.12:7946, \"peer.example:7946\"]\n  secret_file: " + b64 + "\n")))
		if err != nil {
			t.Fatal(err)
		}
		m := s.Membership
		if m.Name != "192.0.2.11:7946" || m.Advertise.String() != "192.0.2.11:7946" || m.Resync.String() != "192.0.2.11:7947" ||
			m.ResyncTimeout != DefaultResyncTimeout || string(m.Secret) != string(key32) || len(m.Join) != 2 {
			t.Fatalf("settings %+v", m)
		}
		y := s.YAML()
		if !m.ManageShares {
			t.Error("manage_shares defaults to false")
		}
		for _, want := range []string{"name: 192.0.2.11:7946", "resync_port: 7947", "resync_timeout: 1m0s", "advertise: 192.0.2.11:7946", "manage_shares: true"} {
			if !strings.Contains(y, want) {
				t.Errorf("effective configuration lacks %q:\n%s", want, y)
			}
		}
		again, err := Parse([]byte(y))
		if err != nil || again.YAML() != y {
			t.Errorf("round trip: %v", err)
		}
	})
	t.Run("set", func(t *testing.T) {
		s, err := Parse([]byte(section("  bind: 0.0.0.0:7000\n  advertise: 192.0.2.11:7000\n  name: gw1\n  secret_file: " + raw16 + "\n  resync_port: 9000\n  resync_timeout: 5s\n  manage_shares: false\n")))
		if err != nil {
			t.Fatal(err)
		}
		m := s.Membership
		if m.Name != "gw1" || m.Resync.String() != "192.0.2.11:9000" || m.ResyncTimeout != 5*time.Second || len(m.Secret) != 16 || m.ManageShares {
			t.Fatalf("settings %+v", m)
		}
	})
	for _, tc := range []struct{ name, body, want string }{
		{"no bind", "  secret_file: " + b64 + "\n", `membership.bind "": must be address:port`},
		{"host name bind", "  bind: gw1:7946\n  secret_file: " + b64 + "\n", `membership.bind "gw1:7946"`},
		{"port 0", "  bind: 192.0.2.11:0\n  secret_file: " + b64 + "\n", `membership.bind "192.0.2.11:0"`},
		{"unspecified", "  bind: 0.0.0.0:7946\n  secret_file: " + b64 + "\n", "needs membership.advertise"},
		{"bad join", "  bind: 192.0.2.11:7946\n  join: [192.0.2.12]\n  secret_file: " + b64 + "\n", `membership.join[0] "192.0.2.12"`},
		{"no secret", "  bind: 192.0.2.11:7946\n", "membership.secret_file: required"},
		{"missing secret", "  bind: 192.0.2.11:7946\n  secret_file: /nonexistent/key\n", "membership.secret_file: stat /nonexistent/key"},
		{"readable secret", "  bind: 192.0.2.11:7946\n  secret_file: " + open + "\n", "lets group or others read"},
		{"short secret", "  bind: 192.0.2.11:7946\n  secret_file: " + short + "\n", "5 bytes; a cluster secret is 16, 24 or 32 bytes"},
		{"resync port clash", "  bind: 192.0.2.11:7946\n  resync_port: 7946\n  secret_file: " + b64 + "\n", "membership.resync_port 7946"},
		{"resync timeout", "  bind: 192.0.2.11:7946\n  resync_timeout: 10ms\n  secret_file: " + b64 + "\n", "membership.resync_timeout 10ms: must be 1s..1h"},
		{"name with space", "  bind: 192.0.2.11:7946\n  name: a b\n  secret_file: " + b64 + "\n", `membership.name "a b"`},
		{"unknown key", "  bind: 192.0.2.11:7946\n  seeds: []\n  secret_file: " + b64 + "\n", `unknown key "seeds" in membership`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(section(tc.body)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestMembershipNeedsRestart: a reload that changes the membership
// section names it as a key that needs a restart.
func TestMembershipNeedsRestart(t *testing.T) {
	key := writeSecret(t, []byte(strings.Repeat("k", 32)), 0o600)
	a, err := Parse([]byte(example + "membership:\n  bind: 192.0.2.11:7946\n  secret_file: " + key + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte(example + "membership:\n  bind: 192.0.2.11:7950\n  secret_file: " + key + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if keys := RestartKeys(a, b); len(keys) != 1 || keys[0] != "membership" {
		t.Fatalf("restart keys %v, want [membership]", keys)
	}
}
