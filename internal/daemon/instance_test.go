package daemon

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestLockInterfaces: a claim on an interface refuses a second one on the
// same interface, naming the holder's PID; claims in another network
// namespace, on an interface with the same index, do not collide (indexes
// and abstract socket names are per namespace); refused claims, however
// many, do not wear the holder out; a released claim can be taken again. The gateway's raw sockets and tc programs can be opened
// next to another daemon's, so this claim is what refuses a second daemon
// there (TestRunSecondInstanceRefused: through the binary).
func TestLockInterfaces(t *testing.T) {
	nstest.Require(t)
	a := nstest.Veth(t, "xc-lka", "lka", "lkb")
	b := nstest.Veth(t, "xc-lkb", "lka", "lkb") // the same names and indexes, in another namespace
	var first, other ifaceLocks
	if err := a.Do(func() (err error) { first, err = lockInterfaces([]string{"lka", "lkb"}); return err }); err != nil {
		t.Fatal(err)
	}
	defer func() { first.release() }()
	if err := b.Do(func() (err error) { other, err = lockInterfaces([]string{"lka"}); return err }); err != nil {
		t.Errorf("another namespace, the same interface index: %v, want the claim", err)
	}
	other.release()
	// Refused as often as it is tried, each time naming the holder (the
	// holder answers every probe: none is left in its backlog).
	for i := range 4 {
		err := a.Do(func() error {
			second, err := lockInterfaces([]string{"lkb"})
			second.release()
			return err
		})
		if want := fmt.Sprintf("interface lkb is in use: another xdpcluster claims it (pid %d (this process)", os.Getpid()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("claim %d on lkb next to the first: %v, want %q", i+2, err, want)
		}
	}
	first.release()
	first = nil
	if err := a.Do(func() error {
		again, err := lockInterfaces([]string{"lka", "lkb"})
		again.release()
		return err
	}); err != nil {
		t.Errorf("claim after release: %v", err)
	}
}
