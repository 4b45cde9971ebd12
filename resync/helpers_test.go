package resync

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

var (
	testParams = conntrack.SnapshotParams{TotalNodes: 3, Seed: 0xdeadbeef}
	secretA    = []byte("0123456789abcdef0123456789abcdef")
	secretB    = []byte("0123456789abcdef0123456789abcdeF")
	secret16   = []byte("0123456789abcdef")
)

// record writes record i of a test table into r (RecordSize bytes): its
// index, then bytes that depend on it, so a lost, doubled, reordered or
// changed record shows.
func record(i int, r []byte) {
	binary.LittleEndian.PutUint64(r, uint64(i))
	for j := 8; j < RecordSize; j++ {
		r[j] = byte(i*31 + j*7 + i>>8)
	}
}

// exporter streams n test records in chunks of varying sizes (1 to 2500
// records, so that frames are both coalesced and split), reusing its
// buffer as the table's Export may.
func exporter(n int) func(emit func([]byte) error) (int, error) {
	return func(emit func([]byte) error) (int, error) {
		buf := make([]byte, 2500*RecordSize)
		i, step := 0, 0
		for i < n {
			k := min(1+(step*397)%2500, n-i)
			step++
			for j := 0; j < k; j++ {
				record(i+j, buf[j*RecordSize:])
			}
			if err := emit(buf[:k*RecordSize]); err != nil {
				return i, err
			}
			// Reuse: scribble over what was emitted.
			for j := range buf[:k*RecordSize] {
				buf[j] = 0xAA
			}
			i += k
		}
		return n, nil
	}
}

// checker is a Merge that checks every record arrives once, in order.
type checker struct {
	t      testing.TB
	mu     sync.Mutex
	next   int
	calls  int
	failed bool
}

func (c *checker) merge(recs []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if len(recs)%RecordSize != 0 || len(recs) == 0 {
		c.t.Errorf("Merge got %d bytes, not a positive multiple of %d", len(recs), RecordSize)
		c.failed = true
	}
	want := make([]byte, RecordSize)
	for off := 0; off+RecordSize <= len(recs); off += RecordSize {
		record(c.next, want)
		if !bytes.Equal(recs[off:off+RecordSize], want) {
			if !c.failed {
				c.t.Errorf("record %d differs: got %x, want %x", c.next, recs[off:off+RecordSize], want)
			}
			c.failed = true
		}
		c.next++
	}
	// Reuse: the caller may overwrite the buffer after return.
	return nil
}

func (c *checker) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next
}

// logBuf collects a server's log lines.
type logBuf struct{ nstest.LogBuffer }

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// pipeListener is a net.Listener over net.Pipe: Dial hands one end to
// Accept.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (p *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

func (p *pipeListener) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

func (p *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (p *pipeListener) Dial(ctx context.Context, _ string) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case p.conns <- b:
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.done:
		return nil, net.ErrClosed
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// pulls records the OnPull calls of a server.
type pulls struct {
	mu    sync.Mutex
	stats []Stats
	errs  []error
	seen  chan struct{}
}

func newPulls() *pulls { return &pulls{seen: make(chan struct{}, 100)} }

func (p *pulls) on(st Stats, err error) {
	p.mu.Lock()
	p.stats = append(p.stats, st)
	p.errs = append(p.errs, err)
	p.mu.Unlock()
	p.seen <- struct{}{}
}

// wait returns the next OnPull call's stats and error.
func (p *pulls) wait(t testing.TB) (Stats, error) {
	t.Helper()
	select {
	case <-p.seen:
	case <-time.After(10 * time.Second):
		t.Fatal("the server reported no pull within 10 s")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats[len(p.stats)-1], p.errs[len(p.errs)-1]
}

// serve runs s on ln until the test ends.
func serve(t testing.TB, s *Server, ln net.Listener) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// transport is a way to connect a client and a server.
type transport struct {
	name string
	// listen returns a listener and the Dial and address that reach it.
	listen func(t testing.TB) (net.Listener, func(context.Context, string) (net.Conn, error), string)
}

var pipeTransport = transport{name: "pipe", listen: func(t testing.TB) (net.Listener, func(context.Context, string) (net.Conn, error), string) {
	ln := newPipeListener()
	return ln, ln.Dial, "pipe"
}}

// tcpTransport listens and dials on the loopback of a namespace the test
// creates (never the host's).
var tcpTransport = transport{name: "tcp", listen: func(t testing.TB) (net.Listener, func(context.Context, string) (net.Conn, error), string) {
	ns := nstest.New(t, "resync")
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", ns.Name, err)
	}
	dial := func(ctx context.Context, addr string) (c net.Conn, err error) {
		err = ns.Do(func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
	return ln, dial, ln.Addr().String()
}}

// fakePull runs Pull against a hand-made server over net.Pipe: it does
// the server's handshake, reads the request and hands the channel to
// serve, which answers what a test needs (a server that lies, breaks the
// protocol or stalls).
func fakePull(t testing.TB, ctx context.Context, o PullOptions, serve func(ch *channel, req []byte) error) (Stats, error) {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		defer b.Close()
		done <- func() error {
			ch, err := serverHandshake(b, o.Secret)
			if err != nil {
				return err
			}
			typ, req, err := ch.readFrame()
			if err != nil {
				return err
			}
			if typ != typeRequest {
				return fmt.Errorf("request of type %d", typ)
			}
			return serve(ch, req)
		}()
	}()
	o.Dial = func(context.Context, string) (net.Conn, error) { return a, nil }
	st, err := Pull(ctx, "fake", o)
	a.Close()
	if serr := <-done; serr != nil && err == nil {
		t.Errorf("fake server: %v", serr)
	}
	return st, err
}

// serverHandshake is the server's side of the hellos, for fake servers.
func serverHandshake(c io.ReadWriter, secret []byte) (*channel, error) {
	ch := make([]byte, helloSize)
	if _, err := io.ReadFull(c, ch); err != nil {
		return nil, err
	}
	sh, err := newHello()
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(sh); err != nil {
		return nil, err
	}
	return newChannel(c, secret, ch, sh, false)
}

// sendHeader sends a header frame.
func sendHeader(ch *channel, p conntrack.SnapshotParams, expected uint64) error {
	b := ch.body()
	putParams(b, p)
	binary.BigEndian.PutUint64(b[paramsSize:], expected)
	return ch.writeBuilt(typeHeader, headerSize)
}

// sendRecords sends records from..to-1 in one data frame.
func sendRecords(ch *channel, from, to int) error {
	b := ch.body()
	for i := from; i < to; i++ {
		record(i, b[(i-from)*RecordSize:])
	}
	return ch.writeBuilt(typeData, (to-from)*RecordSize)
}

func sendEnd(ch *channel, total uint64) error {
	binary.BigEndian.PutUint64(ch.body(), total)
	return ch.writeBuilt(typeEnd, endSize)
}
