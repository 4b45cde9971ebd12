package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/xdpcluster/xdpcluster/config"
	"github.com/xdpcluster/xdpcluster/internal/daemon"
)

const defaultConfig = "/etc/xdpcluster/config.yaml"

// newLogger builds the slog logger the configuration asks for.
func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func runRun(e env, o *runOptions) int {
	// Signals first, before anything else: Go's default for SIGHUP, SIGINT
	// and SIGTERM is to exit at once, which during start would leave the
	// node half set up. A reload asked for during start is applied once
	// start completes; a stop asked for during start stops the node as
	// soon as start completes (undoing everything it did).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	reload := make(chan struct{}, 1) // requests coalesce
	stop := make(chan os.Signal, 1)
	go func() {
		for s := range sigs {
			if s == syscall.SIGHUP {
				select {
				case reload <- struct{}{}:
				default:
				}
				continue
			}
			select {
			case stop <- s:
			default:
			}
		}
	}()
	defer func() {
		signal.Stop(sigs)
		close(sigs)
	}()

	path := &o.config
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(e.stderr, "xdpcluster run: %v\n", err)
		return exitFail
	}
	log := newLogger(e.stderr, cfg.Log)
	// systemd (Type=notify): READY=1 once the node serves, STATUS= lines,
	// RELOADING=1/READY=1 around reloads, STOPPING=1, the watchdog. Off
	// unless systemd set NOTIFY_SOCKET (and WATCHDOG_USEC).
	notifier, err := daemon.NewNotifier()
	if err != nil {
		log.Warn("not notifying systemd", "error", err)
	}
	watchdog, err := daemon.WatchdogInterval()
	if err != nil {
		log.Warn("not feeding systemd's watchdog", "error", err)
	}
	notify := func(assignments ...string) {
		if err := notifier.Notify(assignments...); err != nil {
			log.Warn("notify systemd", "error", err)
		}
	}
	cannotStart := func(err error) int {
		log.Error("cannot start", "error", err)
		notify(daemon.NotifyStatus("cannot start: " + err.Error()))
		return exitFail
	}
	select {
	case s := <-stop:
		log.Info("stopping before start", "signal", s.String())
		return exitOK
	default:
	}
	log.Info("starting", "version", version, "config", *path, "role", cfg.Role, "pid", os.Getpid())
	notify(daemon.NotifyStatus("starting: attaching the dataplane"))
	testHoldStart(log)
	d := daemon.New(*path, cfg, log)
	d.Version = version
	// Claim the control socket before touching the host: a control.socket
	// path that cannot be used stops the start with nothing changed (no
	// XDP program, no addresses, no sysctls, no snapshot consumed).
	if err := d.ListenControl(); err != nil {
		return cannotStart(err)
	}
	if err := d.StartDataplane(); err != nil {
		d.Stop()
		return cannotStart(err)
	}
	watchdogStop := make(chan struct{})
	stopNow := func(s os.Signal, during string) int {
		log.Info("stopping", "signal", s.String(), "received", during)
		close(watchdogStop)
		notify("STOPPING=1", daemon.NotifyStatus("stopping: detaching the dataplane"))
		if err := d.Stop(); err != nil {
			log.Error("stop", "error", err)
			return exitFail
		}
		return exitOK
	}
	select {
	case s := <-stop:
		return stopNow(s, "during start")
	default:
	}
	if err := d.Serve(); err != nil {
		d.Stop()
		return cannotStart(err)
	}
	select {
	case s := <-stop:
		return stopNow(s, "during start")
	case <-reload:
		log.Info("applying the reload requested during start")
		if err := d.Reload(); err != nil {
			log.Error("reload", "error", err)
		}
	default:
	}
	// READY=1 only once the node serves: the dataplane attached and
	// healthy, and with a membership section the connection table
	// resynced (Daemon.Ready). Until then systemd shows why not.
	tick := time.NewTicker(100 * time.Millisecond)
	var waiting string
	for err := d.Ready(); err != nil; err = d.Ready() {
		if err.Error() != waiting {
			waiting = err.Error()
			log.Info("waiting until the node is ready", "reason", waiting)
			notify(daemon.NotifyStatus("starting: not ready: " + waiting))
		}
		select {
		case s := <-stop:
			tick.Stop()
			return stopNow(s, "while waiting to be ready")
		case <-reload:
			if err := d.Reload(); err != nil {
				log.Error("reload", "error", err)
			}
		case <-tick.C:
		}
	}
	tick.Stop()
	d.SetNotifier(notifier) // reloads now say RELOADING=1, then READY=1
	notify("READY=1", daemon.NotifyStatus(d.StatusLine()))
	log.Info("ready", "status", d.StatusLine())
	go d.Watchdog(notifier, watchdog, watchdogStop)
	for {
		select {
		case <-reload:
			if err := d.Reload(); err != nil {
				log.Error("reload", "error", err)
			}
		case s := <-stop:
			return stopNow(s, "while running")
		}
	}
}

// testHoldStartEnv is a test hook, off unless set: a duration (e.g. "2s")
// runRun sleeps for after logging "starting" and before it touches
// anything, so that a test's signal lands during start deterministically
// (the real window is some 40 ms). Not for production use.
const testHoldStartEnv = "XDPCLUSTER_TEST_HOLD_START"

func testHoldStart(log *slog.Logger) {
	v := os.Getenv(testHoldStartEnv)
	if v == "" {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		log.Warn("ignoring the test hook "+testHoldStartEnv, "value", v, "error", err)
		return
	}
	log.Warn("test hook: holding the start", "env", testHoldStartEnv, "for", d)
	time.Sleep(d)
}

func runCheck(e env, path string) int {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(e.stderr, "xdpcluster check: %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return exitFail
	}
	m := cfg.Match
	var fixed []string
	for _, nt := range config.FixedTimeouts() {
		fixed = append(fixed, fmt.Sprintf("%s %v", nt.Name, *nt.Value))
	}
	fmt.Fprintf(e.stdout, "# %s is valid\n# cluster match: %s (serves node(s) %v)\n# conntrack timeouts no key sets (the kernel's defaults): %s\n",
		path, m, m.Nodes(), strings.Join(fixed, ", "))
	if mem := cfg.Memory(); cfg.Role == "gateway" {
		io := fmt.Sprintf("AF_XDP %d MiB per interface and receive queue", mem.UMEMPerQueue>>20)
		switch {
		case mem.RawPerInterface > 0 && mem.UMEMPerQueue > 0: // auto: raw sockets on veth
			io += fmt.Sprintf(" (on veth, where io auto takes raw sockets: raw-socket rings %d MiB per interface)", mem.RawPerInterface>>20)
		case mem.RawPerInterface > 0:
			io = fmt.Sprintf("raw-socket rings %d MiB per interface", mem.RawPerInterface>>20)
		}
		fmt.Fprintf(e.stdout, "# memory: connection table up to %d MiB, flow cache %d MiB (allocated at start), %s\n",
			mem.Table>>20, mem.FlowCache>>20, io)
	}
	fmt.Fprint(e.stdout, cfg.YAML())
	return exitOK
}

// printMembership prints the membership part of ctl status: this node's
// readiness, the members, who serves each bucket, the last resync.
func printMembership(w io.Writer, m *daemon.MembershipStatus) {
	ready := "ready"
	if !m.Ready {
		ready = "not ready: " + m.Reason
	}
	fmt.Fprintf(w, "membership:  %s (%s)\n", m.Name, ready)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  MEMBER\tADDRESS\tSTATE\tREADY\tHOME")
	// By name, whatever order the reply has.
	members := slices.SortedStableFunc(slices.Values(m.Members), func(a, b daemon.MemberStatus) int { return strings.Compare(a.Name, b.Name) })
	for _, mb := range members {
		r := "yes"
		if !mb.Ready {
			r = "no"
			if mb.Reason != "" {
				r += " (" + mb.Reason + ")"
			}
		}
		name := mb.Name
		if mb.Self {
			name += " (this node)"
		}
		state := mb.State
		if mb.Incompatible {
			state += ", other cluster parameters"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%v\n", name, mb.Addr, state, r, mb.Home)
	}
	tw.Flush()
	if !m.ManageShares {
		fmt.Fprintln(w, "shares:      moved by keepalived or ctl (membership.manage_shares: false)")
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if m.ManageShares {
		fmt.Fprintln(tw, "  BUCKET\tSERVED BY")
	}
	for b, servers := range m.Buckets {
		if !m.ManageShares {
			break
		}
		who := strings.Join(servers, ", ")
		switch len(servers) {
		case 0:
			who = "nobody (lost)"
		case 1:
		default:
			who += " (duplicated)"
		}
		fmt.Fprintf(tw, "  %d\t%s\n", b+1, who)
	}
	tw.Flush()
	r := m.Resync
	if r.Pulls > 0 {
		res := "ok"
		if r.LastError != "" {
			res = "failed: " + r.LastError
		}
		fmt.Fprintf(w, "resync:      last pull from %s: %d connections, %d bytes in %v (%s); %d pull(s), %d failed; %d served to peers\n",
			r.LastPeer, r.LastRecords, r.LastBytes, r.LastDuration.Round(time.Millisecond), res, r.Pulls, r.PullErrors, r.Served)
	} else {
		fmt.Fprintf(w, "resync:      no pull (no ready peer when this node started); %d served to peers\n", r.Served)
	}
}
