package membership

import (
	"net/netip"
	"strings"
	"testing"
)

func TestMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		m    Meta
		want Meta // zero: m
	}{
		{name: "zero", m: Meta{}},
		{name: "ready v4 resync", m: Meta{Home: 0xf0, Total: 12, Seed: 0xdeadbeef, Hash: 1, Ready: true, Resync: netip.MustParseAddrPort("192.0.2.11:7947")}},
		{name: "not ready v6 resync", m: Meta{Home: 1 << 31, Total: 32, Reason: "resyncing from node1", Resync: netip.MustParseAddrPort("[2001:db8::1]:7947")}},
		{name: "v4-mapped resync is stored as v4", m: Meta{Total: 2, Resync: netip.MustParseAddrPort("[::ffff:192.0.2.1]:1")},
			want: Meta{Total: 2, Resync: netip.MustParseAddrPort("192.0.2.1:1")}},
		{name: "long reason cut", m: Meta{Total: 3, Reason: strings.Repeat("é", 150)},
			want: Meta{Total: 3, Reason: strings.Repeat("é", ReasonMaxLen/2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.m.Encode()
			if len(b) > MetaMaxSize {
				t.Fatalf("encoded %d bytes, limit %d", len(b), MetaMaxSize)
			}
			got, err := DecodeMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want == (Meta{}) {
				want = tt.m
			}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
			// A later version may append fields: still decodes.
			b = append(b, 0xaa, 0xbb)
			b[0] = MetaVersion + 1
			if got, err := DecodeMeta(b); err != nil || got != want {
				t.Errorf("with a later version and trailing bytes: %+v, %v", got, err)
			}
		})
	}
}

func TestMetaDecodeErrors(t *testing.T) {
	good := Meta{Total: 12, Reason: "x", Resync: netip.MustParseAddrPort("192.0.2.1:9")}.Encode()
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"version 0", append([]byte{0}, good[1:]...), "version 0"},
		{"short", good[:10], "10 bytes"},
		{"bad address length", func() []byte { b := append([]byte(nil), good...); b[15] = 5; return b }(), "length 5"},
		{"truncated address", good[:18], "resync address truncated"},
		{"truncated reason", good[:len(good)-1], "reason truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeMeta(tt.b)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(Meta{Total: 12, Home: 0xf, Ready: true, Reason: "ok", Resync: netip.MustParseAddrPort("192.0.2.1:9")}.Encode())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same fields.
		m2, err := DecodeMeta(m.Encode())
		if err != nil || m2 != m {
			if m.Reason == cutReason(m.Reason) {
				t.Fatalf("%+v re-decodes as %+v, %v", m, m2, err)
			}
		}
	})
}
