package gateway

import (
	"testing"

	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestGROOn reads and sets a veth's GRO through a socket opened in its
// namespace, from a thread outside it, as ethtool sees it, and refuses an
// interface that does not exist.
func TestGROOn(t *testing.T) {
	ns := nstest.Veth(t, "xc-gro", "groa", "grob")
	fd := -1
	if err := ns.Do(func() (err error) { fd, err = ethtoolSocket(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFD(fd) })
	for _, want := range []bool{true, false, true} {
		arg := "off"
		if want {
			arg = "on"
		}
		nstest.Run(t, ns, "ethtool", "-K", "groa", "gro", arg)
		if got, err := groOn(fd, "groa"); err != nil || got != want {
			t.Errorf("gro %s: groOn %v, %v", arg, got, err)
		}
		if err := setGRO(fd, "groa", !want); err != nil {
			t.Fatal(err)
		}
		if got, err := groOn(fd, "groa"); err != nil || got == want {
			t.Errorf("setGRO(%v): groOn %v, %v", !want, got, err)
		}
	}
	if _, err := groOn(fd, "nosuchif0"); err == nil {
		t.Error("groOn of a missing interface: nil error")
	}
}
