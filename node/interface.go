// Package node holds what both roles of a node (node/gateway,
// node/backend) share: the description of a data interface. The
// configuration (package config) builds these values once from YAML; the
// roles take them as they are.
package node

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
)

// Interface is one data interface: the cluster MAC its peers send to and
// the cluster addresses the node answers ARP/ND for (none: peers must be
// configured with static neighbour entries).
type Interface struct {
	Name       string
	ClusterMAC net.HardwareAddr
	IPv4, IPv6 []netip.Addr
	NDMAC      net.HardwareAddr // optional: the MAC advertised for IPv6
	// NoNewConnections (gateway role): packets arriving on this interface
	// never open a connection, only packets of connections opened on
	// another interface pass (for the side the servers are on). Besides
	// the policy, it keeps a node that sees a UDP reply before its request
	// (the two sides are drained independently) from tracking the reply
	// as a connection of its own.
	NoNewConnections bool
}

// Addrs returns the cluster addresses, IPv4 first.
func (i Interface) Addrs() []netip.Addr {
	return append(append([]netip.Addr(nil), i.IPv4...), i.IPv6...)
}

// FieldError is an invalid Interface field: Field is its name as the
// configuration spells it (name, cluster_mac, nd_mac, cluster_addresses),
// Index the interface's place in the list Validate checked.
type FieldError struct {
	Index int
	Field string
	Value string
	Rule  string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("interface %d %s %q: %s", e.Index, e.Field, e.Value, e.Rule)
}

// Validate checks the interface's own fields.
func (i Interface) Validate() error {
	switch {
	case i.Name == "":
		return &FieldError{Field: "name", Rule: "required"}
	case i.Name == "lo":
		// Loopback is recognised by its name: it has no Ethernet link to
		// receive the cluster MAC on (and back-end mode puts the cluster
		// addresses on it).
		return &FieldError{Field: "name", Value: i.Name, Rule: "the loopback interface cannot be a data interface (name an Ethernet interface)"}
	}
	if rule := multicastRule(i.ClusterMAC); rule != "" {
		return &FieldError{Field: "cluster_mac", Value: i.ClusterMAC.String(), Rule: rule + ", e.g. 01:00:5e:00:01:01"}
	}
	if i.NDMAC != nil {
		if rule := multicastRule(i.NDMAC); rule != "" {
			return &FieldError{Field: "nd_mac", Value: i.NDMAC.String(), Rule: rule + ", e.g. 33:33:00:00:01:01"}
		}
	}
	for _, a := range i.IPv4 {
		if !a.Is4() {
			return &FieldError{Field: "cluster_addresses", Value: a.String(), Rule: "listed as IPv4 but is not an IPv4 address"}
		}
	}
	for _, a := range i.IPv6 {
		if !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return &FieldError{Field: "cluster_addresses", Value: a.String(), Rule: "listed as IPv6 but is not an IPv6 address without zone"}
		}
	}
	return nil
}

// Validate checks a node's data interfaces: at least one, each valid, no
// name twice. Errors are *FieldError with the index of the interface.
func Validate(ifs []Interface) error {
	if len(ifs) == 0 {
		return &FieldError{Index: -1, Rule: "at least one data interface is required"}
	}
	seen := map[string]bool{}
	for k, i := range ifs {
		if err := i.Validate(); err != nil {
			err.(*FieldError).Index = k
			return err
		}
		if seen[i.Name] {
			return &FieldError{Index: k, Field: "name", Value: i.Name, Rule: "listed twice"}
		}
		seen[i.Name] = true
	}
	return nil
}

// multicastRule says what is wrong with a cluster MAC ("" if nothing): it
// must be a multicast Ethernet address (every node receives it; there is
// no unicast mode), not the broadcast address (every host on the link
// would receive the cluster's traffic).
func multicastRule(mac net.HardwareAddr) string {
	switch {
	case len(mac) != 6 || mac[0]&1 == 0:
		return "must be a multicast Ethernet address (first byte odd)"
	case bytes.Equal(mac, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}):
		return "must be a multicast Ethernet address, not the broadcast address"
	}
	return ""
}
