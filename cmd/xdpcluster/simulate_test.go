package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/xdpcluster/xdpcluster/simulate"
)

// writeCapture writes a pcap of UDP request/reply pairs from n clients.
func writeCapture(t *testing.T, n int) string {
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	w.WriteFileHeader(65536, layers.LinkTypeEthernet)
	ts := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	srv := net.IP{203, 0, 113, 1}
	for i := 0; i < n; i++ {
		cli := net.IP{198, 51, 100, byte(i)}
		for _, dir := range []bool{true, false} {
			src, dst, sp, dp := cli, srv, layers.UDPPort(4000+i), layers.UDPPort(53)
			if !dir {
				src, dst, sp, dp = srv, cli, dp, sp
			}
			ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}
			udp := &layers.UDP{SrcPort: sp, DstPort: dp}
			udp.SetNetworkLayerForChecksum(ip)
			buf := gopacket.NewSerializeBuffer()
			gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
				&layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4},
				ip, udp, gopacket.Payload("dns"))
			w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(buf.Bytes()), Length: len(buf.Bytes())}, buf.Bytes())
			ts = ts.Add(time.Millisecond)
		}
	}
	path := filepath.Join(t.TempDir(), "c.pcap")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSimulateCommand(t *testing.T) {
	path := writeCapture(t, 100)
	out, errOut, code := runCmd("", "simulate", "--pcap", path, "--cluster-total-nodes", "3", "--cluster-hash-seed", "0xdeadbeef",
		"--takeover", "2:1", "--seed-search", "50", "--no-progress")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"capture: " + path + " (pcap, Ethernet): 200 frames", "imbalance (max/mean", "every tracked packet (200) is owned by exactly one node",
		"after failover (node 2 failed, node 1 takes its share)", "2 (failed)", "seed search (50 seeds tried", "--cluster-hash-seed 0x", "top original sources"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = runCmd("", "simulate", "--pcap", path, "--cluster-total-nodes", "3", "--cluster-hash-seed", "1", "--json")
	var rep simulate.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || len(rep.Normal.Nodes) != 3 || rep.Connections != 100 {
		t.Fatalf("json: exit %d, %v, %+v", code, err, rep.Normal)
	}
}

func TestSimulateTruncated(t *testing.T) {
	path := writeCapture(t, 100)
	data, _ := os.ReadFile(path)
	os.WriteFile(path, data[:len(data)-30], 0o644)
	out, errOut, code := runCmd("", "simulate", "--pcap", path, "--cluster-total-nodes", "2", "--cluster-hash-seed", "1")
	if code != exitFail || !strings.Contains(errOut, "warning") || !strings.Contains(errOut, "frame 200 at byte offset") ||
		!strings.Contains(out, "WARNING") || !strings.Contains(out, "199 frames") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func TestSimulateUsage(t *testing.T) {
	path := writeCapture(t, 1)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"simulate", "--cluster-total-nodes", "2", "--cluster-hash-seed", "1"}, "--pcap is required"},
		{[]string{"simulate", "--pcap", path, "--cluster-hash-seed", "1"}, "--cluster-total-nodes is required"},
		{[]string{"simulate", "--pcap", path, "--cluster-total-nodes", "2"}, "--cluster-hash-seed is required"},
		{[]string{"simulate", "--pcap", path, "--cluster-total-nodes", "2", "--cluster-hash-seed", "1", "--takeover", "3:1"}, "takeover 3:1: nodes must be 1..2"},
		{[]string{"simulate", "--pcap", path, "--cluster-total-nodes", "2", "--cluster-hash-seed", "1", "--takeover", "x"}, "want FAILED:BY"},
	} {
		if _, errOut, code := runCmd("", tc.args...); code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, %q; want %q", tc.args, code, errOut, tc.want)
		}
	}
	if _, errOut, code := runCmd("", "simulate", "--pcap", "/nonexistent.pcap", "--cluster-total-nodes", "2", "--cluster-hash-seed", "1"); code != exitFail || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: %d %q", code, errOut)
	}
}
