// Package nstest adapts package netns to tests: namespaces that are
// removed by t.Cleanup even when the test fails, and a skip with the remedy
// when the test does not run as root.
package nstest

import (
	"net"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/internal/netns"
)

// Require skips the test, saying why and what to do, unless namespaces can
// be created.
func Require(t testing.TB) {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v; run the tests as root (sudo make test) to include this one", err)
	}
}

// New creates a namespace prefix-RANDOM that is deleted when the test ends.
func New(t testing.TB, prefix string) *netns.NS {
	t.Helper()
	Require(t)
	ns, err := netns.Create(prefix)
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return ns
}

// Run runs a command in ns and fails the test if it fails.
func Run(t testing.TB, ns *netns.NS, name string, args ...string) string {
	t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// MAC returns the hardware address of dev in ns.
func MAC(t testing.TB, ns *netns.NS, dev string) net.HardwareAddr {
	t.Helper()
	hw, err := net.ParseMAC(strings.TrimSpace(Run(t, ns, "cat", "/sys/class/net/"+dev+"/address")))
	if err != nil {
		t.Fatalf("MAC of %s in %s: %v", dev, ns.Name, err)
	}
	return hw
}

// Injector writes raw Ethernet frames out of one interface of a namespace
// (AF_PACKET), for tests that play crafted frames into a kernel.
type Injector struct {
	t       testing.TB
	fd      int
	ifindex int
}

// NewInjector opens a packet socket on dev in ns; it is closed when the
// test ends.
func NewInjector(t testing.TB, ns *netns.NS, dev string) *Injector {
	t.Helper()
	in := &Injector{t: t}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		in.ifindex = ifi.Index
		in.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatalf("packet socket on %s in %s: %v", dev, ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(in.fd) })
	return in
}

// Send writes one frame; its first six bytes are the destination MAC.
func (in *Injector) Send(frame []byte) {
	in.t.Helper()
	sa := &unix.SockaddrLinklayer{Ifindex: in.ifindex, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	if err := unix.Sendto(in.fd, frame, 0, sa); err != nil {
		in.t.Fatalf("send frame: %v", err)
	}
}
