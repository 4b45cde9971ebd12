package packet

import (
	"encoding/binary"
	"reflect"
	"testing"
)

// truncReasons are the outcomes DecodeCaptured may give for a good frame
// the capture cut inside its headers.
var truncReasons = map[Reason]bool{TruncEthernet: true, TruncVLAN: true, TruncIPv4: true, TruncIPv6: true,
	TruncExtHeader: true, TruncTCP: true, TruncUDP: true, TruncPorts: true, TruncICMP: true}

// checkCaptured checks DecodeCaptured against Decode for frame (which
// Decode parsed into full with outcome r) and every prefix of it up to
// maxCut bytes plus the cut at full.End-1: the whole frame decodes exactly
// as Decode does; a prefix is either OK with the same headers and Cut set
// when the IP packet goes on beyond it, or a truncation reason; Decode
// itself still rejects every prefix shorter than the IP packet.
func checkCaptured(t *testing.T, frame []byte, full *Parsed, r Reason, maxCut int) {
	t.Helper()
	var q Parsed
	for _, wire := range []int{len(frame), 0, len(frame) - 1} {
		if got := q.DecodeCaptured(frame, wire); got != r || q != *full {
			t.Fatalf("DecodeCaptured(whole frame, wire %d) = %v %+v; Decode = %v %+v", wire, got, q, r, *full)
		}
	}
	if r != OK {
		return
	}
	cuts := []int{int(full.End) - 1}
	for n := 0; n < len(frame) && n <= maxCut; n++ {
		cuts = append(cuts, n)
	}
	for _, n := range cuts {
		if n < 0 || n >= len(frame) {
			continue
		}
		got := q.DecodeCaptured(frame[:n], len(frame))
		if got != OK {
			if !truncReasons[got] {
				t.Fatalf("cut at %d of %d: %v, want OK or a truncation", n, len(frame), got)
			}
			if full.PayloadOff != 0 && n >= int(full.PayloadOff) {
				t.Fatalf("cut at %d, after the headers (payload at %d): %v", n, full.PayloadOff, got)
			}
			continue
		}
		if q.Cut != (n < int(full.End)) || int(q.End) != min(n, int(full.End)) {
			t.Fatalf("cut at %d of %d (IP ends at %d): Cut %v End %d", n, len(frame), full.End, q.Cut, q.End)
		}
		if q.Tuple != full.Tuple || q.TCPFlags != full.TCPFlags || q.Seq != full.Seq || q.Ack != full.Ack ||
			q.ICMPType != full.ICMPType || q.ICMPCode != full.ICMPCode || q.ICMPQuery != full.ICMPQuery || q.ICMPError != full.ICMPError ||
			q.Fragment != full.Fragment || q.FragOffset != full.FragOffset || q.MoreFrags != full.MoreFrags || q.FragID != full.FragID ||
			q.TTL != full.TTL || q.VLANs != full.VLANs || q.VLAN != full.VLAN || q.L3Off != full.L3Off || q.L4Off != full.L4Off {
			t.Fatalf("cut at %d of %d:\n cut  %+v\n full %+v", n, len(frame), q, *full)
		}
		if q.PayloadOff != 0 && q.PayloadOff != full.PayloadOff || q.PayloadOff > q.End {
			t.Fatalf("cut at %d: payload at %d (End %d), full frame %d", n, q.PayloadOff, q.End, full.PayloadOff)
		}
		if q.Cut {
			if live := q.Decode(frame[:n]); live == OK {
				t.Fatalf("Decode accepted a frame cut at %d of %d", n, len(frame))
			}
		}
	}
}

// TestDecodeCaptured: every corpus frame, whole and cut at every length,
// through DecodeCaptured; and the typical snap length of 96 bytes.
func TestDecodeCaptured(t *testing.T) {
	var p Parsed
	snap96 := 0
	for _, s := range corpus() {
		frame := build(t, s)
		r := p.Decode(frame)
		checkCaptured(t, frame, &p, r, len(frame))
		var q Parsed
		if len(frame) > 96 && q.DecodeCaptured(frame[:96], len(frame)) == OK {
			snap96++
			if !q.Cut || q.Tuple != p.Tuple {
				t.Errorf("%s cut at 96: Cut %v, tuple %+v, want %+v", s.name, q.Cut, q.Tuple, p.Tuple)
			}
		}
	}
	if snap96 < 100 {
		t.Errorf("only %d corpus frames decode from their first 96 bytes", snap96)
	}
}

// TestDecodeCapturedLengths: a cut frame's IP, TCP and UDP lengths are
// still checked, against the length on the wire; a frame longer than
// MaxCapturedFrame is read as cut there.
func TestDecodeCapturedLengths(t *testing.T) {
	tcp4 := build(t, spec{l4: "tcp", sport: 1})
	udp6 := build(t, spec{v6: true, l4: "udp", sport: 2})
	mod := func(b []byte, f func([]byte)) []byte { b = append([]byte(nil), b...); f(b); return b }
	fixsum := func(b []byte) {
		binary.BigEndian.PutUint16(b[24:], 0)
		binary.BigEndian.PutUint16(b[24:], Checksum(b[14:34]))
	}
	tests := []struct {
		name       string
		frame      []byte
		cut, wire  int
		want       Reason
		wantCut    bool
		wantPayOff uint16
	}{
		// The corpus's TCP header has 4 bytes of options: payload at 58.
		{"tcp whole", tcp4, len(tcp4), len(tcp4), OK, false, 58},
		{"tcp headers only", tcp4, 58, len(tcp4), OK, true, 58},
		{"tcp cut in options", tcp4, 54, len(tcp4), OK, true, 0},
		{"tcp cut in header", tcp4, 50, len(tcp4), TruncTCP, false, 0},
		{"ipv4 length beyond the wire", mod(tcp4, func(b []byte) { binary.BigEndian.PutUint16(b[16:], uint16(len(b)-13)); fixsum(b) }), 54, len(tcp4), BadIPv4Length, false, 0},
		{"ipv4 length to the wire", mod(tcp4, func(b []byte) { binary.BigEndian.PutUint16(b[16:], uint16(len(b)-14+500)); fixsum(b) }), 58, len(tcp4) + 500, OK, true, 58},
		{"tcp offset beyond the wire", mod(tcp4, func(b []byte) { b[34+12] = 0xf0 }), 54, 34 + 59, BadTCPOffset, false, 0},
		{"tcp long options cut", mod(tcp4, func(b []byte) { b[34+12] = 0xf0; binary.BigEndian.PutUint16(b[16:], 180); fixsum(b) }), 60, 14 + 180, OK, true, 0},
		{"udp headers only", udp6, 62, len(udp6), OK, true, 62},
		{"udp length beyond the wire", mod(udp6, func(b []byte) { binary.BigEndian.PutUint16(b[54+4:], uint16(len(b)-54+1)) }), 62, len(udp6), BadUDPLength, false, 0},
		{"ipv6 length beyond the wire", mod(udp6, func(b []byte) { binary.BigEndian.PutUint16(b[18:], uint16(len(b)-53)) }), 62, len(udp6), BadIPv6Length, false, 0},
		{"ipv6 cut in header", udp6, 50, len(udp6), TruncIPv6, false, 0},
	}
	var p Parsed
	for _, tc := range tests {
		got := p.DecodeCaptured(tc.frame[:tc.cut], tc.wire)
		if got != tc.want || got == OK && (p.Cut != tc.wantCut || p.PayloadOff != tc.wantPayOff || p.SrcPort == 0) {
			t.Errorf("%s: %v Cut %v payload %d sport %d; want %v Cut %v payload %d", tc.name, got, p.Cut, p.PayloadOff, p.SrcPort, tc.want, tc.wantCut, tc.wantPayOff)
		}
		if tc.cut < len(tc.frame) && p.Decode(tc.frame[:tc.cut]) == OK {
			t.Errorf("%s: Decode accepts the cut frame", tc.name)
		}
	}
	// A 64 KiB IP packet in an Ethernet frame (a capture of TSO traffic on
	// the sending host) is longer than the parser's 16-bit offsets.
	big := make([]byte, 14+65535)
	copy(big, tcp4[:54])
	binary.BigEndian.PutUint16(big[16:], 65535)
	fixsum(big)
	if got := p.DecodeCaptured(big, len(big)); got != OK || !p.Cut || p.End != MaxCapturedFrame || p.PayloadOff != 58 {
		t.Errorf("65549-byte frame: %v Cut %v End %d", got, p.Cut, p.End)
	}
	// Live frames are unchanged: DecodeCaptured of a whole frame is Decode.
	var q Parsed
	q.Decode(tcp4)
	p.DecodeCaptured(tcp4, len(tcp4))
	if !reflect.DeepEqual(p, q) {
		t.Errorf("whole frame: DecodeCaptured %+v, Decode %+v", p, q)
	}
}

func TestDecodeCapturedAllocs(t *testing.T) {
	f := build(t, spec{v6: true, ext: []uint8{ProtoHopByHop}, l4: "tcp", sport: 1})
	var p Parsed
	if n := testing.AllocsPerRun(100, func() { p.DecodeCaptured(f[:80], len(f)) }); n != 0 {
		t.Fatalf("DecodeCaptured allocates %v times", n)
	}
}
