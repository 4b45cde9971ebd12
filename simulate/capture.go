package simulate

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/packet"
)

// MaxRecord is the most read of one capture record: the parser's limit
// (packet.MaxCapturedFrame). Longer records are read up to it, the rest is
// skipped without being buffered, and they are counted in
// Report.LongRecords. Memory per record is therefore bounded whatever
// length a record header claims.
const MaxRecord = packet.MaxCapturedFrame

// record is one frame of a capture.
type record struct {
	data    []byte // the captured bytes, at most MaxRecord (the reader's buffer)
	capLen  int64  // the captured length the record declares
	wireLen int64  // the frame's length on the wire, at least capLen
	ts      time.Time
	link    layers.LinkType
	noIface bool // pcapng: a packet for an interface the section does not describe
}

// recordReader reads a capture's records, streaming.
type recordReader interface {
	// next reads the next record into rec; io.EOF at a clean end.
	next(rec *record) error
	// offset is the byte offset (in the uncompressed stream) of the next
	// record.
	offset() int64
}

// errCut is a record or block cut short by the end of the file.
var errCut = errors.New("cut short by the end of the file")

// stream reads a capture through a bufio.Reader, counting the bytes taken.
type stream struct {
	r   *bufio.Reader
	off int64
}

func (s *stream) offset() int64 { return s.off }

// full reads len(b) bytes; an end of file before them is errCut.
func (s *stream) full(b []byte) error {
	err := s.first(b)
	if err == io.EOF {
		return errCut
	}
	return err
}

// first reads len(b) bytes at the start of a record or block: io.EOF if
// the file ends there, errCut if it ends inside them.
func (s *stream) first(b []byte) error {
	n, err := io.ReadFull(s.r, b)
	s.off += int64(n)
	if err == io.ErrUnexpectedEOF {
		return errCut
	}
	return err
}

// skip discards n bytes without buffering them.
func (s *stream) skip(n int64) error {
	for n > 0 {
		step := int(min(n, 1<<30))
		d, err := s.r.Discard(step)
		s.off += int64(d)
		n -= int64(d)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return errCut
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// readCapped reads a record's capLen bytes into buf, keeping at most
// MaxRecord of them.
func (s *stream) readCapped(buf []byte, capLen int64) ([]byte, error) {
	keep := min(capLen, int64(len(buf)))
	if err := s.full(buf[:keep]); err != nil {
		return nil, err
	}
	return buf[:keep], s.skip(capLen - keep)
}

// pcapReader reads the classic pcap format (microsecond or nanosecond
// timestamps, either byte order).
type pcapReader struct {
	stream
	bo   binary.ByteOrder
	nano bool
	link layers.LinkType
	hdr  [16]byte
	buf  []byte
}

func newPcapReader(r *bufio.Reader) (*pcapReader, error) {
	p := &pcapReader{stream: stream{r: r}}
	var h [24]byte
	if err := p.full(h[:]); err != nil {
		return nil, fmt.Errorf("pcap file header: %w", err)
	}
	switch {
	case binary.LittleEndian.Uint32(h[:]) == 0xa1b2c3d4:
		p.bo = binary.LittleEndian
	case binary.BigEndian.Uint32(h[:]) == 0xa1b2c3d4:
		p.bo = binary.BigEndian
	case binary.LittleEndian.Uint32(h[:]) == 0xa1b23c4d:
		p.bo, p.nano = binary.LittleEndian, true
	case binary.BigEndian.Uint32(h[:]) == 0xa1b23c4d:
		p.bo, p.nano = binary.BigEndian, true
	default:
		return nil, fmt.Errorf("unknown magic number %#x (want a pcap or pcapng file)", binary.BigEndian.Uint32(h[:]))
	}
	if v := p.bo.Uint16(h[4:]); v != 2 {
		return nil, fmt.Errorf("pcap version %d.%d: only 2.x is known", v, p.bo.Uint16(h[6:]))
	}
	// The link type field's top bits may carry the FCS length.
	p.link = layers.LinkType(p.bo.Uint32(h[20:]) & 0xffff)
	p.buf = make([]byte, MaxRecord)
	return p, nil
}

func (p *pcapReader) next(rec *record) error {
	if err := p.first(p.hdr[:]); err != nil {
		return err
	}
	sec, frac := int64(p.bo.Uint32(p.hdr[0:])), int64(p.bo.Uint32(p.hdr[4:]))
	if !p.nano {
		frac *= 1000
	}
	capLen, wireLen := int64(p.bo.Uint32(p.hdr[8:])), int64(p.bo.Uint32(p.hdr[12:]))
	data, err := p.readCapped(p.buf, capLen)
	if err != nil {
		return err
	}
	*rec = record{data: data, capLen: capLen, wireLen: max(wireLen, capLen), ts: time.Unix(sec, frac).UTC(), link: p.link}
	return nil
}

// ngInterface is a pcapng interface description: its link type and
// timestamp units.
type ngInterface struct {
	link    layers.LinkType
	snapLen uint32
	units   uint64 // timestamp units per second
	offset  int64  // seconds added to every timestamp
}

// ngReader reads pcapng: any number of sections, interfaces of any link
// type, Enhanced, Simple and (obsolete) Packet blocks; every other block
// is skipped.
type ngReader struct {
	stream
	bo     binary.ByteOrder
	ifaces []ngInterface
	hdr    [28]byte
	buf    []byte
	opts   []byte
}

// maxOptions bounds what is read of a section or interface block (its
// options); the rest is skipped.
const maxOptions = 64 << 10

const (
	ngSHB = 0x0a0d0d0a
	ngIDB = 1
	ngPB  = 2
	ngSPB = 3
	ngEPB = 6
)

func newNgReader(r *bufio.Reader) *ngReader {
	return &ngReader{stream: stream{r: r}, buf: make([]byte, MaxRecord)}
}

func (n *ngReader) next(rec *record) error {
	for {
		if err := n.first(n.hdr[:8]); err != nil {
			return err
		}
		typ := binary.LittleEndian.Uint32(n.hdr[0:]) // the SHB type reads the same either way
		if typ == ngSHB {
			if err := n.section(); err != nil {
				return err
			}
			continue
		}
		if n.bo == nil {
			return fmt.Errorf("pcapng: block type %#x before the first section header", typ)
		}
		typ = n.bo.Uint32(n.hdr[0:])
		length := int64(n.bo.Uint32(n.hdr[4:]))
		if length < 12 || length%4 != 0 {
			return fmt.Errorf("pcapng: block type %#x has length %d: want a multiple of 4, at least 12", typ, length)
		}
		body := length - 12
		var err error
		switch typ {
		case ngIDB:
			err = n.iface(body)
		case ngEPB, ngPB:
			if body < 20 {
				return fmt.Errorf("pcapng: packet block of length %d, too short", length)
			}
			if err := n.full(n.hdr[8:28]); err != nil {
				return err
			}
			h := n.hdr[8:28]
			idx := int64(n.bo.Uint32(h[0:]))
			if typ == ngPB {
				idx = int64(n.bo.Uint16(h[0:]))
			}
			capLen, wireLen := int64(n.bo.Uint32(h[12:])), int64(n.bo.Uint32(h[16:]))
			if capLen > body-20 {
				return fmt.Errorf("pcapng: packet of %d bytes in a block of %d", capLen, length)
			}
			data, err := n.readCapped(n.buf, capLen)
			if err != nil {
				return err
			}
			*rec = record{data: data, capLen: capLen, wireLen: max(wireLen, capLen)}
			if idx < int64(len(n.ifaces)) {
				ifc := &n.ifaces[idx]
				rec.link = ifc.link
				rec.ts = ifc.time(uint64(n.bo.Uint32(h[4:]))<<32 | uint64(n.bo.Uint32(h[8:])))
			} else {
				rec.noIface = true
			}
			if err := n.skip(body - 20 - capLen); err != nil {
				return err
			}
			return n.trailer(length)
		case ngSPB:
			if body < 4 {
				return fmt.Errorf("pcapng: simple packet block of length %d, too short", length)
			}
			if err := n.full(n.hdr[8:12]); err != nil {
				return err
			}
			wireLen := int64(n.bo.Uint32(n.hdr[8:]))
			capLen := min(wireLen, body-4)
			if len(n.ifaces) > 0 && n.ifaces[0].snapLen > 0 {
				capLen = min(capLen, int64(n.ifaces[0].snapLen))
			}
			data, err := n.readCapped(n.buf, capLen)
			if err != nil {
				return err
			}
			*rec = record{data: data, capLen: capLen, wireLen: max(wireLen, capLen)}
			if len(n.ifaces) > 0 {
				rec.link = n.ifaces[0].link
			} else {
				rec.noIface = true
			}
			if err := n.skip(body - 4 - capLen); err != nil {
				return err
			}
			return n.trailer(length)
		default:
			err = n.skip(body)
		}
		if err != nil {
			return err
		}
		if err := n.trailer(length); err != nil {
			return err
		}
	}
}

// trailer reads a block's closing length, which must repeat the opening.
func (n *ngReader) trailer(length int64) error {
	var b [4]byte
	if err := n.full(b[:]); err != nil {
		return err
	}
	if got := int64(n.bo.Uint32(b[:])); got != length {
		return fmt.Errorf("pcapng: block length %d closed with %d (corrupt block)", length, got)
	}
	return nil
}

// section reads a section header (its type already read): the byte order
// and a fresh list of interfaces.
func (n *ngReader) section() error {
	if err := n.full(n.hdr[8:12]); err != nil {
		return err
	}
	switch {
	case binary.LittleEndian.Uint32(n.hdr[8:]) == 0x1a2b3c4d:
		n.bo = binary.LittleEndian
	case binary.BigEndian.Uint32(n.hdr[8:]) == 0x1a2b3c4d:
		n.bo = binary.BigEndian
	default:
		return fmt.Errorf("pcapng: section header with byte-order magic %#x", n.hdr[8:12])
	}
	length := int64(n.bo.Uint32(n.hdr[4:]))
	if length < 28 || length%4 != 0 {
		return fmt.Errorf("pcapng: section header of length %d: want a multiple of 4, at least 28", length)
	}
	if err := n.full(n.hdr[12:16]); err != nil {
		return err
	}
	if v := n.bo.Uint16(n.hdr[12:]); v != 1 {
		return fmt.Errorf("pcapng: section version %d.%d: only 1.x is known", v, n.bo.Uint16(n.hdr[14:]))
	}
	n.ifaces = n.ifaces[:0]
	if err := n.skip(length - 16 - 4); err != nil { // section length and options
		return err
	}
	return n.trailer(length)
}

// iface reads an interface description block's body.
func (n *ngReader) iface(body int64) error {
	if body < 8 {
		return fmt.Errorf("pcapng: interface description of %d bytes, too short", body)
	}
	keep := min(body, maxOptions)
	if cap(n.opts) < int(keep) {
		n.opts = make([]byte, keep)
	}
	b := n.opts[:keep]
	if err := n.full(b); err != nil {
		return err
	}
	ifc := ngInterface{link: layers.LinkType(n.bo.Uint16(b[0:])), snapLen: n.bo.Uint32(b[4:]), units: 1e6}
	for o := b[8:]; len(o) >= 4; {
		code, l := n.bo.Uint16(o[0:]), int(n.bo.Uint16(o[2:]))
		if code == 0 || 4+l > len(o) {
			break
		}
		v := o[4 : 4+l]
		switch {
		case code == 9 && l == 1: // if_tsresol
			if v[0]&0x80 != 0 {
				if e := v[0] & 0x7f; e < 64 {
					ifc.units = 1 << e
				}
			} else if e := v[0]; e <= 19 {
				ifc.units = 1
				for ; e > 0; e-- {
					ifc.units *= 10
				}
			}
		case code == 14 && l == 8: // if_tsoffset
			ifc.offset = int64(n.bo.Uint64(v))
		}
		o = o[4+(l+3)&^3:]
	}
	n.ifaces = append(n.ifaces, ifc)
	return n.skip(body - keep)
}

// time converts a timestamp in the interface's units.
func (ifc *ngInterface) time(ts uint64) time.Time {
	sec, frac := ts/ifc.units, ts%ifc.units
	hi, lo := bits.Mul64(frac, 1e9)
	ns, _ := bits.Div64(hi, lo, ifc.units) // frac < units: no overflow
	return time.Unix(int64(sec)+ifc.offset, int64(ns)).UTC()
}

// linkResult is what toEthernet made of a frame.
type linkResult uint8

const (
	linkOK          linkResult = iota
	linkUnsupported            // a link type that does not carry IP, or unknown
	linkTruncated              // the link-layer header is cut short
	linkNotIP                  // a frame of a supported link type that carries something else
)

// Link types that gopacket names but whose numbers vary by platform: DLT_RAW
// is 12 on most systems and 14 on OpenBSD; files should say 101.
const (
	linkTypeRaw12 layers.LinkType = 12
	linkTypeRaw14 layers.LinkType = 14
)

// SupportedLinkTypes are the link types simulate decodes: every one that
// gopacket's pcapgo reads and that carries IP directly.
var SupportedLinkTypes = []layers.LinkType{
	layers.LinkTypeNull, layers.LinkTypeEthernet, layers.LinkTypePPP, layers.LinkTypeFDDI, linkTypeRaw12, linkTypeRaw14,
	layers.LinkTypePPP_HDLC, layers.LinkTypeRaw, layers.LinkTypeC_HDLC, layers.LinkTypeIEEE802_11, layers.LinkTypeLoop,
	layers.LinkTypeLinuxSLL, layers.LinkTypePFLog, layers.LinkTypePrismHeader, layers.LinkTypeIEEE80211Radio,
	layers.LinkTypeIPv4, layers.LinkTypeIPv6, layers.LinkTypeLinuxSLL2,
}

// ipVersion is the EtherType of an IP packet by its version nibble.
func ipVersion(b []byte) uint16 {
	if len(b) > 0 && b[0]>>4 == 6 {
		return packet.EtherTypeIPv6
	}
	return packet.EtherTypeIPv4
}

// bsdFamily maps a BSD/Linux address family (NULL, LOOP, PFLOG headers) to
// an EtherType: AF_INET is 2 everywhere, AF_INET6 is 10 on Linux, 24 on
// NetBSD/OpenBSD, 28 on FreeBSD, 30 on macOS, 23 on Windows.
func bsdFamily(af uint32) uint16 {
	switch af {
	case 2:
		return packet.EtherTypeIPv4
	case 10, 23, 24, 28, 30:
		return packet.EtherTypeIPv6
	}
	return 0
}

// pppProto maps a PPP protocol number to an EtherType.
func pppProto(p uint16) uint16 {
	switch p {
	case 0x0021:
		return packet.EtherTypeIPv4
	case 0x0057:
		return packet.EtherTypeIPv6
	}
	return 0
}

// llcSNAP reads an 802.2 LLC/SNAP header (AA AA 03 00 00 00 TYPE) and
// returns its EtherType and the rest.
func llcSNAP(b []byte) (uint16, []byte, linkResult) {
	if len(b) < 8 {
		return 0, nil, linkTruncated
	}
	if b[0] != 0xaa || b[1] != 0xaa || b[2] != 0x03 || b[3] != 0 || b[4] != 0 || b[5] != 0 {
		return 0, nil, linkNotIP
	}
	return binary.BigEndian.Uint16(b[6:]), b[8:], linkOK
}

// dot11 strips an 802.11 data frame's header and LLC/SNAP.
func dot11(b []byte) (uint16, []byte, linkResult) {
	if len(b) < 24 {
		return 0, nil, linkTruncated
	}
	fc0, fc1 := b[0], b[1]
	if fc0>>2&3 != 2 || fc0&0x40 != 0 || fc1&0x40 != 0 { // not data, no data (null), or encrypted
		return 0, nil, linkNotIP
	}
	h := 24
	if fc1&3 == 3 { // to and from DS: a fourth address
		h += 6
	}
	if fc0&0x80 != 0 { // QoS data
		h += 2
		if fc1&0x80 != 0 { // HT control
			h += 4
		}
	}
	if len(b) < h {
		return 0, nil, linkTruncated
	}
	return llcSNAP(b[h:])
}

// toEthernet returns the frame as an Ethernet frame for the parser: an
// Ethernet frame as it is, any other link type's IP packet behind a
// synthetic Ethernet header in buf. hdrDelta is how much longer the
// result is than the record (negative when a longer link header was
// replaced), to convert the wire length.
func toEthernet(lt layers.LinkType, data []byte, buf *[]byte) (frame []byte, hdrDelta int, res linkResult) {
	var et uint16
	var payload []byte
	res = linkOK
	switch lt {
	case layers.LinkTypeEthernet:
		return data, 0, linkOK
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		if len(data) < 4 {
			return nil, 0, linkTruncated
		}
		af := binary.BigEndian.Uint32(data)
		if lt == layers.LinkTypeNull && af > 0xffff { // host byte order: little-endian writer
			af = binary.LittleEndian.Uint32(data)
		}
		et, payload = bsdFamily(af), data[4:]
	case layers.LinkTypeLinuxSLL:
		if len(data) < 16 {
			return nil, 0, linkTruncated
		}
		et, payload = binary.BigEndian.Uint16(data[14:]), data[16:]
	case layers.LinkTypeLinuxSLL2:
		if len(data) < 20 {
			return nil, 0, linkTruncated
		}
		et, payload = binary.BigEndian.Uint16(data[0:]), data[20:]
	case layers.LinkTypeRaw, linkTypeRaw12, linkTypeRaw14:
		et, payload = ipVersion(data), data
	case layers.LinkTypeIPv4:
		et, payload = packet.EtherTypeIPv4, data
	case layers.LinkTypeIPv6:
		et, payload = packet.EtherTypeIPv6, data
	case layers.LinkTypePPP, layers.LinkTypePPP_HDLC:
		b := data
		if len(b) >= 2 && b[0] == 0xff && b[1] == 0x03 { // HDLC address and control
			b = b[2:]
		}
		switch {
		case len(b) >= 1 && b[0]&1 == 1: // a compressed one-byte protocol field
			et, payload = pppProto(uint16(b[0])), b[1:]
		case len(b) >= 2:
			et, payload = pppProto(binary.BigEndian.Uint16(b)), b[2:]
		default:
			return nil, 0, linkTruncated
		}
	case layers.LinkTypeC_HDLC:
		if len(data) < 4 {
			return nil, 0, linkTruncated
		}
		et, payload = binary.BigEndian.Uint16(data[2:]), data[4:]
	case layers.LinkTypePFLog:
		if len(data) < 2 {
			return nil, 0, linkTruncated
		}
		hl := (int(data[0]) + 3) &^ 3
		if hl < 4 || len(data) < hl {
			return nil, 0, linkTruncated
		}
		et, payload = bsdFamily(uint32(data[1])), data[hl:]
	case layers.LinkTypeFDDI:
		if len(data) < 13 {
			return nil, 0, linkTruncated
		}
		et, payload, res = llcSNAP(data[13:])
	case layers.LinkTypeIEEE802_11:
		et, payload, res = dot11(data)
	case layers.LinkTypeIEEE80211Radio:
		if len(data) < 4 {
			return nil, 0, linkTruncated
		}
		hl := int(binary.LittleEndian.Uint16(data[2:]))
		if hl < 8 || len(data) < hl {
			return nil, 0, linkTruncated
		}
		et, payload, res = dot11(data[hl:])
	case layers.LinkTypePrismHeader:
		if len(data) < 8 {
			return nil, 0, linkTruncated
		}
		hl := int(binary.LittleEndian.Uint32(data[4:]))
		if hl < 8 || len(data) < hl {
			return nil, 0, linkTruncated
		}
		et, payload, res = dot11(data[hl:])
	default:
		return nil, 0, linkUnsupported
	}
	if res != linkOK {
		return nil, 0, res
	}
	if et != packet.EtherTypeIPv4 && et != packet.EtherTypeIPv6 && et != packet.EtherTypeVLAN && et != packet.EtherTypeQinQ {
		return nil, 0, linkNotIP
	}
	b := (*buf)[:0]
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(et>>8), byte(et))
	b = append(b, payload...)
	*buf = b
	return b, len(b) - len(data), linkOK
}
