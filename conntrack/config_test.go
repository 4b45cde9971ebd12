package conntrack

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// TestTimeoutsNamed: Named lists every field of Timeouts exactly once,
// with a distinct name, so that validation, defaults and the
// configuration, which all go through it, cannot miss one.
func TestTimeoutsNamed(t *testing.T) {
	var tm Timeouts
	named := tm.Named()
	if n := reflect.TypeOf(tm).NumField(); len(named) != n {
		t.Fatalf("Named lists %d timeouts, Timeouts has %d fields", len(named), n)
	}
	names, ptrs := map[string]bool{}, map[*time.Duration]bool{}
	for _, nt := range named {
		if names[nt.Name] || ptrs[nt.Value] {
			t.Errorf("%s listed twice", nt.Name)
		}
		names[nt.Name], ptrs[nt.Value] = true, true
	}
	// fill takes every zero timeout from DefaultTimeouts.
	c := Config{}
	c.fill()
	if c.Timeouts != DefaultTimeouts() {
		t.Errorf("filled %+v, want the defaults", c.Timeouts)
	}
}

func TestConfigValidateTimeouts(t *testing.T) {
	for _, tc := range []struct {
		t    Timeouts
		name string
	}{
		{Timeouts{Established: -time.Second}, "tcp_established"},
		{Timeouts{ICMP: MaxTimeout + 1}, "icmp"},
		{Timeouts{SynSent2: -1}, "tcp_syn_sent2"},
	} {
		var te *TimeoutError
		if err := (Config{Timeouts: tc.t}).Validate(); !errors.As(err, &te) || te.Name != tc.name {
			t.Errorf("%+v: %v, want a *TimeoutError for %s", tc.t, err, tc.name)
		}
	}
	if err := (Config{Timeouts: Timeouts{Generic: MaxTimeout}}).Validate(); err != nil {
		t.Errorf("MaxTimeout refused: %v", err)
	}
}
