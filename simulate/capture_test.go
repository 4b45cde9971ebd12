package simulate

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// frameAs converts an Ethernet frame (without VLAN tags) into the framing
// of link type lt, as capture files of that type hold it. variant picks
// between equivalent encodings (byte order of a NULL header, QoS 802.11).
func frameAs(t *testing.T, f []byte, lt layers.LinkType, variant int) []byte {
	t.Helper()
	et, ip := binary.BigEndian.Uint16(f[12:]), f[14:]
	v6 := et == 0x86dd
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	be16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	snap := cat([]byte{0xaa, 0xaa, 0x03, 0, 0, 0}, be16(et))
	dot11 := func() []byte {
		h := make([]byte, 24)
		h[0], h[1] = 0x08, 0x01 // data, to DS
		if variant == 1 {
			h[0] = 0x88 // QoS data
			h = append(h, 0, 0)
		}
		copy(h[4:], f[0:6])
		copy(h[10:], f[6:12])
		return cat(h, snap, ip)
	}
	switch lt {
	case layers.LinkTypeEthernet:
		return f
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		af := uint32(2)
		if v6 {
			af = []uint32{10, 24, 28, 30}[variant%4]
		}
		h := binary.BigEndian.AppendUint32(nil, af)
		if lt == layers.LinkTypeNull && variant < 4 { // written on a little-endian host
			h = binary.LittleEndian.AppendUint32(nil, af)
		}
		return cat(h, ip)
	case layers.LinkTypeLinuxSLL:
		h := make([]byte, 16)
		binary.BigEndian.PutUint16(h[2:], 1) // ARPHRD_ETHER
		binary.BigEndian.PutUint16(h[4:], 6)
		copy(h[6:], f[6:12])
		binary.BigEndian.PutUint16(h[14:], et)
		return cat(h, ip)
	case layers.LinkTypeLinuxSLL2:
		h := make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], et)
		binary.BigEndian.PutUint32(h[4:], 7) // ifindex
		binary.BigEndian.PutUint16(h[8:], 1) // ARPHRD_ETHER
		h[11] = 6
		copy(h[12:], f[6:12])
		return cat(h, ip)
	case layers.LinkTypeRaw, linkTypeRaw12, linkTypeRaw14, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
		return cat(ip)
	case layers.LinkTypePPP, layers.LinkTypePPP_HDLC:
		p := uint16(0x0021)
		if v6 {
			p = 0x0057
		}
		if lt == layers.LinkTypePPP_HDLC || variant == 1 {
			return cat([]byte{0xff, 0x03}, be16(p), ip)
		}
		return cat(be16(p), ip)
	case layers.LinkTypeC_HDLC:
		return cat([]byte{0x0f, 0x00}, be16(et), ip)
	case layers.LinkTypePFLog:
		h := make([]byte, 64)
		h[0], h[1] = 61, 2 // header length (padded to 64), AF_INET
		if v6 {
			h[1] = 24
		}
		return cat(h, ip)
	case layers.LinkTypeFDDI:
		return cat([]byte{0x50}, f[0:12], snap, ip)
	case layers.LinkTypeIEEE802_11:
		return dot11()
	case layers.LinkTypeIEEE80211Radio:
		return cat([]byte{0, 0, 8, 0, 0, 0, 0, 0}, dot11())
	case layers.LinkTypePrismHeader:
		h := make([]byte, 144)
		binary.LittleEndian.PutUint32(h[4:], 144)
		return cat(h, dot11())
	}
	t.Fatalf("no framing for link type %d", lt)
	return nil
}

// pcapOf writes frames as a pcap of link type lt, each record cut to snap
// bytes (0: whole) with the whole length as its original length.
func pcapOf(t *testing.T, frames [][]byte, lt layers.LinkType, snap int) []byte {
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	sl := uint32(65536)
	if snap > 0 {
		sl = uint32(snap)
	}
	if err := w.WriteFileHeader(sl, lt); err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, f := range frames {
		data := f
		if snap > 0 && len(data) > snap {
			data = data[:snap]
		}
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: len(f)}, data); err != nil {
			t.Fatal(err)
		}
		ts = ts.Add(time.Millisecond)
	}
	return b.Bytes()
}

// TestLinkTypes: every supported link type, the standard flows framed for
// it, gives the same split as Ethernet (packets and connections; bytes are
// the link type's lengths). Before, NULL/LOOP captures reported
// unsupported_link_type_0 for every frame.
func TestLinkTypes(t *testing.T) {
	c := standard(t, 3, 0xdeadbeef)
	// IPv4-only and IPv6-only flows for the link types of one family.
	c4, c6 := newCapture(t, 3, 0xdeadbeef), newCapture(t, 3, 0xdeadbeef)
	for i := 0; i < 40; i++ {
		c4.tcpConn(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(1000+i), 2)
		c6.udpFlow(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), uint16(2000+i), 2)
	}
	type tc struct {
		lt      layers.LinkType
		variant int
		c       *capture
		conns   uint64
	}
	var cases []tc
	for _, lt := range SupportedLinkTypes {
		switch lt {
		case layers.LinkTypeIPv4:
			cases = append(cases, tc{lt, 0, c4, 40})
		case layers.LinkTypeIPv6:
			cases = append(cases, tc{lt, 0, c6, 40})
		default:
			cases = append(cases, tc{lt, 0, c, 420})
		}
	}
	cases = append(cases, tc{layers.LinkTypeNull, 1, c, 420}, tc{layers.LinkTypeNull, 4, c, 420}, tc{layers.LinkTypeNull, 7, c, 420},
		tc{layers.LinkTypeLoop, 2, c, 420}, tc{layers.LinkTypePPP, 1, c, 420}, tc{layers.LinkTypeIEEE802_11, 1, c, 420})
	for _, k := range cases {
		t.Run(fmt.Sprintf("%s-%d/%d", k.lt, k.lt, k.variant), func(t *testing.T) {
			var frames [][]byte
			for _, f := range k.c.frames {
				frames = append(frames, frameAs(t, f, k.lt, k.variant))
			}
			rep, err := Run(bytes.NewReader(pcapOf(t, frames, k.lt, 0)), Options{TotalNodes: 3, Seed: 0xdeadbeef})
			if err != nil {
				t.Fatal(err)
			}
			checkNormal(t, k.c, rep, k.lt == layers.LinkTypeEthernet)
			if rep.Connections != k.conns || rep.Frames != uint64(len(frames)) || len(rep.LinkTypes) != 1 {
				t.Errorf("%d connections, %d frames, link types %v", rep.Connections, rep.Frames, rep.LinkTypes)
			}
		})
	}
	// A link type that carries no IP is counted, by its number.
	rep, err := Run(bytes.NewReader(pcapOf(t, c.frames[:10], layers.LinkTypeLinuxUSB, 0)), Options{TotalNodes: 3, Seed: 1})
	if err != nil || rep.Frames != 10 || rep.Malformed["unsupported_link_type_220"] != 10 {
		t.Errorf("USB capture: %v, %d frames, malformed %v", err, rep.Frames, rep.Malformed)
	}
}

// TestSnapLength: a capture whose records hold only each frame's first 96
// bytes (tcpdump -s 96) replays as the whole capture does: same split,
// bytes from the original lengths, and the frames whose payload was cut
// are counted as such. Before, they were malformed (bad_ipv4_length).
func TestSnapLength(t *testing.T) {
	c := standard(t, 3, 7)
	rep, err := Run(bytes.NewReader(pcapOf(t, c.frames, layers.LinkTypeEthernet, 96)), Options{TotalNodes: 3, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	checkNormal(t, c, rep, true)
	var cut uint64
	for _, f := range c.frames {
		if len(f) > 96 {
			cut++
		}
	}
	if cut < 500 || rep.PayloadNotCaptured != cut || rep.HeadersNotCaptured != 0 {
		t.Errorf("payload not captured: %d, headers not captured %d; want %d and 0", rep.PayloadNotCaptured, rep.HeadersNotCaptured, cut)
	}
	// Raw IP cut at 40 bytes: IPv4 TCP headers fit, IPv6 UDP headers do
	// not (the fixed header does, the UDP header is missing).
	var frames [][]byte
	var v6 uint64
	for _, f := range c.frames {
		frames = append(frames, f[14:])
		if f[14]>>4 == 6 {
			v6++
		}
	}
	rep, err = Run(bytes.NewReader(pcapOf(t, frames, layers.LinkTypeRaw, 40)), Options{TotalNodes: 3, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if rep.HeadersNotCaptured != v6 || rep.Malformed["truncated_udp"] != v6 || len(rep.Malformed) != 1 || rep.PayloadNotCaptured == 0 {
		t.Errorf("raw IP at 40 bytes: %d IPv6 frames; headers not captured %d, malformed %v, payload not captured %d",
			v6, rep.HeadersNotCaptured, rep.Malformed, rep.PayloadNotCaptured)
	}
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// hugeRecordPcap is a pcap stream whose second record claims capLen bytes
// (a UDP frame followed by zeros), between two normal frames.
func hugeRecordPcap(t *testing.T, c *capture, capLen uint32) io.Reader {
	var head bytes.Buffer
	w := pcapgo.NewWriter(&head)
	w.WriteFileHeader(0xffffffff, layers.LinkTypeEthernet)
	ts := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(c.frames[0]), Length: len(c.frames[0])}, c.frames[0])
	rh := make([]byte, 16)
	binary.LittleEndian.PutUint32(rh[0:], uint32(ts.Unix()))
	binary.LittleEndian.PutUint32(rh[8:], capLen)
	binary.LittleEndian.PutUint32(rh[12:], capLen)
	big := c.frames[1]
	var tail bytes.Buffer
	w2 := pcapgo.NewWriter(&tail)
	last := c.frames[2]
	w2.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(last), Length: len(last)}, last)
	return io.MultiReader(&head, bytes.NewReader(rh), bytes.NewReader(big), io.LimitReader(zeros{}, int64(capLen)-int64(len(big))), &tail)
}

// allocated is how many bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHugeRecordBoundedMemory: a record header claiming 4 GiB (plain) or
// 1 GiB (gzip, a 1 MB file) costs no more memory than a small capture:
// the first MaxRecord bytes are read, the rest skipped unbuffered, and the
// record is counted. Before, the reader buffered the whole record (4.2 GB
// RSS for the gzip case).
func TestHugeRecordBoundedMemory(t *testing.T) {
	c := newCapture(t, 2, 1)
	c.tcpConn(netip.MustParseAddr("198.51.100.1"), 1000, 0)
	opts := Options{TotalNodes: 2, Seed: 1, MaxEntries: 1024, MaxSources: 1024}
	var small uint64
	base := allocated(func() {
		rep, err := Run(bytes.NewReader(pcapOf(t, c.frames, layers.LinkTypeEthernet, 0)), opts)
		if err != nil || rep.Frames != uint64(len(c.frames)) {
			t.Fatalf("small capture: %v", err)
		}
		small = rep.Frames
	})
	check := func(name string, r io.Reader, capLen uint32) {
		t.Helper()
		var rep *Report
		var err error
		n := allocated(func() { rep, err = Run(r, opts) })
		t.Logf("%s: %d MB allocated (a %d-frame capture: %d MB)", name, n>>20, small, base>>20)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n > base+8<<20 {
			t.Errorf("%s: %d bytes allocated for a record of %d bytes (a small capture: %d)", name, n, capLen, base)
		}
		if rep.Frames != 3 || rep.LongRecords != 1 || rep.Tracked != 3 {
			t.Errorf("%s: %d frames, %d long records, %d tracked, malformed %v", name, rep.Frames, rep.LongRecords, rep.Tracked, rep.Malformed)
		}
	}
	check("plain, 4 GiB record", hugeRecordPcap(t, c, 0xffffffff), 0xffffffff)

	// The gzip file is built from members (a gzip reader reads them as one
	// stream): the record's zeros are one 64 MiB member compressed once and
	// repeated, so building the 1 GiB record takes no minute.
	const gib, chunk = 1 << 30, 64 << 20
	member := func(r io.Reader) []byte {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		if _, err := io.Copy(zw, r); err != nil {
			t.Fatal(err)
		}
		zw.Close()
		return b.Bytes()
	}
	full := hugeRecordPcap(t, c, gib)
	var gz bytes.Buffer
	prefix := 24 + 16 + len(c.frames[0]) + 16 + len(c.frames[1]) // headers, frame 0, the record's header and its frame
	gz.Write(member(io.LimitReader(full, int64(prefix))))
	zerosMember := member(io.LimitReader(full, chunk))
	gz.Write(zerosMember)
	left := int64(gib - len(c.frames[1]) - chunk)
	for ; left >= chunk; left -= chunk {
		io.CopyN(io.Discard, full, chunk)
		gz.Write(zerosMember)
	}
	gz.Write(member(full)) // the last zeros and the frame after the record
	t.Logf("gzip file of %d KB", gz.Len()>>10)
	check("gzip, 1 GiB record", bytes.NewReader(gz.Bytes()), gib)
}

// TestPcapngInterfaces: a pcapng capture with interfaces of different
// link types is read whole, each frame decoded by its interface's link
// type; frames of a link type that carries no IP and of an interface the
// section does not describe are counted, not skipped.
func TestPcapngInterfaces(t *testing.T) {
	c := standard(t, 3, 5)
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriter(&b, layers.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	lts := []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL2, layers.LinkTypeNull, layers.LinkTypeRaw}
	for _, lt := range lts[1:] {
		if _, err := w.AddInterface(pcapgo.NgInterface{LinkType: lt, SnapLength: 65536, TimestampResolution: 9}); err != nil {
			t.Fatal(err)
		}
	}
	usb, _ := w.AddInterface(pcapgo.NgInterface{LinkType: layers.LinkTypeLinuxUSB, SnapLength: 65536, TimestampResolution: 9})
	ts := c.ts
	for i, f := range c.frames {
		ifc := i % len(lts)
		data := frameAs(t, f, lts[ifc], 0)
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: len(data), InterfaceIndex: ifc}, data); err != nil {
			t.Fatal(err)
		}
		ts = ts.Add(time.Millisecond)
	}
	for i := 0; i < 3; i++ {
		w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: 4, Length: 4, InterfaceIndex: usb}, []byte{1, 2, 3, 4})
	}
	w.Flush()
	// An Enhanced Packet Block for interface 9, which does not exist.
	epb := make([]byte, 36)
	binary.LittleEndian.PutUint32(epb[0:], 6)
	binary.LittleEndian.PutUint32(epb[4:], 36)
	binary.LittleEndian.PutUint32(epb[8:], 9)
	binary.LittleEndian.PutUint32(epb[20:], 4)
	binary.LittleEndian.PutUint32(epb[24:], 4)
	binary.LittleEndian.PutUint32(epb[32:], 36)
	b.Write(epb)

	rep, err := Run(bytes.NewReader(b.Bytes()), Options{TotalNodes: 3, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Frames != uint64(len(c.frames))+4 || rep.Malformed["unsupported_link_type_220"] != 3 || rep.Malformed["no_such_interface"] != 1 || len(rep.Malformed) != 2 {
		t.Fatalf("%d frames of %d, malformed %v", rep.Frames, len(c.frames)+4, rep.Malformed)
	}
	if rep.Connections != 420 || len(rep.LinkTypes) != 5 {
		t.Errorf("%d connections, link types %v", rep.Connections, rep.LinkTypes)
	}
	for i, ns := range rep.Normal.Nodes {
		if ns.Connections != c.want[i].conns || ns.Packets != c.want[i].pkts {
			t.Errorf("node %d: %d conns %d packets, want %d %d", ns.Node, ns.Connections, ns.Packets, c.want[i].conns, c.want[i].pkts)
		}
	}
	if !rep.First.Equal(c.ts) || !rep.Last.Equal(ts) {
		t.Errorf("first %v last %v, want %v and %v", rep.First, rep.Last, c.ts, ts)
	}
}

// TestEmptyCaptures: a zero-byte file, a pcapng section header alone, a
// pcap file header alone and a gzipped empty file are 0 frames, not errors.
func TestEmptyCaptures(t *testing.T) {
	shb := make([]byte, 28)
	binary.LittleEndian.PutUint32(shb[0:], ngSHB)
	binary.LittleEndian.PutUint32(shb[4:], 28)
	binary.LittleEndian.PutUint32(shb[8:], 0x1a2b3c4d)
	binary.LittleEndian.PutUint16(shb[12:], 1)
	binary.LittleEndian.PutUint64(shb[16:], ^uint64(0))
	binary.LittleEndian.PutUint32(shb[24:], 28)
	var ng bytes.Buffer
	w, _ := pcapgo.NewNgWriter(&ng, layers.LinkTypeEthernet)
	w.Flush()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Close()
	for _, tc := range []struct {
		name, format string
		data         []byte
	}{
		{"zero bytes", "empty", nil},
		{"pcapng section header", "pcapng", shb},
		{"pcapng section and interface", "pcapng", ng.Bytes()},
		{"pcap header", "pcap", pcapOf(t, nil, layers.LinkTypeEthernet, 0)},
		{"gzip of nothing", "empty", gz.Bytes()},
	} {
		rep, err := Run(bytes.NewReader(tc.data), Options{TotalNodes: 2, Seed: 1})
		if err != nil || rep.Frames != 0 || rep.Format != tc.format {
			t.Errorf("%s: %v, %+v", tc.name, err, rep)
		}
	}
	// A pcapng cut inside its section header is still an error.
	if _, err := Run(bytes.NewReader(shb[:20]), Options{TotalNodes: 2, Seed: 1}); err == nil {
		t.Error("a cut section header is accepted")
	}
}

// TestPcapngAgreesWithPcapgo: every pcapng test file that gopacket's
// pcapgo reads (with mixed link types allowed) gives the same records,
// timestamps and link types through our reader.
func TestPcapngAgreesWithPcapgo(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/gopacket/gopacket").Output()
	if err != nil {
		t.Skipf("gopacket's module directory not found (go list: %v)", err)
	}
	files, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "pcapgo", "tests", "*", "*.pcapng"))
	if len(files) == 0 {
		t.Skip("no pcapng test files in gopacket's module")
	}
	compared := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		type rec struct {
			data     string
			ts       time.Time
			capLen   int
			wireLen  int
			linkType layers.LinkType
		}
		var want []rec
		ng, err := pcapgo.NewNgReader(bytes.NewReader(data), pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			continue
		}
		ok := true
		for {
			d, ci, err := ng.ReadPacketData()
			if err == io.EOF {
				break
			}
			if err != nil {
				ok = false
				break
			}
			want = append(want, rec{string(d), ci.Timestamp.UTC(), ci.CaptureLength, ci.Length, ci.AncillaryData[0].(layers.LinkType)})
		}
		if !ok {
			continue
		}
		var got []rec
		r := newNgReader(bufioReader(data))
		var x record
		for {
			err := r.next(&x)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Errorf("%s: record %d: %v (pcapgo reads %d)", file, len(got)+1, err, len(want))
				break
			}
			got = append(got, rec{string(x.data), x.ts, int(x.capLen), int(x.wireLen), x.link})
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d records, pcapgo %d", file, len(got), len(want))
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: record %d: %+v, pcapgo %+v", filepath.Base(file), i+1, got[i], want[i])
			}
		}
		// Run counts every frame, of every interface (test202 has 8 frames
		// on two interfaces, Ethernet and NULL: 6 were read before).
		if rep, err := Run(bytes.NewReader(data), Options{TotalNodes: 2, Seed: 1}); err != nil {
			t.Errorf("%s: %v", file, err)
		} else if rep.Frames != uint64(len(want)) {
			t.Errorf("%s: Run read %d frames, the file has %d", file, rep.Frames, len(want))
		}
		if filepath.Base(file) == "test202.pcapng" && len(want) != 8 {
			t.Errorf("%s: %d frames, want 8", file, len(want))
		}
		compared++
	}
	t.Logf("%d of %d files compared", compared, len(files))
	if compared < 20 {
		t.Errorf("only %d files compared", compared)
	}
}

// TestCorruptRecords: damaged files end with a CaptureError naming the
// record, never a panic or a silent success.
func TestCorruptRecords(t *testing.T) {
	c := standard(t, 2, 3)
	ng := c.pcapng()
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"pcapng block length not a multiple of 4", func() []byte {
			b := append([]byte(nil), ng...)
			// The first block after the section and interface: an EPB.
			off := int(binary.LittleEndian.Uint32(b[4:]))
			off += int(binary.LittleEndian.Uint32(b[off+4:]))
			binary.LittleEndian.PutUint32(b[off+4:], 33)
			return b
		}()},
		{"pcapng capture length beyond its block", func() []byte {
			b := append([]byte(nil), ng...)
			off := int(binary.LittleEndian.Uint32(b[4:]))
			off += int(binary.LittleEndian.Uint32(b[off+4:]))
			binary.LittleEndian.PutUint32(b[off+20:], 1<<20)
			return b
		}()},
		{"pcap record beyond the file", append(pcapOf(t, c.frames[:3], layers.LinkTypeEthernet, 0), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0)},
	} {
		rep, err := Run(bytes.NewReader(tc.data), Options{TotalNodes: 2, Seed: 3})
		var ce *CaptureError
		if !errors.As(err, &ce) || rep == nil || rep.Warning == "" {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// FuzzRun: any input, read as a capture, gives a report or an error, never
// a panic or a read beyond what it holds.
func FuzzRun(f *testing.F) {
	var t testing.T
	c := newCapture(&t, 2, 1)
	c.tcpConn(netip.MustParseAddr("198.51.100.1"), 1000, 1)
	c.udpFlow(netip.MustParseAddr("2001:db8::1"), 53, 1)
	f.Add(c.pcap(layers.LinkTypeEthernet))
	f.Add(c.pcapng())
	f.Add(c.pcap(layers.LinkTypeLinuxSLL))
	f.Add(pcapOf(&t, c.frames, layers.LinkTypeEthernet, 60))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := Run(bytes.NewReader(data), Options{TotalNodes: 2, Seed: 1, MaxEntries: 64, MaxSources: 64})
		if err == nil && rep == nil {
			t.Fatal("no report and no error")
		}
		var ce *CaptureError
		if errors.As(err, &ce) && (rep == nil || ce.Offset > int64(len(data)) && !bytes.HasPrefix(data, []byte{0x1f, 0x8b})) {
			t.Fatalf("capture error %v at offset %d of %d bytes", ce, ce.Offset, len(data))
		}
	})
}
