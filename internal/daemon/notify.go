package daemon

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Notifier speaks systemd's notification protocol (sd_notify(3)) for a
// unit of Type=notify: newline-separated VAR=value assignments in one
// datagram to the AF_UNIX socket $NOTIFY_SOCKET names (a path, or an
// abstract name written with a leading '@'). A nil Notifier, or one made
// without $NOTIFY_SOCKET (not started by systemd), sends nothing.
type Notifier struct {
	addr *net.UnixAddr
	mu   sync.Mutex // one message at a time, in order
}

// NewNotifier returns the Notifier for the environment's NOTIFY_SOCKET, nil
// when it is unset (not started by systemd with Type=notify). An address
// that is neither absolute nor abstract is an error.
func NewNotifier() (*Notifier, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil, nil
	}
	if name[0] != '/' && name[0] != '@' {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q: want an absolute path or an abstract socket name (@name)", name)
	}
	// Go's net package maps a leading '@' to the abstract namespace (a
	// leading NUL byte), as sd_notify does.
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}, nil
}

// Enabled reports whether n sends anything.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Notify sends the assignments (e.g. "READY=1", "STATUS=serving") in one
// datagram. It is a no-op on a disabled Notifier. A newline inside a value
// is replaced by a space: it would end the assignment.
func (n *Notifier) Notify(assignments ...string) error {
	if !n.Enabled() || len(assignments) == 0 {
		return nil
	}
	var b strings.Builder
	for _, a := range assignments {
		b.WriteString(strings.ReplaceAll(a, "\n", " "))
		b.WriteByte('\n')
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify to NOTIFY_SOCKET %s: %w", n.addr.Name, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(b.String())); err != nil {
		return fmt.Errorf("sd_notify to NOTIFY_SOCKET %s: %w", n.addr.Name, err)
	}
	return nil
}

// NotifyStatus returns the STATUS= assignment for text (systemctl status shows
// it).
func NotifyStatus(text string) string { return "STATUS=" + text }

// Reloading returns the assignments that start a reload: RELOADING=1 and
// the CLOCK_MONOTONIC time in microseconds (MONOTONIC_USEC), which newer
// systemd versions require to match the reload to its request.
func Reloading() []string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return []string{"RELOADING=1", "MONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)}
}

// WatchdogInterval returns the interval systemd's watchdog expects pings
// at (WatchdogSec=, passed as $WATCHDOG_USEC), or 0 when the watchdog is
// off or meant for another process ($WATCHDOG_PID).
func WatchdogInterval() (time.Duration, error) {
	v := os.Getenv("WATCHDOG_USEC")
	if v == "" {
		return 0, nil
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, nil
	}
	us, err := strconv.ParseUint(v, 10, 63)
	if err != nil || us == 0 {
		return 0, fmt.Errorf("WATCHDOG_USEC=%q: want a positive number of microseconds", v)
	}
	return time.Duration(us) * time.Microsecond, nil
}

// UnhealthyTolerance is how long the watchdog keeps being fed while the
// dataplane is unhealthy, in watchdog intervals: 3 × WatchdogSec (30 s
// with the unit's WatchdogSec=10s). A link that flaps, an interface down
// for a few seconds, a resync that takes a while do not restart the
// daemon (a restart would not bring the link back, and costs the
// connection table's freshness); a dataplane still broken after that
// (our XDP program detached by someone else, an interface that stays
// down) is restarted by systemd.
const UnhealthyTolerance = 3

// Watchdog feeds systemd's watchdog (WATCHDOG=1 every interval/2) while
// the daemon is ready (Ready is nil), and while it has been unhealthy for
// less than UnhealthyTolerance × interval, saying so in STATUS=. Past
// that it stops feeding it and sends WATCHDOG=trigger with the reason in
// STATUS=, so systemd restarts the daemon at once (or, before systemd
// 243, when the watchdog times out). It returns when stop is closed, or
// after the trigger.
func (d *Daemon) Watchdog(n *Notifier, interval time.Duration, stop <-chan struct{}) {
	if !n.Enabled() || interval <= 0 {
		return
	}
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	tolerance := UnhealthyTolerance * interval
	var since time.Time // when the dataplane became unhealthy; zero while healthy
	for {
		err := d.Ready()
		switch {
		case err == nil && !since.IsZero():
			since = time.Time{}
			d.log.Info("ready again: the dataplane is healthy")
			n.Notify("WATCHDOG=1", NotifyStatus(d.StatusLine()))
		case err == nil:
			n.Notify("WATCHDOG=1")
		case since.IsZero():
			since = time.Now()
			d.log.Warn("not ready; systemd restarts the daemon if this lasts", "reason", err, "tolerated_for", tolerance)
			n.Notify("WATCHDOG=1", NotifyStatus(fmt.Sprintf("not ready: %v (restarted if it lasts %v)", err, tolerance)))
		case time.Since(since) < tolerance:
			n.Notify("WATCHDOG=1")
		default:
			d.log.Error("not ready for too long: asking systemd to restart the daemon (watchdog)", "reason", err, "for", time.Since(since).Round(time.Second))
			n.Notify("WATCHDOG=trigger", NotifyStatus(fmt.Sprintf("restarting: not ready for %v: %v", time.Since(since).Round(time.Second), err)))
			return
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// StatusLine is the one-line state systemd shows (STATUS=) for a node
// that serves: the match, and how the interfaces run, with a note when
// dataplane.io auto fell back to raw sockets.
func (d *Daemon) StatusLine() string {
	st := d.Status()
	if st.Match == "" {
		return "the dataplane is not running"
	}
	s := fmt.Sprintf("serving node(s) %v of %d (%s)", st.Serves, st.TotalNodes, st.Role)
	if f := st.IOFallback; f != "" {
		s += "; note: AF_XDP unavailable, on raw sockets (slower): " + f
	}
	return s
}

// Reload re-reads the configuration file (see reload) and tells systemd
// through the notifier set with SetNotifier: RELOADING=1 before, READY=1
// after, with the outcome in STATUS= (a refused reload keeps the running
// configuration, so the node is ready again; the caller, `xdpcluster ctl
// reload` in ExecReload, fails so that `systemctl reload` does).
func (d *Daemon) Reload() error {
	d.mu.Lock()
	n := d.notifier
	d.mu.Unlock()
	n.Notify(Reloading()...)
	err := d.reload()
	status := d.StatusLine()
	if err != nil {
		status = err.Error() // "reload refused, keeping the running configuration: ..."
		if !strings.HasPrefix(status, "reload refused") {
			status = "reload refused: " + status
		}
	}
	n.Notify("READY=1", NotifyStatus(status))
	return err
}

// SetNotifier makes Reload tell systemd through n (nil: not at all).
func (d *Daemon) SetNotifier(n *Notifier) {
	d.mu.Lock()
	d.notifier = n
	d.mu.Unlock()
}
