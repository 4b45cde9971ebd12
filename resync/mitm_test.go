package resync

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

// mitm sits on the client's connection and changes the server's stream
// frame by frame (frame 0 is the header); it can also flip a byte of the
// server's hello or of the client's request.
type mitm struct {
	net.Conn
	frame  int    // the frame acted on
	action string // flip, flip-length, drop, repeat, swap, cut, cut-inside, flip-hello, flip-request

	hello   bool // the server's hello has passed
	n       int  // frames read from the server
	held    []byte
	out     bytes.Buffer
	eof     bool
	written int
}

// next reads one whole frame from the server.
func (m *mitm) next() ([]byte, error) {
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(m.Conn, hdr); err != nil {
		return nil, err
	}
	f := make([]byte, 4+int(binary.BigEndian.Uint32(hdr)))
	copy(f, hdr)
	_, err := io.ReadFull(m.Conn, f[4:])
	return f, err
}

func (m *mitm) Read(p []byte) (int, error) {
	for m.out.Len() == 0 {
		if m.eof {
			return 0, io.EOF
		}
		if !m.hello {
			h := make([]byte, helloSize)
			if _, err := io.ReadFull(m.Conn, h); err != nil {
				return 0, err
			}
			if m.action == "flip-hello" {
				h[helloSize-1] ^= 1
			}
			m.out.Write(h)
			m.hello = true
			continue
		}
		f, err := m.next()
		if err != nil {
			return 0, err
		}
		k := m.n
		m.n++
		if k != m.frame {
			if m.held != nil && k == m.frame+1 {
				m.out.Write(f)
				m.out.Write(m.held)
				m.held = nil
				continue
			}
			m.out.Write(f)
			continue
		}
		switch m.action {
		case "flip":
			f[len(f)/2] ^= 0x80
			m.out.Write(f)
		case "flip-length":
			f[3]--
			m.out.Write(f)
		case "drop":
		case "repeat":
			m.out.Write(f)
			m.out.Write(f)
		case "swap":
			m.held = f
		case "cut":
			m.eof = true
		case "cut-inside":
			m.out.Write(f[:len(f)/2])
			m.eof = true
		default:
			m.out.Write(f)
		}
	}
	return m.out.Read(p)
}

func (m *mitm) Write(p []byte) (int, error) {
	if m.action == "flip-request" && m.written >= helloSize && m.written < helloSize+4+len(p) {
		q := append([]byte(nil), p...)
		q[len(q)-1] ^= 1
		p = q
	}
	m.written += len(p)
	return m.Conn.Write(p)
}

// TestTamper: a man in the middle who changes, drops, repeats, reorders
// or cuts the server's frames, or changes a hello or the request, makes
// the pull fail; what Merge got before is the table's beginning, intact
// (the checker), and a change before the end frame stops it short.
func TestTamper(t *testing.T) {
	const n = 5000 // frames: 0 header, 1-5 records, 6 end
	frames := 1 + (n+recordsPerFrame-1)/recordsPerFrame + 1
	for _, tc := range []struct {
		action string
		frame  int
		want   error
		msg    string
	}{
		{action: "flip", frame: 0, want: ErrAuth, msg: "wrong cluster secret?"},
		{action: "flip", frame: 2, want: ErrAuth, msg: "frame 2 does not authenticate"},
		{action: "flip", frame: frames - 1, want: ErrAuth},
		{action: "flip-length", frame: 3, want: ErrAuth},
		{action: "drop", frame: 2, want: ErrAuth, msg: "frame 2 does not authenticate"},
		{action: "repeat", frame: 2, want: ErrAuth, msg: "frame 3 does not authenticate"},
		{action: "swap", frame: 2, want: ErrAuth, msg: "frame 2 does not authenticate"},
		{action: "cut", frame: frames - 1, want: ErrProtocol, msg: "without an end frame (truncated)"},
		{action: "cut", frame: 0, want: ErrProtocol, msg: "without answering"},
		{action: "cut-inside", frame: 3, want: ErrProtocol, msg: "ends inside frame 3"},
		{action: "flip-hello", want: ErrAuth, msg: "wrong cluster secret?"},
		{action: "flip-request", want: ErrAuth},
	} {
		t.Run(tc.action+"/"+itoa(tc.frame), func(t *testing.T) {
			ln := newPipeListener()
			p := newPulls()
			serve(t, &Server{Secret: secretA, Params: testParams, Export: exporter(n), OnPull: p.on, Logger: (&logBuf{}).logger()}, ln)
			c := &checker{t: t}
			_, err := Pull(context.Background(), "peer", PullOptions{Secret: secretA, Params: testParams, MaxRecords: n, Merge: c.merge,
				Dial: func(ctx context.Context, addr string) (net.Conn, error) {
					conn, err := ln.Dial(ctx, addr)
					return &mitm{Conn: conn, frame: tc.frame, action: tc.action}, err
				}})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %v; want %v with %q", err, tc.want, tc.msg)
			}
			if c.count() >= n && tc.frame != frames-1 {
				t.Errorf("Merge got all %d records of a tampered stream", c.count())
			}
			_, serr := p.wait(t)
			if tc.action == "flip-request" && !errors.Is(serr, ErrAuth) {
				t.Errorf("server error %v; want ErrAuth", serr)
			}
		})
	}
}
