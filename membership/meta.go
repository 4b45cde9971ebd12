package membership

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// MetaVersion is the version of the meta encoding this package writes. A
// decoder accepts any version at or above it and ignores trailing bytes,
// so a later version may append fields without breaking older members.
const MetaVersion = 1

// MetaMaxSize is memberlist's limit on a node's meta (MetaMaxSize there).
const MetaMaxSize = 512

// ReasonMaxLen bounds Meta.Reason on the wire; longer reasons are cut (at a
// rune boundary).
const ReasonMaxLen = 200

// Meta is what a member gossips about itself.
type Meta struct {
	Home   uint32         // its home buckets: bit b = 0-based bucket b (its configured local_nodemask)
	Total  uint32         // cluster total_nodes
	Seed   uint32         // hash seed
	Hash   uint8          // hash mode
	Ready  bool           // dataplane attached and serving, state resynced
	Reason string         // why not ready (short)
	Resync netip.AddrPort // where its state-resync server listens (zero: none)
}

const flagReady = 1 << 0

// errMeta is wrapped by every decoding error.
var errMeta = errors.New("member meta")

// Encode returns the compact wire form of m (at most MetaMaxSize bytes):
// version, home, total, seed (big endian), hash, flags, the resync address
// (length 0, 4 or 16, the address, the port) and the reason (length, bytes).
func (m Meta) Encode() []byte {
	b := make([]byte, 0, 64)
	b = append(b, MetaVersion)
	b = binary.BigEndian.AppendUint32(b, m.Home)
	b = binary.BigEndian.AppendUint32(b, m.Total)
	b = binary.BigEndian.AppendUint32(b, m.Seed)
	b = append(b, m.Hash)
	var flags byte
	if m.Ready {
		flags |= flagReady
	}
	b = append(b, flags)
	if m.Resync.IsValid() {
		a := m.Resync.Addr()
		if a.Is4() || a.Is4In6() {
			a4 := a.Unmap().As4()
			b = append(b, 4)
			b = append(b, a4[:]...)
		} else {
			a16 := a.As16()
			b = append(b, 16)
			b = append(b, a16[:]...)
		}
		b = binary.BigEndian.AppendUint16(b, m.Resync.Port())
	} else {
		b = append(b, 0)
	}
	r := cutReason(m.Reason)
	b = append(b, byte(len(r)))
	b = append(b, r...)
	return b
}

// cutReason shortens s to ReasonMaxLen bytes of valid UTF-8.
func cutReason(s string) string {
	if len(s) <= ReasonMaxLen {
		return strings.ToValidUTF8(s, "?")
	}
	s = s[:ReasonMaxLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// DecodeMeta parses the wire form written by Encode.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty (a member that is not an xdpcluster node?)", errMeta)
	}
	if b[0] < MetaVersion {
		return m, fmt.Errorf("%w: version %d: want %d or later", errMeta, b[0], MetaVersion)
	}
	const fixed = 1 + 4 + 4 + 4 + 1 + 1 + 1
	if len(b) < fixed {
		return m, fmt.Errorf("%w: %d bytes: want at least %d", errMeta, len(b), fixed)
	}
	m.Home = binary.BigEndian.Uint32(b[1:])
	m.Total = binary.BigEndian.Uint32(b[5:])
	m.Seed = binary.BigEndian.Uint32(b[9:])
	m.Hash = b[13]
	m.Ready = b[14]&flagReady != 0
	alen := int(b[15])
	rest := b[fixed:]
	switch alen {
	case 0:
	case 4, 16:
		if len(rest) < alen+2 {
			return Meta{}, fmt.Errorf("%w: resync address truncated", errMeta)
		}
		a, _ := netip.AddrFromSlice(rest[:alen])
		m.Resync = netip.AddrPortFrom(a.Unmap(), binary.BigEndian.Uint16(rest[alen:]))
		rest = rest[alen+2:]
	default:
		return Meta{}, fmt.Errorf("%w: resync address length %d: want 0, 4 or 16", errMeta, alen)
	}
	if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
		return Meta{}, fmt.Errorf("%w: reason truncated", errMeta)
	}
	m.Reason = string(rest[1 : 1+int(rest[0])])
	return m, nil
}
