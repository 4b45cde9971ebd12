package gateway

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/packet"
)

// snapGateway is the part of a Gateway the snapshot needs: a table, a
// clock and a logger writing into logs.
func snapGateway(t *testing.T, logs *bytes.Buffer) *Gateway {
	tb, err := conntrack.NewTable(conntrack.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &Gateway{tracker: tb, clock: conntrack.NewClock(), log: slog.New(slog.NewTextHandler(logs, nil))}
}

func udp4(src string) *packet.Parsed {
	p := &packet.Parsed{}
	s := netip.MustParseAddr(src).As4()
	copy(p.Src[:], s[:])
	p.Dst = [16]byte{203, 0, 113, 80}
	p.Family, p.Proto, p.TTL, p.HasPorts, p.SrcPort, p.DstPort = 4, packet.ProtoUDP, 64, true, 5000, 53
	return p
}

// TestSnapshotFile: the save is atomic and private, the restore consumes
// the file, and each refusal is logged at WARN with its reason while the
// table starts empty.
func TestSnapshotFile(t *testing.T) {
	m := cluster.LocalNode(2, 1, 0xdeadbeef)
	dir := t.TempDir()
	path := filepath.Join(dir, "conntrack.snap")
	save := func() {
		t.Helper()
		var logs bytes.Buffer
		g := snapGateway(t, &logs)
		for _, a := range []string{"198.51.100.10", "198.51.100.11", "198.51.100.12"} {
			g.tracker.Track(udp4(a), g.clock.Now())
		}
		if err := g.saveSnapshot(path, m); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("snapshot %v, %v: want mode 0600", st, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("%d files in the state directory, want the snapshot only (no temporary file left)", len(ents))
		}
	}
	for _, tc := range []struct {
		name    string
		prepare func()
		match   cluster.Match
		want    int    // connections restored
		log     string // in the logs
	}{
		{"restored", save, m, 3, `level=INFO msg="connection table restored"`},
		{"no snapshot", func() {}, m, 0, `level=INFO msg="no connection table snapshot`},
		{"other seed", save, cluster.LocalNode(2, 1, 1), 0, `level=WARN msg="connection table snapshot not restored: starting with an empty table"`},
		{"other node count", save, cluster.LocalNode(3, 1, 0xdeadbeef), 0, "snapshot taken with other cluster parameters: saved with total_nodes 2"},
		{"corrupt", func() { save(); os.WriteFile(path, []byte("XCCTSNAP garbage"), 0o600) }, m, 0, "reason=\"read connection snapshot: corrupt snapshot"},
		{"too old", func() {
			save()
			old := time.Now().Add(-2 * conntrack.DefaultSnapshotMaxAge)
			b, _ := os.ReadFile(path)
			os.WriteFile(path, rewriteSaved(t, b, old), 0o600)
		}, m, 0, "snapshot too old: saved 2m0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.prepare()
			var logs bytes.Buffer
			g := snapGateway(t, &logs)
			g.restoreSnapshot(path, tc.match, 0)
			if n := g.tracker.Len(); n != tc.want {
				t.Errorf("%d connections restored, want %d", n, tc.want)
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Errorf("logs lack %q:\n%s", tc.log, logs.String())
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("%d files left in the state directory: the snapshot could be read twice", len(ents))
			}
		})
	}
}

// rewriteSaved re-encodes a snapshot with another save time: read it into
// a table at that time, then write it back.
func rewriteSaved(t *testing.T, b []byte, saved time.Time) []byte {
	tb, _ := conntrack.NewTable(conntrack.Config{})
	p := snapshotParams(cluster.LocalNode(2, 1, 0xdeadbeef))
	if _, err := tb.ReadSnapshot(bytes.NewReader(b), p, 0, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := tb.WriteSnapshot(&out, p, 0, saved); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
