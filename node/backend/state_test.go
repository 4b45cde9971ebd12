package backend

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestRecordedSysctl: a sysctl path from a record is cleaned before it is
// checked, so ".." cannot lead out of /proc/sys/net/.
func TestRecordedSysctl(t *testing.T) {
	for _, tc := range []struct {
		path, want string
		ok         bool
	}{
		{"/proc/sys/net/ipv4/conf/front/arp_ignore", "/proc/sys/net/ipv4/conf/front/arp_ignore", true},
		{"/proc/sys/net//ipv4/./conf/front/arp_announce", "/proc/sys/net/ipv4/conf/front/arp_announce", true},
		{"/proc/sys/net/../kernel/hostname", "", false},
		{"/proc/sys/net/../../../etc/passwd", "", false},
		{"/proc/sys/net/ipv4/../../../../tmp/x", "", false},
		{"/proc/sys/net", "", false},
		{"/proc/sys/netfilter/x", "", false},
		{"proc/sys/net/ipv4/x", "", false},
	} {
		got, err := recordedSysctl(tc.path)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("recordedSysctl(%q) = %q, %v; want %q, ok %v", tc.path, got, err, tc.want, tc.ok)
		}
	}
}

// TestOpenStateRejectsDotDot: a crafted record whose sysctl path climbs out
// of /proc/sys/net/ with ".." is not written (the file it points at keeps
// its content) and the refusal is logged; the record's real sysctl is
// still restored.
func TestOpenStateRejectsDotDot(t *testing.T) {
	ns := nstest.New(t, "xc-st")
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	const lo = "/proc/sys/net/ipv4/conf/lo/arp_ignore"
	var n *Node
	err := ns.Do(func() error {
		ino, err := netnsInode()
		if err != nil {
			return err
		}
		rec, _ := json.Marshal(changes{PID: 1, Netns: ino, Sysctls: map[string]string{
			"/proc/sys/net/../../.." + victim: "pwned",
			lo:                                "0",
		}})
		if err := os.WriteFile(filepath.Join(dir, "backend-net"+strconv.FormatUint(ino, 10)+".json"), rec, 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(lo, []byte("1"), 0); err != nil {
			return err
		}
		n = &Node{}
		if n.handle, err = netlink.NewHandle(); err != nil {
			return err
		}
		if n.lo, err = n.handle.LinkByName("lo"); err != nil {
			return err
		}
		return n.openState(dir, nil, nil, log)
	})
	if n != nil {
		defer n.closeState(true)
		if n.handle != nil {
			defer n.handle.Close()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me\n" {
		t.Fatalf("the file a crafted record named through .. was written: %q %v", b, err)
	}
	if !strings.Contains(logs.String(), "not under /proc/sys/net/") {
		t.Errorf("the refused path was not logged:\n%s", logs.String())
	}
	if v := strings.TrimSpace(nstest.Run(t, ns, "sysctl", "-n", "net.ipv4.conf.lo.arp_ignore")); v != "0" {
		t.Errorf("the record's real sysctl was not restored: arp_ignore=%s", v)
	}
}
