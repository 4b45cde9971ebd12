package resync

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/xdpcluster/xdpcluster/conntrack"
)

// The fuzz input is the server's side of a session after the hellos, as
// a list of pieces: op u8, length u16, data. An even op seals data (its
// first byte the type, the rest the body) as the session's next frame, so
// the fuzzer reaches the messages behind the authentication; an odd op
// puts data on the wire as it is (lengths, garbage, a cut).

// fuzzHellos are fixed hellos: the fuzzer's stream is sealed with the
// keys they give.
func fuzzHellos() (client, server []byte) {
	client, server = make([]byte, helloSize), make([]byte, helloSize)
	copy(client, magic)
	copy(server, magic)
	client[len(magic)], server[len(magic)] = Version, Version
	server[helloSize-1] = 1
	return client, server
}

// fuzzWire builds the server's bytes from the pieces.
func fuzzWire(in []byte) []byte {
	ch, sh := fuzzHellos()
	var wire bytes.Buffer
	srv, err := newChannel(&wire, secretA, ch, sh, false)
	if err != nil {
		panic(err)
	}
	for len(in) >= 3 {
		op, n := in[0], int(binary.BigEndian.Uint16(in[1:]))
		in = in[3:]
		n = min(n, len(in))
		data := in[:n]
		in = in[n:]
		if op%2 == 1 {
			wire.Write(data)
			continue
		}
		var typ byte
		if len(data) > 0 {
			typ, data = data[0], data[1:]
		}
		srv.writeFrame(typ, data)
	}
	return wire.Bytes()
}

// piece encodes one piece of a fuzz input.
func piece(op byte, data ...byte) []byte {
	return append([]byte{op, byte(len(data) >> 8), byte(len(data))}, data...)
}

func frame(typ byte, body ...byte) []byte { return piece(0, append([]byte{typ}, body...)...) }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func headerBody(p conntrack.SnapshotParams, expected uint64) []byte {
	b := make([]byte, paramsSize)
	putParams(b, p)
	return append(b, u64(expected)...)
}

// fuzzSeeds are the corpus's starting points (also committed under
// testdata/fuzz/FuzzFrames).
func fuzzSeeds() [][]byte {
	recs := make([]byte, 3*RecordSize)
	for i := 0; i < 3; i++ {
		record(i, recs[i*RecordSize:])
	}
	good := bytes.Join([][]byte{frame(typeHeader, headerBody(testParams, 3)...), frame(typeData, recs...), frame(typeEnd, u64(3)...)}, nil)
	return [][]byte{
		good,
		frame(typeError, append([]byte{codeBusy}, "busy"...)...),
		bytes.Join([][]byte{frame(typeHeader, headerBody(testParams, 0)...), frame(typeData, recs[:RecordSize+1]...)}, nil),
		bytes.Join([][]byte{frame(typeHeader, headerBody(conntrack.SnapshotParams{TotalNodes: 9}, 0)...)}, nil),
		bytes.Join([][]byte{frame(typeHeader, headerBody(testParams, 0)...), frame(typeEnd, u64(5)...)}, nil),
		piece(1, 0xff, 0xff, 0xff, 0xff),
		piece(1, 0, 0, 0, 5, 1, 2, 3, 4, 5),
		good[:len(good)-10],
	}
}

// FuzzFrames feeds the client's frame reader (and the messages behind
// it) hostile streams: it must return, never panic, merge only whole
// records within the limit, and succeed only on a consistent stream.
func FuzzFrames(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	const max = 1000
	f.Fuzz(func(t *testing.T, in []byte) {
		ch, sh := fuzzHellos()
		cli, err := newChannel(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(fuzzWire(in)), io.Discard}, secretA, ch, sh, true)
		if err != nil {
			t.Fatal(err)
		}
		merged := 0
		o := PullOptions{Secret: secretA, Params: testParams, MaxRecords: max, Merge: func(recs []byte) error {
			if len(recs) == 0 || len(recs)%RecordSize != 0 {
				t.Fatalf("Merge got %d bytes", len(recs))
			}
			merged += len(recs) / RecordSize
			return nil
		}}
		got, err := receive(cli, o, func(int) {})
		if merged > max || got != merged {
			t.Fatalf("merged %d records, receive says %d, limit %d", merged, got, max)
		}
		if err != nil {
			for _, s := range []error{ErrAuth, ErrParams, ErrTooLarge, ErrProtocol, ErrBusy, ErrRemote} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error %v wraps no sentinel", err)
		}
	})
}

// TestFuzzHarness: the harness reaches the messages behind the
// authentication: the valid seed succeeds, the others fail as they should.
func TestFuzzHarness(t *testing.T) {
	want := []error{nil, ErrBusy, ErrProtocol, ErrParams, ErrProtocol, ErrProtocol, ErrProtocol, ErrProtocol}
	for i, s := range fuzzSeeds() {
		ch, sh := fuzzHellos()
		cli, _ := newChannel(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(fuzzWire(s)), io.Discard}, secretA, ch, sh, true)
		c := &checker{t: t}
		got, err := receive(cli, PullOptions{Params: testParams, MaxRecords: 1000, Merge: c.merge}, func(int) {})
		if !errors.Is(err, want[i]) || (err == nil && got != 3) {
			t.Errorf("seed %d: %d records, %v; want %v", i, got, err, want[i])
		}
	}
}
