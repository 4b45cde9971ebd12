package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listenNotify listens on a unixgram socket at name (a path, or @abstract)
// and returns a function receiving the next datagram.
func listenNotify(t *testing.T, name string) func() string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return func() string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read the notification: %v", err)
		}
		return string(buf[:n])
	}
}

// TestNotifier: sd_notify's datagrams, to a path and to an abstract
// socket (@name), one newline-terminated assignment per line, a newline
// inside a value flattened; nothing without NOTIFY_SOCKET; a relative
// NOTIFY_SOCKET refused.
func TestNotifier(t *testing.T) {
	abstract := "@xdpcluster-test-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), abstract} {
		t.Run(name, func(t *testing.T) {
			recv := listenNotify(t, name)
			t.Setenv("NOTIFY_SOCKET", name)
			n, err := NewNotifier()
			if err != nil || !n.Enabled() {
				t.Fatalf("NewNotifier: %v %v", n, err)
			}
			if err := n.Notify("READY=1", NotifyStatus("serving\nnode 1")); err != nil {
				t.Fatal(err)
			}
			if got, want := recv(), "READY=1\nSTATUS=serving node 1\n"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			if err := n.Notify(Reloading()...); err != nil {
				t.Fatal(err)
			}
			got := recv()
			us, _ := strings.CutPrefix(strings.Split(got, "\n")[1], "MONOTONIC_USEC=")
			if v, err := strconv.ParseInt(us, 10, 64); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") || err != nil || v <= 0 {
				t.Errorf("Reloading: %q", got)
			}
		})
	}
	t.Run("unset", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		n, err := NewNotifier()
		if err != nil || n.Enabled() {
			t.Fatalf("without NOTIFY_SOCKET: %v %v", n, err)
		}
		if err := n.Notify("READY=1"); err != nil {
			t.Errorf("a disabled notifier: %v", err)
		}
	})
	t.Run("relative", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "run/notify")
		if _, err := NewNotifier(); err == nil || !strings.Contains(err.Error(), `NOTIFY_SOCKET="run/notify"`) {
			t.Errorf("relative NOTIFY_SOCKET: %v", err)
		}
	})
	t.Run("gone", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody"))
		n, _ := NewNotifier()
		if err := n.Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET") {
			t.Errorf("a socket nobody listens on: %v", err)
		}
	})
}

func TestWatchdogInterval(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		err       string
	}{
		{"", "", 0, ""},
		{"10000000", "", 10 * time.Second, ""},
		{"10000000", me, 10 * time.Second, ""},
		{"10000000", "1", 0, ""}, // another process's watchdog
		{"0", "", 0, "WATCHDOG_USEC=\"0\""},
		{"10s", "", 0, "WATCHDOG_USEC=\"10s\": want a positive number of microseconds"},
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		got, err := WatchdogInterval()
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v %v, want %v %q", tc.usec, tc.pid, got, err, tc.want, tc.err)
		}
	}
}
