// Package config is xdpcluster's YAML configuration: the schema, its
// defaults and its validation. Parsing is strict: an unknown key is an
// error with its line and column; every invalid value is an error naming
// the key, the value and what is allowed. The rest of the daemon gets plain
// values from it (Match, Interfaces, ...).
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
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/dataplane/xsk"
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
		return fmt.Errorf("line %d, column %d: %q is not a number (decimal, 0x hex, or 0-prefixed octal)", v.Line, v.Column, v.Value)
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
}

// Timeouts override the kernel's default conntrack timeouts.
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
	Backend   string `yaml:"backend"`    // auto | afxdp | afpacket
	XDPMode   string `yaml:"xdp_mode"`   // auto | native | generic
	ZeroCopy  string `yaml:"zero_copy"`  // auto | on | off
	Queues    Number `yaml:"queues"`     // 0: every RX queue
	BatchSize Number `yaml:"batch_size"` // frames per receive batch, 1..64
	Frames    Number `yaml:"frames"`     // AF_XDP frames per socket
	RingSize  Number `yaml:"ring_size"`  // AF_XDP ring entries
	FrameSize Number `yaml:"frame_size"` // bytes
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
	// StateDir holds what the daemon keeps across its own restarts: the
	// connection table snapshot and the record of what it changed on the
	// host (a tmpfs such as /run is right: none of it outlives a reboot).
	StateDir string `yaml:"state_dir"`

	// written holds the dotted key names the parsed file wrote (nil for a
	// Config built in code), so that Validate can tell a required key left
	// out, or a duration written as 0, from the zero value.
	written map[string]bool
}

// Defaults returns the configuration every key defaults to.
func Defaults() Config {
	return Config{
		Role:      "gateway",
		Cluster:   Cluster{Hash: "xt_cluster"},
		Conntrack: Conntrack{MaxEntries: 1 << 20},
		Dataplane: Dataplane{Backend: "auto", XDPMode: "auto", ZeroCopy: "auto", BatchSize: 64, Frames: 8192, RingSize: 4096, FrameSize: 2048},
		Metrics:   Metrics{Listen: "127.0.0.1:9477"},
		Control:   Control{Socket: "/run/xdpcluster/control.sock"},
		Log:       Log{Format: "text", Level: "info"},
		StateDir:  "/run/xdpcluster",
	}
}

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
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

// Parse reads and validates a configuration: defaults, then the file.
func Parse(data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	if len(root.Content) == 0 {
		return nil, errors.New("the configuration is empty")
	}
	written := map[string]bool{}
	if err := checkKeys(root.Content[0], reflect.TypeOf(Config{}), "", written); err != nil {
		return nil, err
	}
	c := Defaults()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	c.written = written
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// checkKeys reports the first unknown key with its line and column and
// the keys allowed there, and records in written every key given a value
// (not null) by its dotted name (interfaces[0].name).
func checkKeys(n *yaml.Node, t reflect.Type, path string, written map[string]bool) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
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
			if err := checkKeys(n.Content[i+1], ft, join(path, k.Value), written); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			if err := checkKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), written); err != nil {
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

// Match returns the cluster match the configuration describes.
func (c *Config) Match() (cluster.Match, error) {
	cl := c.Cluster
	if cl.Iptables != "" {
		if cl.TotalNodes != 0 || cl.LocalNode != 0 || cl.LocalNodemask != 0 || cl.HashSeed != 0 || cl.Invert {
			return cluster.Match{}, errors.New("cluster.iptables: give either the iptables text or total_nodes/local_node/local_nodemask/hash_seed/invert, not both")
		}
		m, err := cluster.ParseIptables(cl.Iptables)
		if err != nil {
			return cluster.Match{}, fmt.Errorf("cluster.iptables %q: %w", cl.Iptables, err)
		}
		if cl.Hash != "" && cl.Hash != "xt_cluster" {
			if m.Hash, err = cluster.ParseHashMode(cl.Hash); err != nil {
				return cluster.Match{}, fmt.Errorf("cluster.hash: %w", err)
			}
		}
		return m, nil
	}
	if cl.TotalNodes < 1 || cl.TotalNodes > cluster.MaxNodes {
		return cluster.Match{}, fmt.Errorf("cluster.total_nodes %d: must be 1..%d", cl.TotalNodes, cluster.MaxNodes)
	}
	if cl.HashSeed > 0xffffffff {
		return cluster.Match{}, fmt.Errorf("cluster.hash_seed %#x: must be 0..0xffffffff", uint64(cl.HashSeed))
	}
	m := cluster.Match{TotalNodes: uint32(cl.TotalNodes), Seed: uint32(cl.HashSeed), Invert: cl.Invert}
	switch {
	case cl.LocalNode != 0 && cl.LocalNodemask != 0:
		return cluster.Match{}, errors.New("cluster.local_node and cluster.local_nodemask: give one, not both")
	case cl.LocalNode != 0:
		if cl.LocalNode > Number(cl.TotalNodes) {
			return cluster.Match{}, fmt.Errorf("cluster.local_node %d: must be 1..%d (total_nodes)", cl.LocalNode, cl.TotalNodes)
		}
		m.NodeMask = 1 << (cl.LocalNode - 1)
	case cl.LocalNodemask != 0:
		if uint64(cl.LocalNodemask) >= 1<<cl.TotalNodes {
			return cluster.Match{}, fmt.Errorf("cluster.local_nodemask %#x: names a node above total_nodes %d (must be below %#x)", uint64(cl.LocalNodemask), cl.TotalNodes, uint64(1)<<cl.TotalNodes)
		}
		m.NodeMask = uint32(cl.LocalNodemask)
	default:
		return cluster.Match{}, errors.New("cluster: local_node or local_nodemask is required (which node or nodes this is)")
	}
	h, err := cluster.ParseHashMode(cl.Hash)
	if err != nil {
		return cluster.Match{}, fmt.Errorf("cluster.hash: %w", err)
	}
	m.Hash = h
	return m, m.Validate()
}

// ParsedInterface is an interface with its values parsed.
type ParsedInterface struct {
	Name       string
	ClusterMAC net.HardwareAddr
	NDMAC      net.HardwareAddr
	IPv4, IPv6 []netip.Addr
}

// ParseInterfaces returns the interfaces with their values parsed.
func (c *Config) ParseInterfaces() ([]ParsedInterface, error) {
	var out []ParsedInterface
	seen := map[string]bool{}
	for i, ifc := range c.Interfaces {
		key := fmt.Sprintf("interfaces[%d]", i)
		if ifc.Name == "" {
			return nil, fmt.Errorf("%s.name: required", key)
		}
		if seen[ifc.Name] {
			return nil, fmt.Errorf("%s.name %q: listed twice", key, ifc.Name)
		}
		// Loopback is recognised by its name: it has no Ethernet link to
		// receive the cluster MAC on (and back-end mode puts the cluster
		// addresses on it).
		if ifc.Name == "lo" {
			return nil, fmt.Errorf("%s.name %q: the loopback interface cannot be a data interface (name an Ethernet interface)", key, ifc.Name)
		}
		seen[ifc.Name] = true
		p := ParsedInterface{Name: ifc.Name}
		mac, err := parseMulticastMAC(ifc.ClusterMAC)
		if err != nil {
			return nil, fmt.Errorf("%s.cluster_mac %q: %w, e.g. 01:00:5e:00:01:01", key, ifc.ClusterMAC, err)
		}
		p.ClusterMAC = mac
		if ifc.NDMAC != "" {
			nd, err := parseMulticastMAC(ifc.NDMAC)
			if err != nil {
				return nil, fmt.Errorf("%s.nd_mac %q: %w, e.g. 33:33:00:00:01:01", key, ifc.NDMAC, err)
			}
			p.NDMAC = nd
		}
		for j, s := range ifc.ClusterAddresses {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%s.cluster_addresses[%d] %q: must be an IPv4 or IPv6 address", key, j, s)
			}
			if a.Is4() {
				p.IPv4 = append(p.IPv4, a)
			} else {
				p.IPv6 = append(p.IPv6, a)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// parseMulticastMAC parses a cluster MAC: a multicast Ethernet address
// (every node receives it; there is no unicast mode), not the broadcast
// address (every host on the link would receive the cluster's traffic).
func parseMulticastMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	switch {
	case err != nil || len(mac) != 6 || mac[0]&1 == 0:
		return nil, errors.New("must be a multicast Ethernet address (first byte odd)")
	case bytes.Equal(mac, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}):
		return nil, errors.New("must be a multicast Ethernet address, not the broadcast address")
	}
	return mac, nil
}

// Validate checks everything, reporting every problem.
func (c *Config) Validate() error {
	var errs []error
	if c.Role != "gateway" && c.Role != "backend" {
		errs = append(errs, fmt.Errorf("role %q: must be gateway (forward between interfaces) or backend (servers sharing a cluster IP)", c.Role))
	}
	if c.Role == "backend" && c.Cluster.Hash != "" && c.Cluster.Hash != "xt_cluster" {
		errs = append(errs, fmt.Errorf("cluster.hash %q: back-end mode decides in XDP with the kernel-compatible xt_cluster hash only", c.Cluster.Hash))
	}
	if _, err := c.Match(); err != nil {
		errs = append(errs, err)
	}
	if c.written != nil {
		if c.Cluster.Iptables == "" && !c.written["cluster.hash_seed"] {
			errs = append(errs, errors.New("cluster.hash_seed: required (the --cluster-hash-seed of the cluster's rules, 0..0xffffffff; write 0 if that is the seed)"))
		}
		if c.Cluster.Iptables != "" {
			for _, k := range []string{"total_nodes", "local_node", "local_nodemask", "hash_seed", "invert"} {
				if c.written["cluster."+k] {
					errs = append(errs, fmt.Errorf("cluster.%s: give either cluster.iptables or the separate keys, not both", k))
				}
			}
		}
	}
	if len(c.Interfaces) == 0 {
		errs = append(errs, errors.New("interfaces: at least one data interface is required"))
	}
	if _, err := c.ParseInterfaces(); err != nil {
		errs = append(errs, err)
	}
	if c.Conntrack.MaxEntries < 1 || c.Conntrack.MaxEntries > MaxConntrackEntries {
		errs = append(errs, fmt.Errorf("conntrack.max_entries %d: must be 1..%d", c.Conntrack.MaxEntries, MaxConntrackEntries))
	} else if c.Role == "gateway" {
		if err := c.checkMemory(); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.checkTimeouts()...)
	oneOf := func(key, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		errs = append(errs, fmt.Errorf("%s %q: must be one of %s", key, v, strings.Join(allowed, ", ")))
	}
	oneOf("dataplane.backend", c.Dataplane.Backend, "auto", "afxdp", "afpacket")
	oneOf("dataplane.xdp_mode", c.Dataplane.XDPMode, "auto", "native", "generic")
	oneOf("dataplane.zero_copy", c.Dataplane.ZeroCopy, "auto", "on", "off")
	if c.Dataplane.BatchSize < 1 || c.Dataplane.BatchSize > 64 {
		errs = append(errs, fmt.Errorf("dataplane.batch_size %d: must be 1..64", c.Dataplane.BatchSize))
	}
	if c.Dataplane.Queues > 256 {
		errs = append(errs, fmt.Errorf("dataplane.queues %d: must be 0 (every RX queue) .. 256", c.Dataplane.Queues))
	}
	oneOf("log.format", c.Log.Format, "text", "json")
	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	if err := c.checkPort(); err != nil {
		errs = append(errs, err)
	}
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
	return errors.Join(errs...)
}

// YAML renders the effective configuration.
func (c *Config) YAML() string {
	out, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Sprintf("# cannot render: %v\n", err)
	}
	return string(out)
}

// PortOptions returns the AF_XDP socket options the dataplane keys give.
// Values too large for the socket are kept too large (not wrapped), so
// that validating the result refuses them.
func (c *Config) PortOptions() xsk.PortOptions {
	clamp := func(n Number) int {
		return int(min(n, 1<<40))
	}
	d := c.Dataplane
	return xsk.PortOptions{NumFrames: clamp(d.Frames), FrameSize: clamp(d.FrameSize), RingSize: clamp(d.RingSize), ZeroCopy: d.ZeroCopy}
}

// checkPort validates the AF_XDP sizes with the dataplane's own rule
// (xsk.PortOptions.Validate), naming the configuration's keys.
func (c *Config) checkPort() error {
	err := c.PortOptions().Validate()
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
		return nil // checked with the other one-of keys
	}
	return fmt.Errorf("dataplane: %w", err)
}

// MaxConntrackEntries bounds conntrack.max_entries.
const MaxConntrackEntries = 1 << 28

// MaxTimeout bounds the conntrack timeouts (far beyond any sensible value,
// and far from overflowing the tracker's nanosecond clock).
const MaxTimeout = 10 * 365 * 24 * time.Hour

// checkTimeouts refuses a negative timeout, or one written as zero (the
// key left out means the kernel's default), or one beyond MaxTimeout.
func (c *Config) checkTimeouts() []error {
	t := c.Conntrack.Timeouts
	def := conntrack.DefaultTimeouts()
	var errs []error
	for _, d := range []struct {
		key      string
		v        Duration
		kernDflt time.Duration
	}{{"tcp_established", t.TCPEstablished, def.Established}, {"tcp_time_wait", t.TCPTimeWait, def.TimeWait},
		{"udp_unreplied", t.UDPUnreplied, def.UDPUnreplied}, {"udp_replied", t.UDPReplied, def.UDPReplied},
		{"icmp", t.ICMP, def.ICMP}, {"generic", t.Generic, def.Generic}} {
		key := "conntrack.timeouts." + d.key
		switch v := time.Duration(d.v); {
		case v < 0 || v == 0 && c.written[key]:
			errs = append(errs, fmt.Errorf("%s %v: must be positive (leave the key out for the kernel's default, %v)", key, v, d.kernDflt))
		case v > MaxTimeout:
			errs = append(errs, fmt.Errorf("%s %v: must be at most %v (10 years)", key, v, MaxTimeout))
		}
	}
	return errs
}

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
// half of the machine's RAM.
func (c *Config) checkMemory() error {
	total, err := SystemMemory()
	if err != nil || total == 0 {
		return nil
	}
	need := conntrack.TableBytes(int(c.Conntrack.MaxEntries))
	if need > total/2 {
		return fmt.Errorf("conntrack.max_entries %d: a full connection table takes %d bytes (%s), more than half of this machine's %d bytes (%s) of RAM; lower it",
			c.Conntrack.MaxEntries, need, mib(need), total, mib(total))
	}
	return nil
}

func mib(n uint64) string { return fmt.Sprintf("%d MiB", n>>20) }
