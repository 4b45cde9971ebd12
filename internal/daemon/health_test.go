package daemon

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestControlHealth: GET /health on the control socket answers the status
// while the dataplane is healthy and refuses with the dataplane's reason
// when it is not (what `xdpcluster ctl health` and keepalived's
// track_script rely on).
func TestControlHealth(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	d := fakeDaemon(t, sock)
	d.cfg.MetricsListen = ""
	if err := d.Serve(); err != nil {
		t.Fatal(err)
	}
	c := NewClient(sock)
	st, err := c.Do("GET", "/health")
	if err != nil || st.Role != "gateway" {
		t.Fatalf("healthy: %+v, %v", st, err)
	}
	fe := d.eng.(*fakeEngine)
	fe.mu.Lock()
	fe.health = errors.New("interface front: our xdp program was detached")
	fe.mu.Unlock()
	if _, err := c.Do("GET", "/health"); err == nil || !strings.Contains(err.Error(), "not ready: dataplane unhealthy: interface front: our xdp program was detached") {
		t.Fatalf("unhealthy: %v", err)
	}
	if err := d.Ready(); err == nil {
		t.Fatal("Ready is nil for an unhealthy dataplane")
	}
	d.Stop()
	if err := d.Ready(); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("stopped: %v", err)
	}
}
