package main

// The one-core family: every piece of the dut's work on one core, as a
// user who pins a gateway to a core would measure it. The dut's ingress
// veth runs threaded NAPI (its napi/<if>-<id> kthread is pinned to the
// dut's core), the daemon is the real binary started under taskset on the
// same core (all its threads: workers, Go runtime, control path), and the
// generator's thread runs on the other core. The sink drops in XDP; its
// receive runs in the softirq of whoever transmits to it: the dut's core.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/bench"
	"github.com/xdpcluster/xdpcluster/internal/netns"
)

// inIf is the dut's ingress interface. Its name is unique on the host:
// the threaded NAPI kthread is found by name (napi/<if>-<id>, truncated
// to 15 characters) and other namespaces may have an in0 of their own.
var inIf = "in" + netns.Suffix(4)

// pinThread pins the calling thread (which must be locked to its
// goroutine) to cpu and returns what puts its affinity back.
func pinThread(cpu int) func() {
	var old, set unix.CPUSet
	must(unix.SchedGetaffinity(0, &old))
	set.Set(cpu)
	must(unix.SchedSetaffinity(0, &set))
	return func() { unix.SchedSetaffinity(0, &old) }
}

// cores picks the generator's core and the dut's core.
func cores() (gen, dut int, err error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0, 0, err
	}
	var cpus []int
	for c := 0; c < 1024 && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		return 0, 0, fmt.Errorf("the one-core family needs 2 cores (one for the generator, one for the dut), have %d", len(cpus))
	}
	return cpus[0], cpus[len(cpus)-1], nil
}

// threadNAPI switches the dut's ingress to threaded NAPI.
func (t *topo) threadNAPI() {
	run(t.dut, "sh", "-c", "echo 1 > /sys/class/net/"+inIf+"/threaded")
}

// napiThreads returns the pids of the ingress's NAPI kthreads.
func napiThreads() []int {
	prefix := "napi/" + inIf + "-"
	ents, err := os.ReadDir("/proc")
	must(err)
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(comm)), prefix) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pinNAPI pins the ingress's NAPI kthreads to cpu. Attaching or
// detaching an XDP program can make the kernel create them again, so
// every scenario's setup calls it after its own.
func (t *topo) pinNAPI(cpu int) {
	pids := napiThreads()
	if len(pids) == 0 {
		must(fmt.Errorf("no threaded NAPI kthread (napi/%s-*) for the dut's ingress: /sys/class/net/%s/threaded is %s", inIf, inIf,
			strings.TrimSpace(run(t.dut, "cat", "/sys/class/net/"+inIf+"/threaded"))))
	}
	var set unix.CPUSet
	set.Set(cpu)
	for _, pid := range pids {
		must(unix.SchedSetaffinity(pid, &set))
		if napiFIFO > 0 {
			run(t.dut, "chrt", "-f", "-p", strconv.Itoa(napiFIFO), strconv.Itoa(pid))
		}
	}
}

// napiFIFO, when positive, is the SCHED_FIFO priority the ingress NAPI
// kthreads get (an experiment: the kernel's receive before any user
// thread on the core).
var napiFIFO int

// lastCPU is the core a thread last ran on (/proc/<pid>/stat field 39).
func lastCPU(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	c, _ := strconv.Atoi(f[36])
	return c
}

// cpuTicks is a process's user+system time in clock ticks (USER_HZ,
// 100 on Linux).
func cpuTicks(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(err)
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s
}

// daemon is `xdpcluster run` in the dut's namespace.
type daemon struct {
	cmd  *exec.Cmd
	dir  string
	log  *os.File
	note string // how the configuration differs from what was asked
}

// daemonFrames, when positive, is the daemon's dataplane.frames (and
// ring_size half of it) in the one-core family; 0: its defaults.
var daemonFrames int

// daemonXDPMode, when set, is the one-core daemon's dataplane.xdp_mode.
var daemonXDPMode string

// daemonIO, when set, is the one-core daemon's dataplane.io where a row
// does not set its own (the default rows and the exact-set comparison).
var daemonIO string

// fastEntries, when positive, is the daemon's dataplane.fast_path_entries.
var fastEntries int

// paceBatch is how many packets the paced sender sends at once.
var paceBatch = 16

const metricsAddr = "127.0.0.1:9477" // in the dut's namespace

// buildDaemon builds the xdpcluster binary into dir.
func buildDaemon(dir string) string {
	bin := filepath.Join(dir, "xdpcluster")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/xdpcluster").CombinedOutput()
	if err != nil {
		must(fmt.Errorf("go build ./cmd/xdpcluster (run the harness from the repository's root): %w\n%s", err, out))
	}
	return bin
}

// daemonConfig is node 1 of the 2-node cluster on the dut's interfaces,
// with the daemon's defaults otherwise; fastPath, xdpMode and io, when
// set, are dataplane.fast_path, dataplane.xdp_mode (xdpMode before
// --daemon-xdp-mode) and dataplane.io.
func daemonConfig(dir, fastPath, xdpMode, io string) string {
	xdpMode, io = rowSettings(xdpMode, io)
	dp := ""
	if io != "" {
		dp += "  io: " + io + "\n"
	}
	if fastPath != "" {
		dp += "  fast_path: " + fastPath + "\n"
	}
	if daemonFrames > 0 {
		dp += fmt.Sprintf("  frames: %d\n  ring_size: %d\n", daemonFrames, daemonFrames/2)
	}
	if xdpMode != "" {
		dp += "  xdp_mode: " + xdpMode + "\n"
	}
	if fastEntries > 0 && fastPath != "off" {
		dp += fmt.Sprintf("  fast_path_entries: %d\n", fastEntries)
	}
	if dp != "" {
		dp = "dataplane:\n" + dp
	}
	return fmt.Sprintf(`cluster:
  total_nodes: 2
  local_node: 1
  hash_seed: %#x
interfaces:
  - name: %s
    cluster_mac: "%s"
  - name: out0
    cluster_mac: "%s"
%smetrics:
  listen: "%s"
control:
  socket: %s
state_dir: %s
log:
  level: warn
`, seed, inIf, clusterMAC, backMAC, dp, metricsAddr, filepath.Join(dir, "control.sock"), filepath.Join(dir, "state"))
}

// rowSettings is a row's dataplane.xdp_mode and io, where it sets none
// --daemon-xdp-mode's and --daemon-io's ("": the daemon's default, auto).
func rowSettings(xdpMode, io string) (string, string) {
	if xdpMode == "" {
		xdpMode = daemonXDPMode
	}
	if io == "" {
		io = daemonIO
	}
	return xdpMode, io
}

// startDaemon starts the binary on cpu (taskset: every thread of it) with
// dataplane.fast_path set to fastPath, dataplane.xdp_mode to xdpMode and
// dataplane.io to io ("" for the defaults). A build that does not know fast_path yet runs
// with its default, said in note.
func (t *topo) startDaemon(bin, fastPath, xdpMode, io string, cpu int) *daemon {
	dir, err := os.MkdirTemp("", "xcb-daemon-")
	must(err)
	d := &daemon{dir: dir}
	cfg := filepath.Join(dir, "config.yaml")
	must(os.WriteFile(cfg, []byte(daemonConfig(dir, fastPath, xdpMode, io)), 0o644))
	if fastPath != "" {
		if out, err := exec.Command(bin, "check", "--config", cfg).CombinedOutput(); err != nil {
			if !strings.Contains(string(out), "fast_path") {
				must(fmt.Errorf("xdpcluster check: %w\n%s", err, out))
			}
			d.note = "this build has no dataplane.fast_path: ran its default"
			must(os.WriteFile(cfg, []byte(daemonConfig(dir, "", xdpMode, io)), 0o644))
		}
	}
	// A gateway forwards (the fast path's route lookup routes only where
	// the kernel would); the kernel rows turn it off behind them.
	run(t.dut, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	d.log, err = os.Create(filepath.Join(dir, "log"))
	must(err)
	d.cmd = exec.Command("taskset", "-c", strconv.Itoa(cpu), "ip", "netns", "exec", t.dut.Name, bin, "run", "--config", cfg)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if env := os.Getenv("XCB_DAEMON_ENV"); env != "" {
		d.cmd.Env = append(os.Environ(), strings.Fields(env)...) // e.g. GODEBUG=gctrace=1 for an experiment
	}
	must(d.cmd.Start())
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := t.scrape(); err == nil {
			break
		}
		if time.Now().After(deadline) || d.cmd.ProcessState != nil {
			d.stop()
			must(fmt.Errorf("the daemon did not serve metrics within 15 s:\n%s", d.logs()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Raw sockets (io afpacket) turned GRO off on the ingress; give it
	// back (nothing changes where it is on).
	t.ingressNAPI() // and with it the threaded NAPI kthread this family pins
	return d
}

// checkMode says so when the daemon of a row runs another mode than
// the row's settings give on this harness's ingress, a veth fed XDP
// frames and so with GRO on, where io auto keeps AF_XDP and xdp_mode auto
// attaches generically: the ingress's xdpcluster_interface_info,
// xdpcluster_fast_path_enabled and xdpcluster_io_fallback. A row's name
// says what it measures; this keeps it true.
func (t *topo) checkMode(name, fastPath, xdpMode, io string) error {
	xdpMode, io = rowSettings(xdpMode, io)
	want := []string{`interface="` + inIf + `"`}
	if io == "afpacket" {
		want = append(want, `io="afpacket"`) // with the fast path on: in tc
	} else {
		if xdpMode == "" {
			xdpMode = "generic"
		}
		want = append(want, `io="afxdp"`, `xdp_mode="`+xdpMode+`"`)
	}
	wantFast := 1.0
	if fastPath == "off" {
		wantFast = 0
	}
	m, err := t.scrape()
	if err != nil {
		return fmt.Errorf("%q: %w", name, err)
	}
	var got []string
	for k := range m {
		if strings.HasPrefix(k, "xdpcluster_interface_info{") && strings.Contains(k, want[0]) {
			got = append(got, k)
		}
	}
	fast, fellBack := m["xdpcluster_fast_path_enabled"], m["xdpcluster_io_fallback"]
	if metricSum(m, "xdpcluster_interface_info", want...) != 1 || fast != wantFast || fellBack != 0 {
		return fmt.Errorf("%q: the daemon runs %v with fast_path_enabled %v and io_fallback %v; the row wants %v, fast_path_enabled %v, no fallback",
			name, got, fast, fellBack, want[1:], wantFast)
	}
	return nil
}

func (d *daemon) logs() string {
	b, _ := os.ReadFile(d.log.Name())
	return string(b)
}

// stop ends the daemon (SIGTERM, then SIGKILL) and removes its files.
func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
	d.log.Close()
	if keep := os.Getenv("XCB_DAEMON_LOG"); keep != "" {
		os.WriteFile(keep, []byte(d.logs()), 0o644) // the last daemon's log, for an experiment
	}
	os.RemoveAll(d.dir)
}

// scrape reads the daemon's metrics: each sample's name{labels} and value.
func (t *topo) scrape() (map[string]float64, error) {
	c, err := t.dut.Dial("tcp", netip.MustParseAddr("127.0.0.1"), netip.MustParseAddrPort(metricsAddr), time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.0\r\nHost: "+metricsAddr+"\r\n\r\n"); err != nil {
		return nil, err
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	body := false
	for sc.Scan() {
		line := sc.Text()
		if !body {
			body = line == ""
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	if !body {
		return nil, fmt.Errorf("metrics: no HTTP body")
	}
	return m, sc.Err()
}

// metricSum adds the samples of family name whose labels contain every
// one of labels (e.g. `interface="in0"`).
func metricSum(m map[string]float64, name string, labels ...string) float64 {
	var sum float64
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(k, l)
		}
		if ok {
			sum += v
		}
	}
	return sum
}

// daemonIn is what the daemon decided on from the ingress: every verdict
// of xdpcluster_packets_total for it (whichever path decided it).
func (t *topo) daemonIn() uint64 {
	m, err := t.scrape()
	if err != nil {
		return 0
	}
	return uint64(metricSum(m, "xdpcluster_packets_total", `interface="`+inIf+`"`))
}

// ringEvents are the daemon's ring events on the ingress port.
func (t *topo) ringEvents() (rxDropped, fillEmpty uint64) {
	m, err := t.scrape()
	if err != nil {
		return 0, 0
	}
	port := `interface="` + inIf + `"`
	return uint64(metricSum(m, "xdpcluster_ring_events_total", port, `event="rx_dropped"`)),
		uint64(metricSum(m, "xdpcluster_ring_events_total", port, `event="fill_ring_empty"`))
}

// attachRedirector attaches the XDP_REDIRECT ceiling to the ingress.
func (t *topo) attachRedirector() (*bench.Redirector, func()) {
	var r *bench.Redirector
	var undo func()
	must(t.dut.Do(func() error {
		out, err := netInterface("out0")
		if err != nil {
			return err
		}
		if r, err = bench.NewRedirector(out, mac(t.sink, "s0")); err != nil {
			return err
		}
		_, l, err := attachNativeProg(r, t.inIndex)
		if err != nil {
			r.Close()
			return fmt.Errorf("attach the XDP_REDIRECT ceiling: %w", err)
		}
		undo = func() { l.Close(); r.Close() }
		return nil
	}))
	return r, undo
}

// pacedSources sends one packet per source at rate packets a second
// (batches of 16 on a schedule, from a thread on cpu) and returns the set
// of sources that reached the sink.
func (t *topo) pacedSources(frames [][]byte, rate float64, cpu int) (map[netip.Addr]bool, float64) {
	var took time.Duration
	set := t.collectSources(func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer pinThread(cpu)()
		batch := paceBatch
		start := time.Now()
		for i := 0; i < len(frames); {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			for time.Now().Before(due) {
			}
			i += t.send(frames[i:], 0, min(batch, len(frames)-i))
		}
		took = time.Since(start)
	})
	return set, float64(len(frames)) / took.Seconds()
}

// idleCPU runs the daemon with its defaults and no traffic and returns
// the share of a core it used over d.
func (t *topo) idleCPU(bin string, cpu int, d time.Duration) float64 {
	dm := t.startDaemon(bin, "", "", "", cpu)
	defer dm.stop()
	time.Sleep(time.Second) // start-up work settles
	pid := dm.cmd.Process.Pid
	a := cpuTicks(pid)
	time.Sleep(d)
	b := cpuTicks(pid)
	return 100 * float64(b-a) / 100 / d.Seconds()
}

// ingressDrops is what the dut's XDP program saw (rx_queue_0_xdp_packets).
func (t *topo) ingressXDP() (xdp uint64) {
	for _, l := range strings.Split(run(t.dut, "ethtool", "-S", inIf), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ": "); ok && k == "rx_queue_0_xdp_packets" {
			xdp, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	return xdp
}

// daemonRings names the one-core daemon's ring configuration.
func daemonRings() string {
	if daemonFrames > 0 {
		return fmt.Sprintf("defaults but frames %d, ring_size %d", daemonFrames, daemonFrames/2)
	}
	return "defaults"
}
