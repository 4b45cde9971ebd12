// Package daemon is xdpcluster's lifecycle: it starts the role the
// configuration's settings (config.Settings, converted once from the
// file) describe, the metrics endpoint and the control API, reloads on
// request (a bad file keeps the running configuration), and stops
// everything.
//
// A Daemon is safe for concurrent use: the control API, the signal handler
// and the metrics scrapes call it from their own goroutines.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/config"
	"github.com/xdpcluster/xdpcluster/node/backend"
	"github.com/xdpcluster/xdpcluster/node/gateway"
)

// Daemon is one running node.
type Daemon struct {
	Version string
	path    string
	log     *slog.Logger

	mu      sync.Mutex
	cfg     *config.Settings
	eng     engine           // the running role
	gw      *gateway.Gateway // set in gateway mode
	mem     *mship           // the membership, with a membership section
	started time.Time
	servers []*http.Server
	sock    string
	metrics string // the metrics listener's address

	// Limits bounds the metrics and control servers; set it before Serve.
	Limits    Limits
	metricsLn *limitListener
	notifier  *Notifier // systemd's, for Reload (SetNotifier)
	controlLn *limitListener
	locks     ifaceLocks // the claims on the data interfaces (lockInterfaces)
}

// MetricsAddr is the address metrics are served on ("" when disabled).
func (d *Daemon) MetricsAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.metrics
}

// New prepares a daemon for cfg, read from path (for reloads; "" when the
// configuration did not come from a file).
func New(path string, cfg *config.Settings, log *slog.Logger) *Daemon {
	if log == nil {
		log = slog.Default()
	}
	return &Daemon{path: path, cfg: cfg, log: log, Version: "dev"}
}

// gatewayConfig hands the settings to the gateway.
func gatewayConfig(s *config.Settings, log *slog.Logger) gateway.Config {
	return gateway.Config{Interfaces: s.Interfaces, Match: s.Match, Conntrack: s.Conntrack, IO: s.IO, Port: s.Port,
		XDPMode: s.XDPMode, FastPath: s.FastPath, FastPathEntries: s.FastPathEntries, Queues: s.Queues, BatchSize: s.BatchSize, Logger: log}
}

// StartDataplane starts the role's dataplane: the gateway, or the
// back-end node, and then, with a membership section, the gossip and the
// state resync (see membership.go). Call it with the thread in the node's
// network namespace (the process's own, normally).
func (d *Daemon) StartDataplane() error {
	if err := d.startDataplane(); err != nil {
		return err
	}
	d.mu.Lock()
	withMembership := d.cfg.Membership != nil
	d.mu.Unlock()
	if !withMembership {
		return nil
	}
	if err := d.startMembership(); err != nil {
		return fmt.Errorf("start membership: %w", err)
	}
	return nil
}

func (d *Daemon) startDataplane() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var names []string
	for _, i := range d.cfg.Interfaces {
		names = append(names, i.Name)
	}
	locks, err := lockInterfaces(names)
	if err != nil {
		return fmt.Errorf("start dataplane: %w", err)
	}
	defer func() {
		if d.eng == nil { // the start failed: give the interfaces back
			locks.release()
			d.locks = nil
		}
	}()
	attachesXDP := d.cfg.Role == "backend" || d.cfg.IO != "afpacket"
	if err := checkInterfacesFree(names, attachesXDP); err != nil {
		return fmt.Errorf("start dataplane: %w", err)
	}
	d.locks = locks
	if d.cfg.Role == "backend" {
		return d.startBackend()
	}
	gc := gatewayConfig(d.cfg, d.log)
	if err := withState(&gc, d.cfg); err != nil {
		return err
	}
	if d.gw, err = gateway.Start(gc); err != nil {
		return fmt.Errorf("start dataplane: %w", err)
	}
	d.eng = gatewayEngine{d.gw}
	d.started = time.Now()
	var ifs []string
	modes := d.gw.Modes()
	for i, ic := range gc.Interfaces {
		ifs = append(ifs, fmt.Sprintf("%s (%s, cluster MAC %s, %d addresses)", ic.Name, modes[i], ic.ClusterMAC, len(ic.IPv4)+len(ic.IPv6)))
	}
	d.log.Info("node started", "role", "gateway", "match", gc.Match.String(), "serves", gc.Match.Nodes(), "interfaces", strings.Join(ifs, "; "))
	return nil
}

func (d *Daemon) startBackend() error {
	m := d.cfg.Match
	n, err := backend.Start(backend.Config{Interfaces: d.cfg.Interfaces, Match: m, Logger: d.log, StateDir: d.cfg.StateDir})
	if err != nil {
		return fmt.Errorf("start back-end node: %w", err)
	}
	d.eng = backendEngine{n}
	d.started = time.Now()
	d.log.Info("node started", "role", "backend", "match", m.String(), "serves", m.Nodes(), "modes", n.Modes())
	return nil
}

// Gateway returns the running gateway (nil before StartDataplane).
func (d *Daemon) Gateway() *gateway.Gateway {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gw
}

// ListenControl claims the control socket (control.socket): a path that
// cannot be used (a file, a directory, a link, a socket another daemon
// answers on) is refused here, so call it before StartDataplane and a
// refused path changes nothing on the host. Serve then serves on the
// listener; Stop closes it. Set Limits before calling it.
func (d *Daemon) ListenControl() error {
	d.mu.Lock()
	sock, have := d.cfg.ControlSocket, d.controlLn != nil
	d.mu.Unlock()
	if have {
		return nil
	}
	cln, err := listenControl(sock)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.sock = sock
	d.controlLn = newLimitListener(cln, d.Limits.withDefaults().ControlConns)
	d.mu.Unlock()
	return nil
}

// Serve starts the metrics endpoint (if configured) and the control API
// on the socket ListenControl claimed (claiming it now if it has not),
// in the calling thread's network namespace.
func (d *Daemon) Serve() error {
	d.mu.Lock()
	cfg := d.cfg
	eng := d.eng
	d.mu.Unlock()
	if eng == nil {
		return errors.New("serve: the dataplane is not running")
	}
	lim := d.Limits.withDefaults()
	// The control socket first: a path that cannot be used is refused
	// before anything else is bound.
	if err := d.ListenControl(); err != nil {
		return err
	}
	d.mu.Lock()
	cln := d.controlLn
	d.mu.Unlock()
	d.serve(d.server(d.controlAPI(), lim), cln)
	if cfg.MetricsListen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(eng.Collector(d.Version), servedCollector{d})
		reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
		d.mu.Lock()
		if d.mem != nil {
			reg.MustRegister(membershipCollector{d.mem})
		}
		d.mu.Unlock()
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
			if err := d.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			if f := d.Status().IOFallback; f != "" {
				fmt.Fprintf(w, "ready (note: AF_XDP unavailable, on raw sockets, slower: %s)\n", f)
				return
			}
			fmt.Fprintln(w, "ready")
		})
		ln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics.listen %s: %w", cfg.MetricsListen, err)
		}
		d.mu.Lock()
		d.metrics = ln.Addr().String()
		d.metricsLn = newLimitListener(ln, lim.MetricsConns)
		d.mu.Unlock()
		d.serve(d.server(mux, lim), d.metricsLn)
		d.log.Info("metrics served", "url", "http://"+ln.Addr().String()+"/metrics", "max_connections", lim.MetricsConns)
	}
	return nil
}

// server is an HTTP server that bounds how long a client may hold a
// connection: reading a request, writing its answer, idling between two.
func (d *Daemon) server(h http.Handler, lim Limits) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: lim.ReadTimeout, ReadTimeout: lim.ReadTimeout,
		WriteTimeout: lim.WriteTimeout, IdleTimeout: lim.IdleTimeout, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)}
}

func (d *Daemon) serve(s *http.Server, ln net.Listener) {
	d.mu.Lock()
	d.servers = append(d.servers, s)
	d.mu.Unlock()
	go func() {
		if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("server failed", "addr", ln.Addr().String(), "error", err)
		}
	}()
}

// Status is what `xdpcluster ctl status` shows.
type Status struct {
	Version     string            `json:"version"`
	Role        string            `json:"role"`
	Uptime      string            `json:"uptime"`
	Match       string            `json:"match"`
	TotalNodes  uint32            `json:"total_nodes"`
	NodeMask    string            `json:"node_mask"`
	Serves      []int             `json:"serves_nodes"`
	Invert      bool              `json:"invert"`
	Interfaces  map[string]string `json:"interfaces"`
	Connections int               `json:"connections"`
	Packets     map[string]uint64 `json:"packets"`
	// IOFallback is set when dataplane.io auto could not use AF_XDP and
	// runs on raw sockets: why (the gateway role only).
	IOFallback string `json:"io_fallback,omitempty"`
	// Membership is set with a membership section.
	Membership *MembershipStatus `json:"membership,omitempty"`
}

// Status reports the node's state.
func (d *Daemon) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Status{Version: d.Version, Role: d.cfg.Role, Interfaces: map[string]string{}, Packets: map[string]uint64{}}
	if d.eng == nil {
		return s
	}
	m := d.eng.Match()
	s.Uptime = time.Since(d.started).Round(time.Second).String()
	s.Match, s.TotalNodes, s.NodeMask, s.Invert = m.String(), m.TotalNodes, fmt.Sprintf("%#x", m.NodeMask), m.Invert
	s.Serves = m.Nodes()
	s.Interfaces = d.eng.Modes()
	s.Connections = d.eng.Connections()
	s.Packets = d.eng.Packets()
	if d.gw != nil {
		s.IOFallback = d.gw.IOFallback()
	}
	if d.mem != nil {
		s.Membership = d.mem.status()
	}
	return s
}

// Ready is nil when the node serves: its dataplane runs and is healthy
// (interfaces up, our XDP program attached). Otherwise it says why not.
func (d *Daemon) Ready() error {
	eng, err := d.engine()
	if err != nil {
		return err
	}
	if err := eng.Health(); err != nil {
		return fmt.Errorf("dataplane unhealthy: %w", err)
	}
	d.mu.Lock()
	ms := d.mem
	d.mu.Unlock()
	if ms != nil {
		ms.mu.Lock()
		resynced := ms.resynced
		ms.mu.Unlock()
		if !resynced {
			return errors.New("resyncing the connection table from a peer")
		}
	}
	return nil
}

// engine is the running dataplane, or an error when there is none.
func (d *Daemon) engine() (engine, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.eng == nil {
		return nil, errors.New("the dataplane is not running")
	}
	return d.eng, nil
}

// engineHealth is the running dataplane's health.
func (d *Daemon) engineHealth() error {
	eng, err := d.engine()
	if err != nil {
		return err
	}
	return eng.Health()
}

// setServing switches the dataplane to match m (the membership's
// assignment).
func (d *Daemon) setServing(m cluster.Match) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.eng == nil {
		return errors.New("the dataplane is not running")
	}
	return d.eng.SetMatch(m)
}

// errManaged refuses a manual change of the node mask under membership.
var errManaged = errors.New("the membership section manages which buckets this node serves (failover and failback are automatic); ctl takeover, release and set-mask are for clusters without it. Change the home share with cluster.local_node/local_nodemask and a reload")

// SetMask changes the node mask at run time.
func (d *Daemon) SetMask(mask uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.eng == nil {
		return errors.New("the dataplane is not running")
	}
	if d.mem != nil && d.mem.cfg.ManageShares {
		return errManaged
	}
	m := d.eng.Match()
	m.NodeMask = mask
	if err := d.eng.SetMatch(m); err != nil {
		return err
	}
	d.log.Info("node mask changed", "mask", fmt.Sprintf("%#x", mask), "serves", m.Nodes())
	return nil
}

// Takeover adds node n's share (1-based) to this node's mask.
func (d *Daemon) Takeover(n int) error {
	m, bit, err := d.nodeMask(n)
	if err != nil {
		return err
	}
	return d.SetMask(m.NodeMask | bit)
}

// Release removes node n's share from this node's mask.
func (d *Daemon) Release(n int) error {
	m, bit, err := d.nodeMask(n)
	if err != nil {
		return err
	}
	if m.NodeMask&^bit == 0 {
		return fmt.Errorf("release %d: this node would serve no share at all; stop it instead", n)
	}
	return d.SetMask(m.NodeMask &^ bit)
}

// nodeMask returns the match in force and the mask of its 1-based node n.
func (d *Daemon) nodeMask(n int) (cluster.Match, uint32, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.eng == nil {
		return cluster.Match{}, 0, errors.New("the dataplane is not running")
	}
	if d.mem != nil && d.mem.cfg.ManageShares {
		return cluster.Match{}, 0, errManaged
	}
	m := d.eng.Match()
	bit, err := cluster.NodeMask(uint64(n), uint64(m.TotalNodes))
	if oe := (*cluster.OptionError)(nil); errors.As(err, &oe) {
		return m, 0, fmt.Errorf("node %d: %s", n, oe.Rule)
	}
	return m, bit, err
}

// reload re-reads the configuration file. A bad file keeps the running
// configuration. The node mask and invert flag change at once (and the
// cluster addresses are announced again); other changes need a restart,
// and are refused with the keys that differ. Reload (notify.go) wraps it.
func (d *Daemon) reload() error {
	if d.path == "" {
		return errors.New("reload: the configuration did not come from a file")
	}
	nc, err := config.Load(d.path)
	if err != nil {
		return fmt.Errorf("reload refused, keeping the running configuration: %w", err)
	}
	d.mu.Lock()
	newM := nc.Match
	if keys := config.RestartKeys(d.cfg, nc); len(keys) > 0 {
		d.mu.Unlock()
		return fmt.Errorf("reload refused, keeping the running configuration: %s changed, which needs a restart (only %s change at run time)",
			strings.Join(keys, ", "), strings.Join(config.RuntimeKeys, ", "))
	}
	if d.eng != nil && d.mem != nil && d.mem.cfg.ManageShares {
		// The membership decides what the dataplane serves; the reload
		// changes the home share it announces (gossiped outside the
		// daemon's lock: it may wait for the network).
		if err := newM.Validate(); err != nil {
			d.mu.Unlock()
			return fmt.Errorf("reload refused: %w", err)
		}
		ms, eng := d.mem, d.eng
		d.cfg = nc
		d.mu.Unlock()
		if err := ms.setHome(newM); err != nil {
			d.log.Warn("the new home share is in force here; announcing it to the peers failed and gossip will retry", "error", err)
		}
		eng.Announce()
		d.log.Info("configuration reloaded", "home", bucketList(homeBuckets(newM)))
		return nil
	}
	defer d.mu.Unlock()
	if d.eng != nil {
		if err := d.eng.SetMatch(newM); err != nil {
			return fmt.Errorf("reload refused: %w", err)
		}
		d.eng.Announce()
	}
	d.cfg = nc
	d.log.Info("configuration reloaded", "match", newM.String())
	return nil
}

// Stop shuts the servers and the dataplane down.
func (d *Daemon) Stop() error {
	d.mu.Lock()
	ms := d.mem
	d.mem = nil
	d.mu.Unlock()
	if ms != nil {
		// Leave first: peers take this node's buckets over at once.
		ms.stop()
	}
	d.mu.Lock()
	servers := d.servers
	d.servers = nil
	eng := d.eng
	d.eng, d.gw = nil, nil
	sock := d.sock
	cln := d.controlLn
	d.controlLn = nil
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(ctx)
	}
	if cln != nil {
		cln.Close() // claimed by ListenControl but maybe never served
	}
	if sock != "" {
		os.Remove(sock)
	}
	var err error
	if eng != nil {
		err = eng.Close()
	}
	d.mu.Lock()
	d.locks.release() // after the dataplane let go of the interfaces
	d.locks = nil
	d.mu.Unlock()
	return err
}

// controlAPI serves GET /status, POST /takeover?node=N, /release?node=N
// and /mask?mask=M, answering JSON.
func (d *Daemon) controlAPI() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, err error) {
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		json.NewEncoder(w).Encode(d.Status())
	}
	num := func(r *http.Request, key string) (uint64, error) {
		v := r.URL.Query().Get(key)
		n, err := cluster.ParseNumber(v)
		if err != nil {
			return 0, fmt.Errorf("%s %q: not a number", key, v)
		}
		return n, nil
	}
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) { reply(w, nil) })
	// /health answers 200 with the status when the node is ready, else
	// 503 with the reason (keepalived's track_script, systemd, probes).
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		if err := d.Ready(); err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]string{"error": "not ready: " + err.Error()})
			return
		}
		reply(w, nil)
	})
	// forNode serves /takeover and /release: node=N, 1-based.
	forNode := func(op func(int) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			n, err := num(r, "node")
			if err == nil && n > cluster.MaxNodes {
				err = fmt.Errorf("node %d: must be 1..%d", n, cluster.MaxNodes)
			}
			if err == nil {
				err = op(int(n))
			}
			reply(w, err)
		}
	}
	mux.HandleFunc("POST /takeover", forNode(d.Takeover))
	mux.HandleFunc("POST /release", forNode(d.Release))
	mux.HandleFunc("POST /mask", func(w http.ResponseWriter, r *http.Request) {
		n, err := num(r, "mask")
		if err == nil && n > 0xffffffff {
			err = fmt.Errorf("mask %#x: must fit in 32 bits", n)
		}
		if err == nil {
			err = d.SetMask(uint32(n))
		}
		reply(w, err)
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) { reply(w, d.Reload()) })
	return mux
}

// Client talks to a daemon's control socket.
type Client struct{ c *http.Client }

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{c: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}}
}

// Do sends a request: method GET or POST, path like "/takeover?node=2".
func (c *Client) Do(method, path string) (Status, error) {
	req, _ := http.NewRequest(method, "http://xdpcluster"+path, nil)
	resp, err := c.c.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("control socket: %w (is xdpcluster running? is --socket right?)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e map[string]string
		json.NewDecoder(resp.Body).Decode(&e)
		return Status{}, errors.New(e["error"])
	}
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return Status{}, fmt.Errorf("control socket: %w", err)
	}
	return s, nil
}
