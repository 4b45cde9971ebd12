package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/internal/netns"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// fakeSystemd is the receiving end of NOTIFY_SOCKET: the datagrams a
// Type=notify service sends, in order, with when they arrived.
type fakeSystemd struct {
	path string
	mu   sync.Mutex
	msgs []notifyMsg
	pos  int // next() searches from here
}

type notifyMsg struct {
	at   time.Time
	text string // assignments separated by newlines
}

func (m notifyMsg) has(assignment string) bool {
	for _, a := range strings.Split(m.text, "\n") {
		if a == assignment || strings.HasSuffix(assignment, "=") && strings.HasPrefix(a, assignment) {
			return true
		}
	}
	return false
}

func (m notifyMsg) get(key string) string {
	for _, a := range strings.Split(m.text, "\n") {
		if v, ok := strings.CutPrefix(a, key+"="); ok {
			return v
		}
	}
	return ""
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	f := &fakeSystemd{path: filepath.Join(t.TempDir(), "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: f.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			f.mu.Lock()
			f.msgs = append(f.msgs, notifyMsg{time.Now(), strings.TrimRight(string(buf[:n]), "\n")})
			f.mu.Unlock()
		}
	}()
	return f
}

func (f *fakeSystemd) all() []notifyMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]notifyMsg(nil), f.msgs...)
}

func (f *fakeSystemd) dump() string {
	var b strings.Builder
	for i, m := range f.all() {
		b.WriteString("  ")
		if i == f.pos {
			b.WriteString("> ")
		}
		b.WriteString(strings.ReplaceAll(m.text, "\n", " | ") + "\n")
	}
	return b.String()
}

// next waits for the first message from the cursor on that has
// assignment (a "KEY=" prefix matches any value), moves the cursor past
// it and returns it.
func (f *fakeSystemd) next(t *testing.T, p *proc, assignment string, timeout time.Duration) notifyMsg {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := f.all()
		for i := f.pos; i < len(msgs); i++ {
			if msgs[i].has(assignment) {
				f.pos = i + 1
				return msgs[i]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %v; messages (> marks where the search began):\n%s\nlog:\n%s", assignment, timeout, f.dump(), p.logs())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// since returns the messages from the cursor on.
func (f *fakeSystemd) since() []notifyMsg { return f.all()[f.pos:] }

// TestRunNotifiesSystemd runs `xdpcluster run` (a gateway) as systemd
// would start a Type=notify unit with WatchdogSec=1s, with a fake
// NOTIFY_SOCKET, and checks the messages it receives, in order: STATUS
// while starting, READY=1 only once the node serves; WATCHDOG=1 pings at
// WatchdogSec/2; around `xdpcluster ctl reload` (ExecReload) RELOADING=1
// with MONOTONIC_USEC, then READY=1 with the new state, and for a refused
// reload the same with the refusal in STATUS and ctl exiting 1 (so
// `systemctl reload` fails); an interface down for less than the
// tolerance (3 × WatchdogSec) keeps the watchdog fed and says why in
// STATUS; down for longer, WATCHDOG=trigger and no more pings; STOPPING=1
// at SIGTERM.
func TestRunNotifiesSystemd(t *testing.T) {
	nstest.Require(t)
	bin := buildBinary(t)
	cl := nstest.Cluster(t, "xc-ntf", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1})
	ns := cl.Nodes[0]
	cfg, sock := gatewayConfig(t, cl, t.TempDir(), 1)
	sd := newFakeSystemd(t)
	const watchdog = time.Second
	p := startRun(t, ns, bin, cfg, "NOTIFY_SOCKET="+sd.path, "WATCHDOG_USEC=1000000")

	// Start: STATUS while starting, then READY=1 once the node serves.
	if m := sd.next(t, p, "STATUS=", 10*time.Second); !strings.HasPrefix(m.get("STATUS"), "starting") || m.has("READY=1") {
		t.Errorf("first message %q, want STATUS=starting...", m.text)
	}
	ready := sd.next(t, p, "READY=1", 15*time.Second)
	if st := ready.get("STATUS"); !strings.HasPrefix(st, "serving node(s) [1] of 2") {
		t.Errorf("READY=1 with STATUS=%q, want serving node(s) [1] of 2 ...", st)
	}
	if strings.Contains(ready.get("STATUS"), "raw sockets") {
		t.Errorf("as root the gateway runs AF_XDP, but STATUS says %q", ready.get("STATUS"))
	}
	if !strings.Contains(p.logs(), "node started") {
		t.Errorf("READY=1 before the node started:\n%s", p.logs())
	}
	if out, err := exec.Command(bin, "ctl", "--socket", sock, "health").CombinedOutput(); err != nil {
		t.Errorf("READY=1 sent, but ctl health: %v %s", err, out)
	}

	// Watchdog pings every WatchdogSec/2.
	first := sd.next(t, p, "WATCHDOG=1", 3*time.Second)
	var pings []time.Time
	for range 3 {
		pings = append(pings, sd.next(t, p, "WATCHDOG=1", 3*time.Second).at)
	}
	if gap := pings[2].Sub(first.at) / 3; gap < watchdog/4 || gap > watchdog*3/4 {
		t.Errorf("watchdog pings every %v, want about WatchdogSec/2 = %v", gap, watchdog/2)
	}

	ctlReload := func() (string, int) {
		out, err := exec.Command(bin, "ctl", "--socket", sock, "reload").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A good reload: node 2's share.
	write(strings.Replace(string(orig), "local_node: 1", "local_node: 2", 1))
	if out, code := ctlReload(); code != 0 {
		t.Fatalf("ctl reload: exit %d: %s", code, out)
	}
	rl := sd.next(t, p, "RELOADING=1", 5*time.Second)
	if us := rl.get("MONOTONIC_USEC"); us == "" || us == "0" {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", rl.text)
	}
	if m := sd.next(t, p, "READY=1", 5*time.Second); !strings.HasPrefix(m.get("STATUS"), "serving node(s) [2] of 2") {
		t.Errorf("after the reload: %q, want READY=1 and STATUS=serving node(s) [2] of 2", m.text)
	}

	// A refused reload (hash_seed needs a restart): ctl exits 1, systemd
	// hears RELOADING=1 then READY=1 with the refusal.
	write(strings.Replace(string(orig), "hash_seed: 0xdeadbeef", "hash_seed: 0x1234", 1))
	out, code := ctlReload()
	if code != 1 || !strings.Contains(out, "reload refused") || !strings.Contains(out, "cluster.hash_seed") {
		t.Errorf("ctl reload of a refused configuration: exit %d, %q; want exit 1 saying why (systemctl reload fails)", code, out)
	}
	sd.next(t, p, "RELOADING=1", 5*time.Second)
	if m := sd.next(t, p, "READY=1", 5*time.Second); !strings.HasPrefix(m.get("STATUS"), "reload refused, keeping the running configuration") || !strings.Contains(m.get("STATUS"), "cluster.hash_seed") {
		t.Errorf("after the refused reload: %q, want READY=1 and STATUS=reload refused, keeping the running configuration: cluster.hash_seed ...", m.text)
	}
	write(string(orig))

	// An interface down for 1.5 s (< 3 × WatchdogSec): the watchdog stays
	// fed, STATUS says why, then serving again; no trigger.
	nstest.Run(t, ns, "ip", "link", "set", "front", "down")
	down := sd.next(t, p, "STATUS=", 5*time.Second)
	if st := down.get("STATUS"); !strings.HasPrefix(st, "not ready: ") || !strings.Contains(st, "front") {
		t.Errorf("with front down: STATUS=%q, want not ready: ... front ...", st)
	}
	time.Sleep(1500 * time.Millisecond)
	nstest.Run(t, ns, "ip", "link", "set", "front", "up")
	up := sd.next(t, p, "STATUS=", 5*time.Second)
	if !up.has("WATCHDOG=1") || !strings.HasPrefix(up.get("STATUS"), "serving") {
		t.Errorf("front up again: %q, want WATCHDOG=1 and STATUS=serving...", up.text)
	}
	n := 0
	for _, m := range sd.all() {
		if m.at.After(down.at) && m.at.Before(up.at) {
			if m.has("WATCHDOG=trigger") {
				t.Errorf("a short link down triggered the watchdog: %q", m.text)
			}
			if m.has("WATCHDOG=1") {
				n++
			}
		}
	}
	if n < 2 {
		t.Errorf("%d watchdog pings while front was down for 1.5 s, want the watchdog fed (every %v):\n%s", n, watchdog/2, sd.dump())
	}

	// Down for longer than the tolerance: WATCHDOG=trigger (systemd then
	// restarts the daemon), and no more pings.
	nstest.Run(t, ns, "ip", "link", "set", "front", "down")
	down = sd.next(t, p, "STATUS=", 5*time.Second)
	trig := sd.next(t, p, "WATCHDOG=trigger", 10*time.Second)
	if d := trig.at.Sub(down.at); d < 3*watchdog-watchdog/2 || d > 3*watchdog+watchdog {
		t.Errorf("WATCHDOG=trigger %v after the interface went down, want about 3 × WatchdogSec = %v", d, 3*watchdog)
	}
	if st := trig.get("STATUS"); !strings.HasPrefix(st, "restarting: not ready for") || !strings.Contains(st, "front") {
		t.Errorf("WATCHDOG=trigger with STATUS=%q, want restarting: not ready for ...: ... front ...", st)
	}
	time.Sleep(1500 * time.Millisecond)
	for _, m := range sd.since() {
		if m.has("WATCHDOG=1") {
			t.Errorf("the watchdog was fed after the trigger: %q", m.text)
		}
	}
	nstest.Run(t, ns, "ip", "link", "set", "front", "up")

	// Stop (systemd sends SIGTERM, WatchdogSignal too): STOPPING=1.
	p.cmd.Process.Signal(syscall.SIGTERM)
	if m := sd.next(t, p, "STOPPING=1", 10*time.Second); !strings.HasPrefix(m.get("STATUS"), "stopping") {
		t.Errorf("STOPPING=1 with %q", m.text)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, p.logs())
	}
	t.Logf("what systemd heard:\n%s", sd.dump())
}

// TestRunWithoutSystemd: without NOTIFY_SOCKET the daemon runs as before
// (nothing to notify, no error), and a NOTIFY_SOCKET it cannot use is
// only a warning.
func TestRunWithoutSystemd(t *testing.T) {
	nstest.Require(t)
	bin := buildBinary(t)
	cl := nstest.Cluster(t, "xc-nsd", netns.ClusterOptions{Nodes: 1, Clients4: 1, Clients6: 1})
	cfg, sock := gatewayConfig(t, cl, t.TempDir(), 1)
	p := startRun(t, cl.Nodes[0], bin, cfg, "NOTIFY_SOCKET=relative/path", "WATCHDOG_USEC=nonsense")
	p.waitLog(t, "msg=ready", 15*time.Second)
	waitStatus(t, p, sock)
	for _, w := range []string{`msg="not notifying systemd"`, `NOTIFY_SOCKET=\"relative/path\"`, `msg="not feeding systemd's watchdog"`} {
		if !strings.Contains(p.logs(), w) {
			t.Errorf("log does not say %s:\n%s", w, p.logs())
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.logs())
	}
}
