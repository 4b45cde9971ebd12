package main

import (
	"bytes"
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

// rawDaemon serves the control API on a unix socket, answering every
// request with status code and body as given.
func rawDaemon(t *testing.T, code int, body string) string {
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		w.Write([]byte(body))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// statusBody is a daemon's status reply with many interfaces and packet
// counters (maps: the order they print in once changed between runs), a
// membership section and a field this ctl does not know.
const statusBody = `{"version":"v1.2.3","role":"gateway","uptime":"1h2m3s","match":"-m cluster --cluster-total-nodes 3 --cluster-local-nodemask 0x00000005 --cluster-hash-seed 0xdeadbeef","total_nodes":3,"node_mask":"0x5","serves_nodes":[1,3],"invert":false,` +
	`"interfaces":{"front":"xdp native, afxdp copy, 1 queue(s)","back":"xdp native, afxdp copy, 1 queue(s)","a-very-long-name":"xdp generic, afpacket","eth9":"xdp native, afxdp zero-copy, 4 queue(s)"},` +
	`"connections":42,"packets":{"pass":123456789,"drop":7,"not_ours":1000,"invalid":0,"table_full":3,"arp":12345},` +
	`"membership":{"name":"node1","ready":true,"members":[{"name":"node2","addr":"192.0.2.12:7946","state":"alive","ready":true,"home":[2]},{"name":"node1","addr":"192.0.2.11:7946","state":"alive","ready":true,"home":[1],"self":true}],"buckets":[["node1"],["node2"],["node1"]],"resync":{}},` +
	`"a_future_field":{"z":1,"a":[true]}}`

// TestCtlStatus: ctl status prints a header with the daemon's version and
// role, the keys aligned, the interfaces and packet counters as tables
// sorted by name (the same bytes on every run: they reordered with Go's
// map iteration), the membership; --json prints the reply as received,
// indented, before or after the command.
func TestCtlStatus(t *testing.T) {
	sock := rawDaemon(t, http.StatusOK, statusBody)
	out, errOut, code := runCmd("", "ctl", "--socket", sock, "status")
	if code != exitOK || errOut != "" {
		t.Fatalf("ctl status: exit %d, stderr %q", code, errOut)
	}
	want := `xdpcluster v1.2.3, role gateway, up 1h2m3s
match:       -m cluster --cluster-total-nodes 3 --cluster-local-nodemask 0x00000005 --cluster-hash-seed 0xdeadbeef
serves:      node(s) [1 3] of 3 (mask 0x5)
connections: 42
interfaces:
  NAME              MODE
  a-very-long-name  xdp generic, afpacket
  back              xdp native, afxdp copy, 1 queue(s)
  eth9              xdp native, afxdp zero-copy, 4 queue(s)
  front             xdp native, afxdp copy, 1 queue(s)
packets:
  COUNTER       PACKETS
  arp             12345
  drop                7
  invalid             0
  not_ours         1000
  pass        123456789
  table_full          3
membership:  node1 (ready)
`
	if !strings.HasPrefix(out, want) {
		t.Errorf("ctl status:\n%s\nwant it to start with\n%s", out, want)
	}
	for _, w := range []string{"  MEMBER", "  node1 (this node)  192.0.2.11:7946  alive  yes    [1]\n  node2              192.0.2.12:7946", "  BUCKET  SERVED BY\n  1       node1\n  2       node2\n  3       node1\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("ctl status lacks %q:\n%s", w, out)
		}
	}
	for i := 0; i < 20; i++ {
		if again, _, _ := runCmd("", "ctl", "--socket", sock, "status"); again != out {
			t.Fatalf("ctl status changed between runs:\n%s\nthen\n%s", out, again)
		}
	}

	var indented bytes.Buffer
	if err := json.Indent(&indented, []byte(statusBody), "", "  "); err != nil {
		t.Fatal(err)
	}
	indented.WriteByte('\n')
	for _, args := range [][]string{{"status", "--json"}, {"--json", "status"}, {"status", "--json=true"}} {
		out, errOut, code := runCmd("", append([]string{"ctl", "--socket", sock}, args...)...)
		if code != exitOK || errOut != "" || out != indented.String() {
			t.Errorf("ctl %q: exit %d, stderr %q, stdout\n%s\nwant the reply as received, indented:\n%s", args, code, errOut, out, indented.String())
		}
	}
	// The header says what it does not know rather than printing blanks.
	old := rawDaemon(t, http.StatusOK, `{"role":"backend","match":"-m cluster","total_nodes":2,"node_mask":"0x1","serves_nodes":[1],"invert":true,"connections":-1}`)
	out, _, _ = runCmd("", "ctl", "--socket", old, "status")
	for _, w := range []string{"xdpcluster (version unknown), role backend, dataplane not running\n", "serves:      node(s) [1] of 2 (mask 0x1, inverted)\n",
		"connections: not tracked (role backend decides each packet in XDP)\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("ctl status of a sparse reply lacks %q:\n%s", w, out)
		}
	}
}

// TestCtlReplies: the daemon's refusals and odd replies are exit 1 with
// its message; health prints "ready", or with --json the reply.
func TestCtlReplies(t *testing.T) {
	refused := rawDaemon(t, http.StatusBadRequest, `{"error":"the membership section manages the node mask"}`+"\n")
	notReady := rawDaemon(t, http.StatusServiceUnavailable, `{"error":"not ready: dataplane unhealthy"}`)
	broken := rawDaemon(t, http.StatusOK, `{"version":`)
	proxy := rawDaemon(t, http.StatusBadGateway, `<html>bad gateway</html>`)
	ok := rawDaemon(t, http.StatusOK, `{"version":"v1","role":"backend","connections":-1}`)
	tests := []struct {
		sock string
		args []string
		code int
		out  string
		err  string
	}{
		{refused, []string{"takeover", "3"}, exitFail, "", "xdpcluster ctl: the membership section manages the node mask\n"},
		{refused, []string{"takeover", "3", "--json"}, exitFail, "", "xdpcluster ctl: the membership section manages the node mask\n"},
		{notReady, []string{"health"}, exitFail, "", "xdpcluster ctl: not ready: dataplane unhealthy\n"},
		{broken, []string{"status"}, exitFail, "", "xdpcluster ctl: the daemon's reply: unexpected end of JSON input\n"},
		{broken, []string{"status", "--json"}, exitFail, "", "xdpcluster ctl: the daemon's reply is not JSON: unexpected end of JSON input\n"},
		{proxy, []string{"status"}, exitFail, "", "xdpcluster ctl: control socket: GET /status: 502 Bad Gateway\n"},
		{ok, []string{"health"}, exitOK, "ready\n", ""},
		{ok, []string{"health", "--json"}, exitOK, "{\n  \"version\": \"v1\",\n  \"role\": \"backend\",\n  \"connections\": -1\n}\n", ""},
	}
	for _, tc := range tests {
		out, errOut, code := runCmd("", append([]string{"ctl", "--socket", tc.sock}, tc.args...)...)
		if code != tc.code || out != tc.out || errOut != tc.err {
			t.Errorf("ctl %q: exit %d, stdout %q, stderr %q; want exit %d, %q, %q", tc.args, code, out, errOut, tc.code, tc.out, tc.err)
		}
	}
}
