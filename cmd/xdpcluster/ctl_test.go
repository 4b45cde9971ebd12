package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/xdpcluster/xdpcluster/internal/daemon"
)

// fakeDaemon serves the control API on a unix socket and records the
// requests it gets.
func fakeDaemon(t *testing.T) (sock string, requests func() []string) {
	sock = filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		json.NewEncoder(w).Encode(daemon.Status{Match: "-m cluster", TotalNodes: 2, NodeMask: "0x1", Serves: []int{1}})
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// TestCtlRefusesBadNumbers: `ctl` checks node numbers and masks before it
// sends anything (node 9223372036854775809 once came back as node
// -9223372036854775807), exits 2 with a message naming the value and the
// range, and the daemon sees no request at all.
func TestCtlRefusesBadNumbers(t *testing.T) {
	sock, requests := fakeDaemon(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"takeover", "9223372036854775809"}, "xdpcluster ctl: takeover: node 9223372036854775809: must be 1..32\n"},
		{[]string{"takeover", "18446744073709551616"}, "xdpcluster ctl: takeover: node 18446744073709551616: must be 1..32\n"},
		{[]string{"takeover", "0"}, "xdpcluster ctl: takeover: node 0: must be 1..32\n"},
		{[]string{"takeover", "33"}, "xdpcluster ctl: takeover: node 33: must be 1..32\n"},
		{[]string{"takeover", "0x21"}, "xdpcluster ctl: takeover: node 0x21: must be 1..32\n"},
		{[]string{"takeover", "-1"}, "xdpcluster ctl: takeover: node \"-1\": not a number (decimal, 0x hex, or 0-prefixed octal)\n"},
		{[]string{"takeover", "2&mask=3"}, "xdpcluster ctl: takeover: node \"2&mask=3\": not a number (decimal, 0x hex, or 0-prefixed octal)\n"},
		{[]string{"release", "1e3"}, "xdpcluster ctl: release: node \"1e3\": not a number (decimal, 0x hex, or 0-prefixed octal)\n"},
		{[]string{"release", "4294967297"}, "xdpcluster ctl: release: node 4294967297: must be 1..32\n"},
		{[]string{"set-mask", "0"}, "xdpcluster ctl: set-mask: mask 0: must be 0x1..0xffffffff (a non-zero 32-bit mask of nodes)\n"},
		{[]string{"set-mask", "0x100000000"}, "xdpcluster ctl: set-mask: mask 0x100000000: must be 0x1..0xffffffff (a non-zero 32-bit mask of nodes)\n"},
		{[]string{"set-mask", "3 4"}, "xdpcluster ctl: set-mask: mask \"3 4\": not a number (decimal, 0x hex, or 0-prefixed octal) (a non-zero 32-bit mask of nodes)\n"},
		{[]string{"set-mask", ""}, "xdpcluster ctl: set-mask: mask \"\": not a number (decimal, 0x hex, or 0-prefixed octal) (a non-zero 32-bit mask of nodes)\n"},
	}
	for _, tc := range tests {
		out, errOut, code := runCmd("", append([]string{"ctl", "--socket", sock}, tc.args...)...)
		if code != exitUsage || errOut != tc.want || out != "" {
			t.Errorf("ctl %q: exit %d, stderr %q, stdout %q; want exit %d, stderr %q", tc.args, code, errOut, out, exitUsage, tc.want)
		}
	}
	if got := requests(); len(got) != 0 {
		t.Errorf("refused commands reached the daemon: %q", got)
	}
}

// TestCtlRequests: good values are sent as the daemon reads them
// (iptables numbers normalised: 010 is node 8), escaped in the query.
func TestCtlRequests(t *testing.T) {
	sock, requests := fakeDaemon(t)
	for _, args := range [][]string{{"status"}, {"takeover", "2"}, {"release", "010"}, {"takeover", "0x20"}, {"set-mask", "5"}, {"set-mask", "0xffffffff"}, {"reload"}} {
		out, errOut, code := runCmd("", append([]string{"ctl", "--socket", sock}, args...)...)
		if code != exitOK || !strings.Contains(out, "serves:      node(s) [1] of 2 (mask 0x1)") {
			t.Errorf("ctl %q: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	want := []string{"GET /status", "POST /takeover?node=2", "POST /release?node=8", "POST /takeover?node=32",
		"POST /mask?mask=0x5", "POST /mask?mask=0xffffffff", "POST /reload"}
	if got := requests(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
