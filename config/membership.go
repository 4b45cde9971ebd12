package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Membership configures the self-managing cluster: gossip membership on
// a management network, automatic failover of a failed node's buckets and
// the state resync of a node that (re)starts. Without the section the
// node serves its configured share only (keepalived and `xdpcluster ctl`
// move shares).
type Membership struct {
	// Bind is this node's management address, host:port (UDP and TCP),
	// never a data interface's address.
	Bind string `yaml:"bind"`
	// Advertise is the address peers reach this node at (unset: bind,
	// which must then be a specific address).
	Advertise string `yaml:"advertise,omitempty"`
	// Join lists peers' management addresses, host:port. None reachable
	// is fine: the node keeps trying in the background.
	Join []string `yaml:"join,omitempty"`
	// SecretFile holds the cluster secret: 16, 24 or 32 bytes, raw or
	// base64. It encrypts and authenticates the gossip and the state
	// resync. Mode 0600 or stricter.
	SecretFile string `yaml:"secret_file"`
	// Name is the node's unique member name (unset: the advertised
	// address).
	Name string `yaml:"name,omitempty"`
	// ResyncPort is the TCP port of the state-resync server on the
	// management address (unset: bind's port + 1).
	ResyncPort Number `yaml:"resync_port,omitempty"`
	// ResyncTimeout bounds one pull of a peer's connection table
	// (unset: 60s).
	ResyncTimeout Duration `yaml:"resync_timeout,omitempty"`
	// ManageShares (unset: true) lets the membership move the shares
	// (failover and failback). false keeps the gossip, the readiness and
	// the state resync of a (re)starting node, and leaves the shares to
	// keepalived or `xdpcluster ctl`: the keepalived setup with hitless
	// failback.
	ManageShares *bool `yaml:"manage_shares,omitempty"`
}

// MembershipSettings are the membership keys, validated and resolved.
type MembershipSettings struct {
	Name          string
	Bind          netip.AddrPort
	Advertise     netip.AddrPort // resolved: bind when unset
	Join          []string
	SecretFile    string
	Secret        []byte // 16, 24 or 32 bytes
	Resync        netip.AddrPort
	ResyncTimeout time.Duration
	// ManageShares: the membership moves the shares (else keepalived or
	// ctl does, and the membership only resyncs and reports readiness).
	ManageShares bool
}

// DefaultResyncTimeout bounds one pull of a peer's connection table.
const DefaultResyncTimeout = 60 * time.Second

// membership validates the section (nil: no membership) and resolves
// its defaults into the effective configuration.
func (c *Config) membership() (*MembershipSettings, []error) {
	mc := c.Membership
	if mc == nil {
		return nil, nil
	}
	var errs []error
	s := &MembershipSettings{SecretFile: mc.SecretFile, Join: mc.Join, ResyncTimeout: time.Duration(mc.ResyncTimeout), ManageShares: mc.ManageShares == nil || *mc.ManageShares}
	var err error
	if s.Bind, err = netip.ParseAddrPort(mc.Bind); err != nil || s.Bind.Port() == 0 {
		errs = append(errs, fmt.Errorf("membership.bind %q: must be address:port of this node's management address (e.g. 192.0.2.11:7946), a literal address and a non-zero port", mc.Bind))
	}
	s.Advertise = s.Bind
	if mc.Advertise != "" {
		if s.Advertise, err = netip.ParseAddrPort(mc.Advertise); err != nil || s.Advertise.Port() == 0 || s.Advertise.Addr().IsUnspecified() {
			errs = append(errs, fmt.Errorf("membership.advertise %q: must be address:port peers reach this node at, a specific address and a non-zero port", mc.Advertise))
		}
	} else if s.Bind.IsValid() && s.Bind.Addr().IsUnspecified() {
		errs = append(errs, fmt.Errorf("membership.bind %q: an unspecified address needs membership.advertise (the address peers reach this node at)", mc.Bind))
	}
	for i, j := range mc.Join {
		host, port, err := net.SplitHostPort(j)
		if p, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil || p == 0 {
			errs = append(errs, fmt.Errorf("membership.join[%d] %q: must be host:port of a peer's membership.bind", i, j))
		}
	}
	if mc.SecretFile == "" {
		errs = append(errs, errors.New("membership.secret_file: required (a file with the cluster secret: 16, 24 or 32 bytes, raw or base64; e.g. head -c 32 /dev/urandom | base64 > /etc/xdpcluster/cluster.key; chmod 600, owned by the daemon's user)"))
	} else if s.Secret, err = ReadSecret(mc.SecretFile); err != nil {
		errs = append(errs, fmt.Errorf("membership.secret_file: %w", err))
	}
	s.Name = mc.Name
	if s.Name == "" && s.Advertise.IsValid() {
		s.Name = s.Advertise.String()
	}
	if len(s.Name) > 128 || strings.ContainsFunc(s.Name, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		errs = append(errs, fmt.Errorf("membership.name %q: must be 1..128 printable characters without spaces", s.Name))
	}
	port := uint64(mc.ResyncPort)
	if port == 0 && s.Bind.IsValid() {
		port = uint64(s.Bind.Port()) + 1
	}
	if port < 1 || port > 65535 || (s.Bind.IsValid() && port == uint64(s.Bind.Port())) {
		errs = append(errs, fmt.Errorf("membership.resync_port %d: must be 1..65535 and not the gossip port (unset: bind's port + 1)", port))
	}
	s.Resync = netip.AddrPortFrom(s.Advertise.Addr(), uint16(port))
	if s.ResyncTimeout == 0 {
		s.ResyncTimeout = DefaultResyncTimeout
	}
	if s.ResyncTimeout < time.Second || s.ResyncTimeout > time.Hour {
		errs = append(errs, fmt.Errorf("membership.resync_timeout %v: must be 1s..1h", s.ResyncTimeout))
	}
	// The effective configuration shows what was resolved.
	f := *mc
	f.Name, f.ResyncPort, f.ResyncTimeout, f.ManageShares = s.Name, Number(port), Duration(s.ResyncTimeout), &s.ManageShares
	if f.Advertise == "" && s.Advertise.IsValid() {
		f.Advertise = s.Advertise.String()
	}
	c.Membership = &f
	return s, errs
}

// ReadSecret reads a cluster secret file: 16, 24 or 32 bytes (AES-128,
// -192 or -256), raw or base64-encoded text. A file that group or others
// may read is refused.
func ReadSecret(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %#o lets group or others read the cluster secret; chmod 600 it (owned by the daemon's user)", path, fi.Mode().Perm())
	}
	if fi.Size() > 4096 {
		return nil, fmt.Errorf("%s: %d bytes; a cluster secret is 16, 24 or 32 bytes (raw or base64)", path, fi.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data))); err == nil && validSecretLen(len(b)) {
		return b, nil
	}
	if validSecretLen(len(data)) {
		return data, nil
	}
	return nil, fmt.Errorf("%s: %d bytes; a cluster secret is 16, 24 or 32 bytes, raw or base64 (e.g. head -c 32 /dev/urandom | base64)", path, len(data))
}

func validSecretLen(n int) bool { return n == 16 || n == 24 || n == 32 }
