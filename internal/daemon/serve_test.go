package daemon

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/config"
)

// fakeEngine stands in for a dataplane so that the daemon's servers run
// without root: it keeps the match it is given.
type fakeEngine struct {
	mu     sync.Mutex
	m      cluster.Match
	health error // what Health reports
}

func (e *fakeEngine) Match() cluster.Match { e.mu.Lock(); defer e.mu.Unlock(); return e.m }
func (e *fakeEngine) SetMatch(m cluster.Match) error {
	if err := m.Validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m = m
	return nil
}
func (e *fakeEngine) Modes() map[string]string   { return map[string]string{"front": "fake"} }
func (e *fakeEngine) Connections() int           { return 0 }
func (e *fakeEngine) Packets() map[string]uint64 { return nil }
func (e *fakeEngine) Announce()                  {}
func (e *fakeEngine) Health() error              { e.mu.Lock(); defer e.mu.Unlock(); return e.health }
func (e *fakeEngine) Close() error               { return nil }
func (e *fakeEngine) Collector(string) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdpcluster_node_mask"}, func() float64 { return float64(e.Match().NodeMask) })
}

// fakeDaemon is a daemon whose dataplane is a fakeEngine, its control
// socket in a temporary directory.
func fakeDaemon(t *testing.T, sock string) *Daemon {
	c := config.Settings{Role: "gateway", MetricsListen: "127.0.0.1:0", ControlSocket: sock, StateDir: t.TempDir()}
	d := New("", &c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.eng = &fakeEngine{m: cluster.LocalNode(2, 1, 1)}
	d.started = time.Now()
	t.Cleanup(func() { d.Stop() })
	return d
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	return len(ents)
}

// TestMetricsFloodKeepsControl: thousands of idle connections to the
// metrics port, with the process's descriptor limit just above what the
// flood itself needs, neither exhaust the daemon's descriptors nor delay
// a takeover on the control socket; the daemon holds no more than its
// limit of them, and a scrape works again once they time out.
func TestMetricsFloodKeepsControl(t *testing.T) {
	const flood = 3000
	d := fakeDaemon(t, filepath.Join(t.TempDir(), "control.sock"))
	d.Limits = Limits{ReadTimeout: 1500 * time.Millisecond, IdleTimeout: 1500 * time.Millisecond}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	// Room for the flood's client ends, the daemon's limits and a margin:
	// a daemon that accepts every connection runs out of descriptors.
	soft := uint64(openFDs(t) + flood + 64 + 16 + 100)
	if soft > rl.Max {
		t.Skipf("skipping: the hard descriptor limit %d is below the %d the test needs", rl.Max, soft)
	}
	lowered := rl
	lowered.Cur = soft
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl) })
	if err := d.Serve(); err != nil {
		t.Fatal(err)
	}
	goroutines := runtime.NumGoroutine()
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := 0; i < flood; i++ {
		c, err := net.Dial("tcp", d.MetricsAddr())
		if err != nil {
			t.Errorf("idle connection %d: %v: the flood exhausted the descriptors", i, err)
			break
		}
		conns = append(conns, c)
	}
	// Wait until the daemon has taken every connection of the flood,
	// holding it or refusing it.
	for deadline := time.Now().Add(10 * time.Second); d.metricsLn.Active()+int(d.metricsLn.refused.Load()) < flood; {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s the daemon holds %d metrics connections and refused %d, of the %d of the flood", d.metricsLn.Active(), d.metricsLn.refused.Load(), flood)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n, r := d.metricsLn.Active(), d.metricsLn.refused.Load(); n > 64 || int(r) < flood-64 {
		t.Errorf("the daemon holds %d metrics connections and refused %d, want at most 64 held", n, r)
	}
	if n := runtime.NumGoroutine() - goroutines; n > 64+20 {
		t.Errorf("%d goroutines more during the flood, want at most about the limit of 64", n)
	}
	t.Logf("flood of %d: %d held, %d refused, %d goroutines more", flood, d.metricsLn.Active(), d.metricsLn.refused.Load(), runtime.NumGoroutine()-goroutines)

	c := NewClient(d.sock)
	c.c.Timeout = time.Second
	start := time.Now()
	st, err := c.Do("POST", "/takeover?node=2")
	if err != nil || st.NodeMask != "0x3" {
		t.Fatalf("takeover during the flood: %+v, %v", st, err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("takeover took %v during the flood", el)
	}
	t.Logf("takeover during the flood: %v", time.Since(start))

	// Idle connections time out; a scrape then gets through.
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := hc.Get("http://" + d.MetricsAddr() + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(b), "xdpcluster_node_mask 3") {
				t.Fatalf("scrape: %s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scrape got through once the idle connections timed out: %v (held %d)", err, d.metricsLn.Active())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestControlSocketPath: control.socket naming a file, a directory or the
// configuration file itself is refused, naming the path and what it is,
// and left intact; a socket a daemon answers on is refused; a stale
// socket is replaced.
func TestControlSocketPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep me"), 0o644)
	cfgFile := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfgFile, []byte("cluster:\n  total_nodes: 2\n"), 0o644)
	emptyDir := filepath.Join(dir, "emptydir")
	os.Mkdir(emptyDir, 0o755)
	link := filepath.Join(dir, "link")
	os.Symlink(file, link)
	for _, tc := range []struct{ name, path, want string }{
		{"regular file", file, "is a regular file, not a socket"},
		{"configuration file", cfgFile, "is a regular file, not a socket"},
		{"empty directory", emptyDir, "is a directory, not a socket"},
		{"symbolic link", link, "is a symbolic link, not a socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := os.Lstat(tc.path)
			d := fakeDaemon(t, tc.path)
			err := d.Serve()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), "control.socket") {
				t.Fatalf("Serve: %v, want an error naming control.socket, %s and %q", err, tc.path, tc.want)
			}
			d.Stop()
			after, err := os.Lstat(tc.path)
			if err != nil || after.Mode() != before.Mode() || after.Size() != before.Size() {
				t.Fatalf("%s changed: %v %v", tc.path, after, err)
			}
		})
	}
	if b, _ := os.ReadFile(cfgFile); string(b) != "cluster:\n  total_nodes: 2\n" {
		t.Errorf("the configuration file changed: %q", b)
	}

	// A socket a daemon answers on.
	sock := filepath.Join(dir, "live.sock")
	d1 := fakeDaemon(t, sock)
	if err := d1.Serve(); err != nil {
		t.Fatal(err)
	}
	d2 := fakeDaemon(t, sock)
	d2.cfg.MetricsListen = ""
	if err := d2.Serve(); err == nil || !strings.Contains(err.Error(), "another xdpcluster answers") {
		t.Fatalf("second daemon on a live socket: %v", err)
	}
	if _, err := NewClient(sock).Do("GET", "/status"); err != nil {
		t.Fatalf("the first daemon's socket no longer answers: %v", err)
	}

	// A stale socket (a crashed run's: bound, nobody listening) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	d3 := fakeDaemon(t, stale)
	d3.cfg.MetricsListen = ""
	if err := d3.Serve(); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if _, err := NewClient(stale).Do("GET", "/status"); err != nil {
		t.Fatalf("the socket replacing a stale one does not answer: %v", err)
	}
}

// TestControlSocketMode: with the process's umask 0, the control socket is
// created with mode 0600 and never changed afterwards (inotify sees its
// creation and no attribute change), so it is never world-writable.
func TestControlSocketMode(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Skipf("skipping: inotify: %v", err)
	}
	defer unix.Close(in)
	if _, err := unix.InotifyAddWatch(in, dir, unix.IN_CREATE|unix.IN_ATTRIB); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0)
	d := fakeDaemon(t, sock)
	err = d.Serve()
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %v %v: want a socket, mode 0600", fi, err)
	}
	var created, changed bool
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(in, buf)
		if errors.Is(err, unix.EAGAIN) || n <= 0 {
			break
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafePointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			if name == "control.sock" {
				created = created || ev.Mask&unix.IN_CREATE != 0
				changed = changed || ev.Mask&unix.IN_ATTRIB != 0
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
	if !created {
		t.Fatal("inotify did not see the socket's creation")
	}
	if changed {
		t.Error("the socket's mode was changed after its creation: it existed for a while with another mode")
	}
}

func unsafePointer(b *byte) unsafe.Pointer { return unsafe.Pointer(b) }

// TestListenControlBeforeDataplane: ListenControl claims the socket with
// no dataplane running (run calls it first), Serve then serves on it, and
// a Stop without Serve (the dataplane failed to start) removes it; a path
// that cannot be used is refused by ListenControl and left as it is.
func TestListenControlBeforeDataplane(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	d := fakeDaemon(t, sock)
	d.eng = nil
	if err := d.ListenControl(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("after ListenControl: %v %v, want a socket", fi, err)
	}
	d.Stop()
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("Stop without Serve left %s behind", sock)
	}

	d = fakeDaemon(t, sock)
	if err := d.ListenControl(); err != nil {
		t.Fatal(err)
	}
	if err := d.Serve(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewClient(sock).Do("GET", "/status"); err != nil {
		t.Fatalf("Serve does not answer on the socket ListenControl claimed: %v", err)
	}

	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep me"), 0o644)
	d2 := fakeDaemon(t, file)
	d2.eng = nil
	if err := d2.ListenControl(); err == nil || !strings.Contains(err.Error(), "is a regular file") {
		t.Fatalf("ListenControl on a regular file: %v", err)
	}
	d2.Stop()
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Errorf("the file changed: %q %v", b, err)
	}
}
