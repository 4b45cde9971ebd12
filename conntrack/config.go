package conntrack

import (
	"fmt"
	"time"
)

// Timeouts are idle timeouts: how long an entry lives after its last
// packet. Zero fields take the kernel's defaults (DefaultTimeouts).
type Timeouts struct {
	// TCP, per state (nf_conntrack_tcp_timeout_*).
	SynSent, SynRecv, Established, FinWait, CloseWait, LastAck, TimeWait, Close, SynSent2 time.Duration
	// UDP (and UDP-Lite, SCTP, DCCP, which are tracked like UDP here):
	// before a reply, and once replied for a while (a stream).
	UDPUnreplied, UDPReplied time.Duration
	// ICMP and ICMPv6 queries.
	ICMP time.Duration
	// Every other protocol, by address pair.
	Generic time.Duration
}

// NamedTimeout is one of the Timeouts with its name.
type NamedTimeout struct {
	// Name is the suffix of the kernel's sysctl, as the configuration
	// spells it: tcp_established for nf_conntrack_tcp_timeout_established,
	// udp_unreplied for nf_conntrack_udp_timeout, udp_replied for
	// nf_conntrack_udp_timeout_stream, icmp, generic.
	Name  string
	Value *time.Duration
}

// Named returns every timeout with its name, in a fixed order: the one
// list of them that validation, defaults and the configuration use.
func (t *Timeouts) Named() []NamedTimeout {
	return []NamedTimeout{{"tcp_syn_sent", &t.SynSent}, {"tcp_syn_recv", &t.SynRecv}, {"tcp_established", &t.Established},
		{"tcp_fin_wait", &t.FinWait}, {"tcp_close_wait", &t.CloseWait}, {"tcp_last_ack", &t.LastAck}, {"tcp_time_wait", &t.TimeWait},
		{"tcp_close", &t.Close}, {"tcp_syn_sent2", &t.SynSent2}, {"udp_unreplied", &t.UDPUnreplied}, {"udp_replied", &t.UDPReplied},
		{"icmp", &t.ICMP}, {"generic", &t.Generic}}
}

// MaxTimeout bounds every timeout: far beyond any sensible value, and far
// from overflowing the tracker's nanosecond clock.
const MaxTimeout = 10 * 365 * 24 * time.Hour

// TimeoutError is an invalid timeout, by its NamedTimeout name.
type TimeoutError struct {
	Name  string
	Value time.Duration
	Rule  string
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("conntrack timeout %s %v: %s", e.Name, e.Value, e.Rule)
}

// DefaultTimeouts are the kernel's defaults.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		SynSent:      2 * time.Minute,
		SynRecv:      60 * time.Second,
		Established:  5 * 24 * time.Hour,
		FinWait:      2 * time.Minute,
		CloseWait:    60 * time.Second,
		LastAck:      30 * time.Second,
		TimeWait:     2 * time.Minute,
		Close:        10 * time.Second,
		SynSent2:     2 * time.Minute,
		UDPUnreplied: 30 * time.Second,
		UDPReplied:   120 * time.Second,
		ICMP:         30 * time.Second,
		Generic:      600 * time.Second,
	}
}

// Config configures a Table. The zero value of every field means its
// default.
type Config struct {
	// MaxEntries bounds the number of connections (default 1,048,576).
	// When full, a new connection may evict an unreplied or non-assured
	// entry, never an assured one; otherwise its packet is INVALID and
	// counted as table full.
	MaxEntries int
	// TCPLoose picks up TCP connections from mid-stream packets, like
	// nf_conntrack_tcp_loose=1. Off by default, as the cluster match needs:
	// with it on, a reply ACK seen by a node that missed the SYN would start
	// a second connection, hashed by the wrong address.
	TCPLoose bool
	// Timeouts; zero fields take DefaultTimeouts.
	Timeouts Timeouts
	// MaxFragments bounds the fragment table (default 65,536 datagrams).
	MaxFragments int
	// FragTimeout is how long the first fragment's ports are remembered
	// for the later fragments of its datagram (default 10s).
	FragTimeout time.Duration
	// Tag, if set, is called once when a connection is created with its
	// original source address (IPv4 in orig[0:4]); its result is stored in
	// the entry and returned with every packet of the connection. The
	// dataplane stores the connection's cluster bucket here.
	Tag TagFunc
}

// DefaultMaxEntries is the default MaxEntries.
const DefaultMaxEntries = 1 << 20

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.MaxEntries < 0 {
		return fmt.Errorf("conntrack max_entries %d: must be positive (0 means the default %d)", c.MaxEntries, DefaultMaxEntries)
	}
	if c.MaxFragments < 0 {
		return fmt.Errorf("conntrack max_fragments %d: must be positive (0 means the default 65536)", c.MaxFragments)
	}
	if c.FragTimeout < 0 {
		return fmt.Errorf("conntrack frag_timeout %v: must be positive", c.FragTimeout)
	}
	def := DefaultTimeouts()
	dflt := def.Named()
	for i, d := range c.Timeouts.Named() {
		switch v := *d.Value; {
		case v < 0:
			return &TimeoutError{Name: d.Name, Value: v, Rule: fmt.Sprintf("must be positive (0 means the kernel's default, %v)", *dflt[i].Value)}
		case v > MaxTimeout:
			return &TimeoutError{Name: d.Name, Value: v, Rule: fmt.Sprintf("must be at most %v (10 years)", MaxTimeout)}
		}
	}
	return nil
}

func (c *Config) fill() {
	if c.MaxEntries == 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.MaxFragments == 0 {
		c.MaxFragments = 65536
	}
	if c.FragTimeout == 0 {
		c.FragTimeout = 10 * time.Second
	}
	def := DefaultTimeouts()
	dflt := def.Named()
	for i, d := range c.Timeouts.Named() {
		if *d.Value == 0 {
			*d.Value = *dflt[i].Value
		}
	}
}
