// Package config is xdpcluster's YAML configuration: the schema, its
// defaults and its validation. Parsing is strict: an unknown key is an
// error with its line and column; every invalid value is an error naming
// the key, the value and what is allowed.
//
// It is the one boundary between YAML and the rest of the daemon:
// Config.Settings converts the file, once, into the values the roles take
// (cluster.Match, []node.Interface, conntrack.Config, xsk.PortOptions,
// ...). Each of those packages validates its own values; this one adds
// the rules only a file has (a required key, a key written as 0) and
// renames their errors to the keys of the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/dataplane"
	"github.com/xdpcluster/xdpcluster/dataplane/afpacket"
	"github.com/xdpcluster/xdpcluster/dataplane/xsk"
	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/node"
)

// Number is an unsigned number written as iptables reads it: decimal,
// 0x hex, or 0-prefixed octal (a quoted string or a plain YAML scalar).
type Number uint64

// UnmarshalYAML implements yaml.Unmarshaler.
func (n *Number) UnmarshalYAML(v *yaml.Node) error {
	if v.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d, column %d: want a number", v.Line, v.Column)
	}
	x, err := cluster.ParseNumber(v.Value)
	if err != nil {
		return fmt.Errorf("line %d, column %d: %q is not a number (decimal, 0x hex, or 0-prefixed octal)%s", v.Line, v.Column, v.Value, cluster.OctalHint(v.Value))
	}
	*n = Number(x)
	return nil
}

// Duration is a Go duration string ("30s", "5m", "120h").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(v *yaml.Node) error {
	x, err := time.ParseDuration(v.Value)
	if err != nil {
		return fmt.Errorf("line %d, column %d: %q is not a duration (like 30s, 5m, 120h)", v.Line, v.Column, v.Value)
	}
	*d = Duration(x)
	return nil
}

// MarshalYAML prints durations as strings.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Cluster is the cluster match.
type Cluster struct {
	TotalNodes    Number `yaml:"total_nodes"`
	LocalNode     Number `yaml:"local_node,omitempty"`
	LocalNodemask Number `yaml:"local_nodemask,omitempty"`
	HashSeed      Number `yaml:"hash_seed"`
	Invert        bool   `yaml:"invert"`
	Hash          string `yaml:"hash"`
	// Iptables, if set, is the rule text instead of the fields above.
	Iptables string `yaml:"iptables,omitempty"`
}

// Interface is one data interface.
type Interface struct {
	Name             string   `yaml:"name"`
	ClusterMAC       string   `yaml:"cluster_mac"`
	ClusterAddresses []string `yaml:"cluster_addresses"`
	NDMAC            string   `yaml:"nd_mac,omitempty"`
	// NewConnections (gateway role, default true): whether packets
	// arriving here may open connections. false on the servers' side.
	NewConnections *bool `yaml:"new_connections,omitempty"`
}

// Timeouts override the kernel's default conntrack timeouts. Each key is
// the name of a conntrack.NamedTimeout, which Settings sets from it.
type Timeouts struct {
	TCPEstablished Duration `yaml:"tcp_established,omitempty"`
	TCPTimeWait    Duration `yaml:"tcp_time_wait,omitempty"`
	UDPUnreplied   Duration `yaml:"udp_unreplied,omitempty"`
	UDPReplied     Duration `yaml:"udp_replied,omitempty"`
	ICMP           Duration `yaml:"icmp,omitempty"`
	Generic        Duration `yaml:"generic,omitempty"`
}

// Conntrack configures the connection tracker.
type Conntrack struct {
	MaxEntries Number   `yaml:"max_entries"`
	TCPLoose   bool     `yaml:"tcp_loose"`
	Timeouts   Timeouts `yaml:"timeouts,omitempty"`
}

// Dataplane configures the packet path.
type Dataplane struct {
	IO        string `yaml:"io"`         // auto | afxdp | afpacket
	XDPMode   string `yaml:"xdp_mode"`   // auto | native | generic
	ZeroCopy  string `yaml:"zero_copy"`  // auto | on | off
	Queues    Number `yaml:"queues"`     // 0: every RX queue
	BatchSize Number `yaml:"batch_size"` // frames per receive batch, 1..64
	Frames    Number `yaml:"frames"`     // AF_XDP frames per socket
	RingSize  Number `yaml:"ring_size"`  // AF_XDP ring entries (unset: frames/2)
	FrameSize Number `yaml:"frame_size"` // bytes
	// FastPath (gateway role): the flow cache, in XDP with AF_XDP or in
	// tc with raw sockets, auto | off. Empty for
	// the back-end role, where it does not apply.
	FastPath string `yaml:"fast_path,omitempty"`
	// FastPathEntries (gateway role): connections the flow cache holds,
	// 1..conntrack.max_entries (unset: conntrack.max_entries). Settings
	// resolves it, so the effective configuration shows the number.
	FastPathEntries Number `yaml:"fast_path_entries,omitempty"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string `yaml:"listen"` // "" disables it
}

// Control configures the control API.
type Control struct {
	Socket string `yaml:"socket"`
}

// Log configures logging.
type Log struct {
	Format string `yaml:"format"` // text | json
	Level  string `yaml:"level"`  // debug | info | warn | error
}

// Config is the whole file.
type Config struct {
	Role       string      `yaml:"role"` // gateway | backend
	Cluster    Cluster     `yaml:"cluster"`
	Interfaces []Interface `yaml:"interfaces"`
	Conntrack  Conntrack   `yaml:"conntrack"`
	Dataplane  Dataplane   `yaml:"dataplane"`
	Metrics    Metrics     `yaml:"metrics"`
	Control    Control     `yaml:"control"`
	Log        Log         `yaml:"log"`
	// Membership (optional) makes the cluster self-managing: gossip,
	// automatic failover and state resync (see membership.go).
	Membership *Membership `yaml:"membership,omitempty"`
	// StateDir holds what the daemon keeps across its own restarts: the
	// connection table snapshot and the record of what it changed on the
	// host (a tmpfs such as /run is right: none of it outlives a reboot).
	StateDir string `yaml:"state_dir"`

	// written holds the dotted key names the parsed file wrote (nil for a
	// Config built in code), so that Validate can tell a required key left
	// out, or a duration written as 0, from the zero value.
	written map[string]bool
	// numbers holds the text of every number the parsed file wrote, by
	// dotted key name, so that the effective configuration shows them as
	// written (hash_seed: 0xdeadbeef, not 3735928559).
	numbers map[string]string
}

// Defaults returns the configuration every key defaults to.
func Defaults() Config {
	return Config{
		Role:      "gateway",
		Cluster:   Cluster{Hash: "xt_cluster"},
		Conntrack: Conntrack{MaxEntries: 1 << 20},
		Dataplane: Dataplane{IO: "auto", XDPMode: "auto", ZeroCopy: "auto", BatchSize: 64, Frames: 16384, RingSize: 8192, FrameSize: 2048, FastPath: "auto"},
		Metrics:   Metrics{Listen: "127.0.0.1:9477"},
		Control:   Control{Socket: "/run/xdpcluster/control.sock"},
		Log:       Log{Format: "text", Level: "info"},
		StateDir:  "/run/xdpcluster",
	}
}

// Load reads a configuration file and converts it into Settings.
func Load(path string) (*Settings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads a configuration, defaults then the file, and converts it
// into Settings.
func Parse(data []byte) (*Settings, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	if len(root.Content) == 0 {
		return nil, errors.New("the configuration is empty")
	}
	written, numbers := map[string]bool{}, map[string]string{}
	if err := checkKeys(root.Content[0], reflect.TypeOf(Config{}), "", written, numbers); err != nil {
		return nil, err
	}
	c := Defaults()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	c.written, c.numbers = written, numbers
	return c.Settings()
}

// renamed are keys that were renamed, by their dotted old name: a file
// that still uses one is refused with the new name.
var renamed = map[string]string{
	"dataplane.backend": "dataplane.io", // "backend" is also a role
}

// checkKeys reports the first unknown key with its line and column and
// the keys allowed there, records in written every key given a value
// (not null) by its dotted name (interfaces[0].name), and in numbers the
// text of every Number.
func checkKeys(n *yaml.Node, t reflect.Type, path string, written map[string]bool, numbers map[string]string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[Number]() && n.Kind == yaml.ScalarNode:
		numbers[path] = n.Value
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = t.Field(i).Type
				names = append(names, name)
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if to, ok := renamed[join(path, k.Value)]; ok {
				return fmt.Errorf("line %d, column %d: key %s was renamed to %s (same values); rename it in the file", k.Line, k.Column, join(path, k.Value), to)
			}
			if !ok {
				where := "at the top level"
				if path != "" {
					where = "in " + path
				}
				return fmt.Errorf("line %d, column %d: unknown key %q %s (allowed: %s)", k.Line, k.Column, k.Value, where, strings.Join(names, ", "))
			}
			if v := n.Content[i+1]; v.Kind != yaml.ScalarNode || v.Tag != "!!null" {
				written[join(path, k.Value)] = true
			}
			if err := checkKeys(n.Content[i+1], ft, join(path, k.Value), written, numbers); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			if err := checkKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), written, numbers); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// match converts the cluster keys (cluster.Options.Match does).
func (c *Config) match() (cluster.Match, []error) {
	cl := c.Cluster
	var errs []error
	if c.written != nil {
		// A key written as 0 is a key given: the file's own rules.
		if cl.Iptables == "" && !c.written["cluster.hash_seed"] {
			errs = append(errs, errors.New("cluster.hash_seed: required (the --cluster-hash-seed of the cluster's rules, 0..0xffffffff; write 0 if that is the seed)"))
		}
		if cl.Iptables != "" {
			for _, k := range []string{"total_nodes", "local_node", "local_nodemask", "hash_seed", "invert"} {
				if c.written["cluster."+k] {
					errs = append(errs, fmt.Errorf("cluster.%s: give either cluster.iptables or the separate keys, not both", k))
				}
			}
			if errs != nil {
				return cluster.Match{}, errs
			}
		}
	}
	m, err := cluster.Options{Iptables: cl.Iptables, TotalNodes: uint64(cl.TotalNodes), LocalNode: uint64(cl.LocalNode),
		LocalNodemask: uint64(cl.LocalNodemask), Seed: uint64(cl.HashSeed), Invert: cl.Invert, Hash: cl.Hash}.Match()
	if err != nil {
		errs = append(errs, clusterError(err, cl))
	}
	return m, errs
}

// clusterKeys are the cluster keys by the option names of the cluster
// package's errors.
var clusterKeys = map[string]string{cluster.OptTotalNodes: "total_nodes", cluster.OptLocalNode: "local_node",
	cluster.OptLocalNodemask: "local_nodemask", cluster.OptHashSeed: "hash_seed", "hash": "hash", cluster.OptHash: "hash",
	cluster.OptIptables: "iptables"}

// clusterError names the key of a cluster.OptionError, in its rule too.
func clusterError(err error, cl Cluster) error {
	var oe *cluster.OptionError
	key, ok := "", false
	if errors.As(err, &oe) {
		key, ok = clusterKeys[oe.Option]
	}
	if !ok {
		return fmt.Errorf("cluster: %w", err)
	}
	rule := oe.Rule
	for opt, k := range clusterKeys {
		rule = strings.ReplaceAll(rule, "--"+opt, k)
	}
	value := oe.Value
	switch key {
	case "iptables":
		value = fmt.Sprintf("%q", cl.Iptables)
	case "hash":
		value = fmt.Sprintf("%q", cl.Hash)
	}
	if value == "" {
		return fmt.Errorf("cluster.%s: %s", key, rule)
	}
	return fmt.Errorf("cluster.%s %s: %s", key, value, rule)
}

// interfaces converts the interfaces (node.Validate checks them).
func (c *Config) interfaces() ([]node.Interface, []error) {
	var out []node.Interface
	var errs []error
	for i, ifc := range c.Interfaces {
		n := node.Interface{Name: ifc.Name, ClusterMAC: parseMAC(ifc.ClusterMAC)}
		if ifc.NDMAC != "" {
			n.NDMAC = parseMAC(ifc.NDMAC)
		}
		if ifc.NewConnections != nil && !*ifc.NewConnections {
			if c.Role == "backend" {
				errs = append(errs, fmt.Errorf("interfaces[%d].new_connections false: only for role gateway (a back-end server decides in XDP, without connection tracking)", i))
			}
			n.NoNewConnections = true
		}
		for j, s := range ifc.ClusterAddresses {
			a, err := netip.ParseAddr(s)
			switch {
			case err != nil || a.Zone() != "":
				errs = append(errs, fmt.Errorf("interfaces[%d].cluster_addresses[%d] %q: must be an IPv4 or IPv6 address", i, j, s))
			case a.Is4():
				n.IPv4 = append(n.IPv4, a)
			default:
				n.IPv6 = append(n.IPv6, a)
			}
		}
		out = append(out, n)
	}
	if len(out) > 0 && !slices.ContainsFunc(out, func(n node.Interface) bool { return !n.NoNewConnections }) {
		errs = append(errs, errors.New("interfaces: new_connections is false on every interface, so no connection could ever open: allow it on the clients' side"))
	}
	var fe *node.FieldError
	switch err := node.Validate(out); {
	case err == nil:
	case !errors.As(err, &fe):
		errs = append(errs, fmt.Errorf("interfaces: %w", err))
	case fe.Index < 0:
		errs = append(errs, fmt.Errorf("interfaces: %s", fe.Rule))
	default:
		// The value as written, not as parsed.
		value, ifc := fe.Value, c.Interfaces[fe.Index]
		switch fe.Field {
		case "cluster_mac":
			value = ifc.ClusterMAC
		case "nd_mac":
			value = ifc.NDMAC
		}
		key := fmt.Sprintf("interfaces[%d].%s", fe.Index, fe.Field)
		if value == "" {
			errs = append(errs, fmt.Errorf("%s: %s", key, fe.Rule))
		} else {
			errs = append(errs, fmt.Errorf("%s %q: %s", key, value, fe.Rule))
		}
	}
	return out, errs
}

// parseMAC parses a MAC address; what is not one is kept as an empty,
// non-nil address, which node.Interface.Validate refuses.
func parseMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return net.HardwareAddr{}
	}
	return mac
}

// conntrack converts the conntrack keys (conntrack.Config.Validate checks
// the result).
func (c *Config) conntrack() (conntrack.Config, []error) {
	ct := conntrack.Config{TCPLoose: c.Conntrack.TCPLoose}
	var errs []error
	if n := c.Conntrack.MaxEntries; n < 1 || n > MaxConntrackEntries {
		errs = append(errs, fmt.Errorf("conntrack.max_entries %d: must be 1..%d", n, MaxConntrackEntries))
	} else {
		ct.MaxEntries = int(n)
	}
	def := conntrack.DefaultTimeouts()
	dflt := def.Named()
	named := ct.Timeouts.Named()
	v := reflect.ValueOf(c.Conntrack.Timeouts)
	for i := 0; i < v.NumField(); i++ {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		key := "conntrack.timeouts." + name
		d := time.Duration(v.Field(i).Interface().(Duration))
		for k, nt := range named {
			switch {
			case nt.Name != name:
			case d < 0 || d == 0 && c.written[key]:
				errs = append(errs, fmt.Errorf("%s %v: must be positive (leave the key out for the kernel's default, %v)", key, d, *dflt[k].Value))
			default:
				*nt.Value = d
			}
		}
	}
	if errs != nil {
		return ct, errs
	}
	var te *conntrack.TimeoutError
	switch err := ct.Validate(); {
	case errors.As(err, &te):
		errs = append(errs, fmt.Errorf("conntrack.timeouts.%s %v: %s", te.Name, te.Value, te.Rule))
	case err != nil:
		errs = append(errs, fmt.Errorf("conntrack: %w", err))
	}
	return ct, errs
}

// effectiveTimeouts returns the timeout keys with the values in force:
// those the file sets, the tracker's defaults (the kernel's) for the
// others, so that the effective configuration shows every one.
func effectiveTimeouts(set conntrack.Timeouts) Timeouts {
	def := conntrack.DefaultTimeouts()
	inForce := map[string]time.Duration{}
	for _, nt := range def.Named() {
		inForce[nt.Name] = *nt.Value
	}
	for _, nt := range set.Named() {
		if *nt.Value != 0 {
			inForce[nt.Name] = *nt.Value
		}
	}
	var out Timeouts
	v := reflect.ValueOf(&out).Elem()
	for i := 0; i < v.NumField(); i++ {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		v.Field(i).Set(reflect.ValueOf(Duration(inForce[name])))
	}
	return out
}

// FixedTimeouts returns the tracker's timeouts no key sets (the TCP
// states between a SYN and established, and the closing ones), with their
// values, the kernel's defaults: check prints them beside the keys.
func FixedTimeouts() []conntrack.NamedTimeout {
	keys := map[string]bool{}
	t := reflect.TypeFor[Timeouts]()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		keys[name] = true
	}
	def := conntrack.DefaultTimeouts()
	var out []conntrack.NamedTimeout
	for _, nt := range def.Named() {
		if !keys[nt.Name] {
			out = append(out, nt)
		}
	}
	return out
}

// Settings are a valid configuration converted into the values the
// daemon and the roles take. Config.Settings builds them, once; the
// daemon keeps them, and Diff compares the files they came from.
type Settings struct {
	Role       string // gateway | backend
	Match      cluster.Match
	Interfaces []node.Interface
	Conntrack  conntrack.Config
	IO         dataplane.IO
	XDPMode    bpfutil.AttachMode // zero (auto): native, else generic; generic on a single-queue veth
	Port       xsk.PortOptions
	Queues     int // 0: every RX queue
	BatchSize  int
	// FastPath and FastPathEntries configure the gateway's XDP flow
	// cache: auto or off, and its size in connections (resolved: never
	// 0 for the gateway role; zero values for the back-end role).
	FastPath        dataplane.FastPath
	FastPathEntries int
	// StateDir holds what the daemon keeps across its own restarts.
	StateDir      string
	MetricsListen string // "": no metrics endpoint
	ControlSocket string
	Log           Log
	// Membership is nil without a membership section.
	Membership *MembershipSettings

	file Config // the configuration these came from
}

// YAML renders the effective configuration the settings came from.
func (s *Settings) YAML() string { return s.file.YAML() }

// Settings validates the configuration and converts it, reporting every
// problem by its key.
func (c *Config) Settings() (*Settings, error) {
	s := &Settings{Role: c.Role, IO: dataplane.IO(c.Dataplane.IO), StateDir: c.StateDir, MetricsListen: c.Metrics.Listen,
		ControlSocket: c.Control.Socket, Log: c.Log, file: *c}
	var errs []error
	if c.Role != "gateway" && c.Role != "backend" {
		errs = append(errs, fmt.Errorf("role %q: must be gateway (forward between interfaces) or backend (servers sharing a cluster IP)", c.Role))
	}
	if c.Role == "backend" && c.Cluster.Hash != "" && c.Cluster.Hash != "xt_cluster" {
		errs = append(errs, fmt.Errorf("cluster.hash %q: back-end mode decides in XDP with the kernel-compatible xt_cluster hash only", c.Cluster.Hash))
	}
	var more []error
	s.Match, more = c.match()
	errs = append(errs, more...)
	s.Interfaces, more = c.interfaces()
	errs = append(errs, more...)
	s.Conntrack, more = c.conntrack()
	errs = append(errs, more...)
	s.file.Conntrack.Timeouts = effectiveTimeouts(s.Conntrack.Timeouts)
	oneOf := func(key, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		errs = append(errs, fmt.Errorf("%s %q: must be one of %s", key, v, strings.Join(allowed, ", ")))
	}
	if err := dataplane.IO(c.Dataplane.IO).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("dataplane.io %w", err))
	}
	if m, err := bpfutil.ParseAttachMode(c.Dataplane.XDPMode); err != nil {
		errs = append(errs, fmt.Errorf("dataplane.xdp_mode: %w", err))
	} else {
		s.XDPMode = m
	}
	if c.Dataplane.BatchSize < 1 || c.Dataplane.BatchSize > 64 {
		errs = append(errs, fmt.Errorf("dataplane.batch_size %d: must be 1..64", c.Dataplane.BatchSize))
	}
	s.BatchSize = int(min(c.Dataplane.BatchSize, 64))
	if c.Dataplane.Queues > 256 {
		errs = append(errs, fmt.Errorf("dataplane.queues %d: must be 0 (every RX queue) .. 256", c.Dataplane.Queues))
	}
	s.Queues = int(min(c.Dataplane.Queues, 256))
	if !c.written["dataplane.ring_size"] {
		// Unset: half the frames (the receive half), so that a file that
		// sets only frames is valid whatever it sets.
		c.Dataplane.RingSize = c.Dataplane.Frames / 2
		s.file.Dataplane.RingSize = c.Dataplane.RingSize
	}
	s.Port = c.portOptions()
	if err := c.checkPort(s.Port); err != nil {
		errs = append(errs, err)
	}
	s.FastPath, s.FastPathEntries, more = c.fastPath()
	errs = append(errs, more...)
	if c.Role == "gateway" && s.Conntrack.MaxEntries > 0 {
		if err := c.checkMemory(s.flowCacheConns()); err != nil {
			errs = append(errs, err)
		}
	}
	s.file.Dataplane.FastPath, s.file.Dataplane.FastPathEntries = string(s.FastPath), Number(s.FastPathEntries)
	s.Membership, more = c.membership()
	errs = append(errs, more...)
	s.file.Membership = c.Membership
	oneOf("log.format", c.Log.Format, "text", "json")
	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	if c.Control.Socket == "" {
		errs = append(errs, errors.New("control.socket: required (a unix socket path)"))
	}
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("state_dir %q: must be an absolute directory path", c.StateDir))
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			errs = append(errs, fmt.Errorf("metrics.listen %q: must be host:port (or empty to disable)", c.Metrics.Listen))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// fastPath converts the flow cache keys (gateway role only): the setting,
// "" read as auto, and the size, unset read as conntrack.max_entries. A
// flow cache entry is a connection the tracker installed, so more entries
// than the tracker's table holds could never be used (and the kernel
// allocates LRU map entries up front): conntrack.max_entries bounds it.
// Both keys are refused for the back-end role, which has no connection
// tracker and decides every packet in XDP already: a file that sets them
// there shows a misunderstanding, not a harmless default.
func (c *Config) fastPath() (dataplane.FastPath, int, []error) {
	d := c.Dataplane
	if c.Role == "backend" {
		var errs []error
		if c.written["dataplane.fast_path"] {
			errs = append(errs, fmt.Errorf("dataplane.fast_path %q: only for role gateway (a back-end server decides every packet in XDP already; remove the key)", d.FastPath))
		}
		if c.written["dataplane.fast_path_entries"] {
			errs = append(errs, fmt.Errorf("dataplane.fast_path_entries %d: only for role gateway (a back-end server has no connection tracker to cache; remove the key)", d.FastPathEntries))
		}
		return "", 0, errs
	}
	var errs []error
	fp := dataplane.FastPath(d.FastPath)
	if err := fp.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("dataplane.fast_path %w", err))
	}
	if fp == "" {
		fp = dataplane.FastPathAuto
	}
	limit := c.Conntrack.MaxEntries
	if limit < 1 || limit > MaxConntrackEntries {
		limit = MaxConntrackEntries // conntrack.max_entries is refused by itself
	}
	n := d.FastPathEntries
	if n == 0 && !c.written["dataplane.fast_path_entries"] {
		n = limit
	}
	if n < 1 || n > limit {
		errs = append(errs, fmt.Errorf("dataplane.fast_path_entries %d: must be 1..%d (at most conntrack.max_entries: the cache holds tracked connections only; leave the key out for conntrack.max_entries)", n, limit))
		n = min(n, limit)
	}
	return fp, int(n), errs
}

// YAML renders the effective configuration: every key, numbers as the
// file wrote them (0x hex and 0-prefixed octal stay so) where the value
// in force is the one written, in decimal otherwise.
func (c *Config) YAML() string {
	var n yaml.Node
	if err := n.Encode(c); err != nil {
		return fmt.Sprintf("# cannot render: %v\n", err)
	}
	asWritten(&n, "", c.numbers)
	if c.Cluster.Iptables != "" {
		// The rule text holds the match: the separate keys, zero here,
		// would conflict with it when the output is read back.
		dropKeys(&n, "cluster", "total_nodes", "local_node", "local_nodemask", "hash_seed", "invert")
	}
	out, err := yaml.Marshal(&n)
	if err != nil {
		return fmt.Sprintf("# cannot render: %v\n", err)
	}
	return string(out)
}

// dropKeys removes keys from the mapping under section in the rendered
// node tree.
func dropKeys(n *yaml.Node, section string, keys ...string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != section || n.Content[i+1].Kind != yaml.MappingNode {
			continue
		}
		m := n.Content[i+1]
		var kept []*yaml.Node
		for j := 0; j+1 < len(m.Content); j += 2 {
			if !slices.Contains(keys, m.Content[j].Value) {
				kept = append(kept, m.Content[j], m.Content[j+1])
			}
		}
		m.Content = kept
	}
}

// asWritten puts back, in the rendered node tree, the text of each number
// the file wrote (by dotted key name), where it still reads as the value
// rendered.
func asWritten(n *yaml.Node, path string, numbers map[string]string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			asWritten(n.Content[i+1], join(path, n.Content[i].Value), numbers)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			asWritten(item, fmt.Sprintf("%s[%d]", path, i), numbers)
		}
	case yaml.ScalarNode:
		text, ok := numbers[path]
		if !ok {
			return
		}
		v, err := strconv.ParseUint(n.Value, 10, 64)
		w, werr := cluster.ParseNumber(text)
		if err == nil && werr == nil && v == w {
			n.Value, n.Tag, n.Style = strings.TrimSpace(text), "!!int", 0
		}
	}
}

// portOptions returns the AF_XDP socket options the dataplane keys give.
// Values too large for the socket are kept too large (not wrapped), so
// that validating the result refuses them.
func (c *Config) portOptions() xsk.PortOptions {
	clamp := func(n Number) int {
		return int(min(n, 1<<40))
	}
	d := c.Dataplane
	return xsk.PortOptions{NumFrames: clamp(d.Frames), FrameSize: clamp(d.FrameSize), RingSize: clamp(d.RingSize), ZeroCopy: xsk.ZeroCopy(d.ZeroCopy)}
}

// checkPort validates the AF_XDP sizes with the dataplane's own rule
// (xsk.PortOptions.Validate), naming the configuration's keys.
func (c *Config) checkPort(o xsk.PortOptions) error {
	err := o.Validate()
	var oe *xsk.OptionError
	if err == nil || !errors.As(err, &oe) {
		return err
	}
	d := c.Dataplane
	switch oe.Field {
	case "num_frames":
		return fmt.Errorf("dataplane.frames %d: %s", d.Frames, strings.ReplaceAll(oe.Rule, "num_frames", "frames"))
	case "frame_size":
		return fmt.Errorf("dataplane.frame_size %d: %s", d.FrameSize, oe.Rule)
	case "ring_size":
		return fmt.Errorf("dataplane.ring_size %d: %s", d.RingSize, strings.ReplaceAll(oe.Rule, "num_frames", "frames"))
	case "zero_copy":
		return fmt.Errorf("dataplane.zero_copy %q: %s", d.ZeroCopy, oe.Rule)
	}
	return fmt.Errorf("dataplane: %w", err)
}

// MaxConntrackEntries bounds conntrack.max_entries.
const MaxConntrackEntries = 1 << 28

// SystemMemory returns the machine's total RAM in bytes (sysinfo(2), the
// MemTotal of /proc/meminfo). Tests replace it. When it fails, memory is not checked.
var SystemMemory = func() (uint64, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, fmt.Errorf("sysinfo: %w", err)
	}
	return uint64(si.Totalram) * uint64(si.Unit), nil
}

// checkMemory refuses a connection table that, full, would take more than
// half of the machine's RAM together with a flow cache of cacheConns
// connections (0: none), which the kernel allocates in full at start.
func (c *Config) checkMemory(cacheConns int) error {
	total, err := SystemMemory()
	if err != nil || total == 0 {
		return nil
	}
	table := conntrack.TableBytes(int(c.Conntrack.MaxEntries))
	cache := xsk.FlowCacheBytes(cacheConns)
	if table+cache <= total/2 {
		return nil
	}
	if cache == 0 {
		return fmt.Errorf("conntrack.max_entries %d: a full connection table takes %d bytes (%s), more than half of this machine's %d bytes (%s) of RAM; lower it",
			c.Conntrack.MaxEntries, table, mib(table), total, mib(total))
	}
	return fmt.Errorf("conntrack.max_entries %d: a full connection table takes %d bytes (%s) and the fast path's flow cache for %d connections (dataplane.fast_path_entries) %d bytes (%s), together more than half of this machine's %d bytes (%s) of RAM; lower conntrack.max_entries, or dataplane.fast_path_entries",
		c.Conntrack.MaxEntries, table, mib(table), cacheConns, cache, mib(cache), total, mib(total))
}

// flowCacheConns is the flow cache's size in connections, 0 when the
// gateway will not create one (the fast path off). The XDP program reads
// it with AF_XDP, a tc program with raw sockets.
func (s *Settings) flowCacheConns() int {
	if s.Role != "gateway" || s.FastPath == dataplane.FastPathOff {
		return 0
	}
	return s.FastPathEntries
}

// Memory is what the daemon will allocate for its state, for xdpcluster
// check: the connection table when full, the flow cache (allocated in
// full at start; 0 without the fast path or on a back end), the AF_XDP
// memory (UMEM) of each interface and receive queue, and with raw
// sockets (io afpacket, or auto with the fast path and xdp_mode auto,
// which takes them on veth) their rings per interface: two sockets, one
// per family, with the fast path, else one. With auto both are set: which
// one is used depends on the interfaces.
type Memory struct {
	Table, FlowCache, UMEMPerQueue, RawPerInterface uint64
}

// Memory estimates the daemon's memory with these settings (see Memory).
func (s *Settings) Memory() Memory {
	var m Memory
	if s.Role == "gateway" {
		m.Table = conntrack.TableBytes(s.Conntrack.MaxEntries)
		m.FlowCache = xsk.FlowCacheBytes(s.flowCacheConns())
		if s.IO != dataplane.IOAFPacket {
			m.UMEMPerQueue = uint64(s.Port.NumFrames) * uint64(s.Port.FrameSize)
		}
		// auto takes raw sockets with the fast path on veth (xdp_mode auto).
		if s.IO == dataplane.IOAFPacket || (s.IO != dataplane.IOAFXDP && s.flowCacheConns() > 0 && s.XDPMode == bpfutil.ModeAuto) {
			sockets := uint64(1)
			if s.flowCacheConns() > 0 { // the fast path: one socket per family
				sockets = 2
			}
			m.RawPerInterface = sockets * afpacket.DefaultOptions().RingBytes()
		}
	}
	return m
}

func mib(n uint64) string { return fmt.Sprintf("%d MiB", n>>20) }
