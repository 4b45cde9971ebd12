package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
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

// TestSimulateCaptureKinds: an empty capture is 0 frames with exit 0 (it
// was "pcapng: EOF", exit 1); a snap-length capture, a capture with a
// record longer than 64 KiB and one of a link type without IP say so.
func TestSimulateCaptureKinds(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// A pcapng section header and nothing else.
	shb := []byte{0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 28, 0, 0, 0}
	frames := func(snap int, lt layers.LinkType, long bool) string {
		full, _ := os.ReadFile(writeCapture(t, 20))
		var b bytes.Buffer
		w := pcapgo.NewWriter(&b)
		w.WriteFileHeader(65536, lt)
		r, _ := pcapgo.NewReader(bytes.NewReader(full))
		for {
			data, ci, err := r.ReadPacketData()
			if err != nil {
				break
			}
			data = append(data, make([]byte, 200)...) // payload beyond the snap length
			binary.BigEndian.PutUint16(data[14+2:], binary.BigEndian.Uint16(data[14+2:])+200)
			binary.BigEndian.PutUint16(data[14+10:], 0)
			binary.BigEndian.PutUint16(data[14+10:], ^onesSum(data[14:34]))
			binary.BigEndian.PutUint16(data[34+4:], binary.BigEndian.Uint16(data[34+4:])+200)
			ci.Length = len(data)
			if long {
				data = append(data, make([]byte, 100000)...)
				ci.Length = len(data)
				long = false
			}
			ci.CaptureLength = min(len(data), snap)
			w.WritePacket(ci, data[:ci.CaptureLength])
		}
		return write(fmt.Sprintf("c-%d-%d.pcap", snap, lt), b.Bytes())
	}
	for _, tc := range []struct {
		name, path string
		want       []string
	}{
		{"zero bytes", write("empty.pcap", nil), []string{"(empty): 0 frames"}},
		{"section header only", write("shb.pcapng", shb), []string{"(pcapng): 0 frames"}},
		{"snap length 96", frames(96, layers.LinkTypeEthernet, false), []string{"(pcap, Ethernet): 40 frames", "payload not captured (snap length): 40 frames",
			"every tracked packet (40) is owned by exactly one node", "malformed: 0 frames"}},
		{"long record", frames(1<<20, layers.LinkTypeEthernet, true), []string{"records longer than 65,535 bytes: 1, truncated", "every tracked packet (40)"}},
		{"no IP", frames(1<<20, layers.LinkTypeLinuxUSB, false), []string{"malformed: 40 frames", "unsupported_link_type_220", "40  frames of a link type that carries no IP"}},
	} {
		out, errOut, code := runCmd("", "simulate", "--pcap", tc.path, "--cluster-total-nodes", "2", "--cluster-hash-seed", "1", "--no-progress")
		if code != 0 {
			t.Errorf("%s: exit %d: %s", tc.name, code, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.name, w, out)
			}
		}
	}
}

// onesSum is the ones' complement sum of b (an IPv4 header checksum is
// its complement).
func onesSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
