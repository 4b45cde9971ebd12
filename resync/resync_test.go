package resync

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdpcluster/xdpcluster/conntrack"
)

func TestRoundTrip(t *testing.T) {
	for _, tr := range []transport{pipeTransport, tcpTransport} {
		for _, n := range []int{0, 1, 300_000} {
			t.Run(tr.name+"/"+itoa(n), func(t *testing.T) {
				ln, dial, addr := tr.listen(t)
				var logs logBuf
				p := newPulls()
				serve(t, &Server{Secret: secretA, Params: testParams, Export: exporter(n), Count: func() int { return n },
					Logger: logs.logger(), OnPull: p.on}, ln)
				c := &checker{t: t}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				st, err := Pull(ctx, addr, PullOptions{Secret: secretA, Params: testParams, MaxRecords: n + 1, Merge: c.merge, Dial: dial})
				if err != nil {
					t.Fatalf("Pull: %v", err)
				}
				if c.count() != n || st.Records != n {
					t.Errorf("merged %d records, Stats.Records %d; want %d", c.count(), st.Records, n)
				}
				// Exactly: the hellos, the request, the header, one frame's
				// overhead per full or partial frame of records, the end.
				frames := (n + recordsPerFrame - 1) / recordsPerFrame
				want := int64(2*helloSize + (4 + minSealed + requestSize) + (4 + minSealed + headerSize) + (4 + minSealed + endSize) + frames*(4+minSealed) + n*RecordSize)
				if st.Bytes != want {
					t.Errorf("Stats.Bytes %d; want %d", st.Bytes, want)
				}
				sst, serr := p.wait(t)
				if serr != nil {
					t.Errorf("server's OnPull error: %v", serr)
				}
				if sst.Records != n || sst.Bytes != st.Bytes {
					t.Errorf("server's Stats %+v; want %d records and the client's %d bytes", sst, n, st.Bytes)
				}
				if l := logs.String(); !strings.Contains(l, "pull served") || !strings.Contains(l, "records="+itoa(n)) {
					t.Errorf("server log lacks the pull: %s", l)
				}
			})
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func TestWrongSecret(t *testing.T) {
	for _, tc := range []struct {
		name           string
		server, client []byte
	}{
		{"one byte differs", secretA, secretB},
		{"other length", secretA, secret16},
		{"client longer", secret16, secretA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := newPipeListener()
			var logs logBuf
			p := newPulls()
			var exported atomic.Bool
			export := exporter(10)
			serve(t, &Server{Secret: tc.server, Params: testParams, Logger: logs.logger(), OnPull: p.on,
				Export: func(emit func([]byte) error) (int, error) { exported.Store(true); return export(emit) }}, ln)
			merged := 0
			_, err := Pull(context.Background(), "peer", PullOptions{Secret: tc.client, Params: testParams, MaxRecords: 100,
				Merge: func([]byte) error { merged++; return nil }, Dial: ln.Dial})
			if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "wrong cluster secret?") {
				t.Errorf("client error %v; want ErrAuth naming the secret", err)
			}
			_, serr := p.wait(t)
			if !errors.Is(serr, ErrAuth) {
				t.Errorf("server error %v; want ErrAuth", serr)
			}
			if l := logs.String(); !strings.Contains(l, "authentication failed: wrong cluster secret?") {
				t.Errorf("server log lacks the refusal: %s", l)
			}
			if merged != 0 || exported.Load() {
				t.Errorf("Merge called %d times, Export called %v; want neither", merged, exported.Load())
			}
		})
	}
}

func TestParamsMismatch(t *testing.T) {
	other := conntrack.SnapshotParams{TotalNodes: 4, Seed: 0xdeadbeef, Hash: 1}
	t.Run("server refuses", func(t *testing.T) {
		ln := newPipeListener()
		var logs logBuf
		p := newPulls()
		serve(t, &Server{Secret: secretA, Params: testParams, Export: exporter(10), Logger: logs.logger(), OnPull: p.on}, ln)
		merged := 0
		_, err := Pull(context.Background(), "peer", PullOptions{Secret: secretA, Params: other, MaxRecords: 100,
			Merge: func([]byte) error { merged++; return nil }, Dial: ln.Dial})
		if !errors.Is(err, ErrParams) {
			t.Fatalf("client error %v; want ErrParams", err)
		}
		for _, want := range []string{testParams.String(), other.String()} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("client error %q does not name %q", err, want)
			}
		}
		_, serr := p.wait(t)
		if !errors.Is(serr, ErrParams) || !strings.Contains(logs.String(), "total_nodes 4") {
			t.Errorf("server error %v, log %s; want ErrParams naming the client's", serr, logs.String())
		}
		if merged != 0 {
			t.Errorf("Merge called %d times", merged)
		}
	})
	t.Run("client refuses the header", func(t *testing.T) {
		merged := 0
		_, err := fakePull(t, context.Background(), PullOptions{Secret: secretA, Params: testParams, MaxRecords: 100,
			Merge: func([]byte) error { merged++; return nil }},
			func(ch *channel, _ []byte) error {
				if err := sendHeader(ch, other, 1); err != nil {
					return err
				}
				sendRecords(ch, 0, 1)
				sendEnd(ch, 1)
				return nil
			})
		if !errors.Is(err, ErrParams) {
			t.Fatalf("client error %v; want ErrParams", err)
		}
		for _, want := range []string{testParams.String(), other.String()} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("client error %q does not name %q", err, want)
			}
		}
		if merged != 0 {
			t.Errorf("Merge called %d times", merged)
		}
	})
}

func TestMaxRecords(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n, max   int
		count    bool // the server estimates its size
		wantErr  bool
		maxMerge int // records Merge may have seen
	}{
		{name: "equal to the limit", n: 5000, max: 5000, count: true},
		{name: "header over the limit", n: 5000, max: 4999, count: true, wantErr: true},
		{name: "stream over the limit", n: 5000, max: 2000, wantErr: true, maxMerge: 2000},
		{name: "stream over by one", n: 5000, max: 4999, wantErr: true, maxMerge: 4999},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := newPipeListener()
			p := newPulls()
			s := &Server{Secret: secretA, Params: testParams, Export: exporter(tc.n), OnPull: p.on, Logger: (&logBuf{}).logger()}
			if tc.count {
				s.Count = func() int { return tc.n }
			}
			serve(t, s, ln)
			c := &checker{t: t}
			_, err := Pull(context.Background(), "peer", PullOptions{Secret: secretA, Params: testParams, MaxRecords: tc.max, Merge: c.merge, Dial: ln.Dial})
			if !tc.wantErr {
				if err != nil || c.count() != tc.n {
					t.Fatalf("Pull: %v, %d records; want %d", err, c.count(), tc.n)
				}
				return
			}
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("client error %v; want ErrTooLarge", err)
			}
			if c.count() > tc.maxMerge {
				t.Errorf("Merge saw %d records, beyond %d", c.count(), tc.maxMerge)
			}
			if _, serr := p.wait(t); !errors.Is(serr, ErrTooLarge) {
				t.Errorf("server error %v; want ErrTooLarge", serr)
			}
		})
	}
	// A server that under-announces and streams past the limit: the
	// client stops it itself.
	t.Run("lying server", func(t *testing.T) {
		c := &checker{t: t}
		_, err := fakePull(t, context.Background(), PullOptions{Secret: secretA, Params: testParams, MaxRecords: 150, Merge: c.merge},
			func(ch *channel, _ []byte) error {
				sendHeader(ch, testParams, 0)
				for i := 0; i < 10; i++ {
					if err := sendRecords(ch, i*100, i*100+100); err != nil {
						return nil // the client hung up
					}
				}
				sendEnd(ch, 1000)
				return nil
			})
		if !errors.Is(err, ErrTooLarge) || c.count() != 100 {
			t.Errorf("error %v after %d records; want ErrTooLarge after 100", err, c.count())
		}
	})
}

func TestMergeError(t *testing.T) {
	ln := newPipeListener()
	p := newPulls()
	serve(t, &Server{Secret: secretA, Params: testParams, Export: exporter(10_000), OnPull: p.on, Logger: (&logBuf{}).logger()}, ln)
	boom := errors.New("table full")
	calls := 0
	_, err := Pull(context.Background(), "peer", PullOptions{Secret: secretA, Params: testParams, MaxRecords: 1 << 20, Dial: ln.Dial,
		Merge: func([]byte) error {
			calls++
			if calls == 2 {
				return boom
			}
			return nil
		}})
	if !errors.Is(err, boom) {
		t.Fatalf("error %v; want Merge's", err)
	}
	if calls != 2 {
		t.Errorf("Merge called %d times after its error; want the pull to stop", calls)
	}
	if _, serr := p.wait(t); serr == nil {
		t.Error("the server reports success for an aborted pull")
	}
}

func TestTimeout(t *testing.T) {
	t.Run("server stalls", func(t *testing.T) {
		for _, stage := range []string{"hello", "header", "records"} {
			t.Run(stage, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				a, b := net.Pipe()
				defer b.Close()
				go func() {
					if stage == "hello" {
						io.Copy(io.Discard, b)
						return
					}
					ch, err := serverHandshake(b, secretA)
					if err != nil {
						return
					}
					ch.readFrame()
					if stage == "records" {
						sendHeader(ch, testParams, 10)
						sendRecords(ch, 0, 5)
					}
					io.Copy(io.Discard, b)
				}()
				start := time.Now()
				_, err := Pull(ctx, "peer", PullOptions{Secret: secretA, Params: testParams, MaxRecords: 100, Merge: func([]byte) error { return nil },
					Dial: func(context.Context, string) (net.Conn, error) { return a, nil }})
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("error %v; want the context's deadline", err)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("Pull returned after %v; the deadline was 300ms", d)
				}
			})
		}
	})
	t.Run("client silent", func(t *testing.T) {
		ln := newPipeListener()
		p := newPulls()
		serve(t, &Server{Secret: secretA, Params: testParams, Export: exporter(10), OnPull: p.on, Timeout: 200 * time.Millisecond, Logger: (&logBuf{}).logger()}, ln)
		c, err := ln.Dial(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, serr := p.wait(t); !errors.Is(serr, os.ErrDeadlineExceeded) {
			t.Errorf("server error %v; want a timeout", serr)
		}
	})
	t.Run("client stops reading", func(t *testing.T) {
		ln := newPipeListener()
		p := newPulls()
		serve(t, &Server{Secret: secretA, Params: testParams, Export: exporter(100_000), OnPull: p.on, Timeout: 300 * time.Millisecond, Logger: (&logBuf{}).logger()}, ln)
		release := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			_, err := Pull(context.Background(), "peer", PullOptions{Secret: secretA, Params: testParams, MaxRecords: 1 << 20, Dial: ln.Dial,
				Merge: func([]byte) error { <-release; return nil }})
			done <- err
		}()
		_, serr := p.wait(t)
		close(release)
		if !errors.Is(serr, os.ErrDeadlineExceeded) {
			t.Errorf("server error %v; want a timeout", serr)
		}
		if err := <-done; err == nil {
			t.Error("the client succeeded although the server gave up")
		}
	})
}

func TestBusy(t *testing.T) {
	ln := newPipeListener()
	var logs logBuf
	p := newPulls()
	started := make(chan struct{})
	release := make(chan struct{})
	export := exporter(100)
	serve(t, &Server{Secret: secretA, Params: testParams, MaxConcurrent: 1, Logger: logs.logger(), OnPull: p.on,
		Export: func(emit func([]byte) error) (int, error) {
			select {
			case started <- struct{}{}:
				<-release
			default:
			}
			return export(emit)
		}}, ln)
	o := PullOptions{Secret: secretA, Params: testParams, MaxRecords: 1000, Dial: ln.Dial}
	first := make(chan error, 1)
	c1 := &checker{t: t}
	go func() {
		o := o
		o.Merge = c1.merge
		_, err := Pull(context.Background(), "peer", o)
		first <- err
	}()
	<-started
	o.Merge = func([]byte) error { t.Error("the refused pull merged records"); return nil }
	_, err := Pull(context.Background(), "peer", o)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "busy") {
		t.Errorf("second pull: %v; want ErrBusy", err)
	}
	if _, serr := p.wait(t); !errors.Is(serr, ErrBusy) {
		t.Errorf("server error %v; want ErrBusy", serr)
	}
	close(release)
	if err := <-first; err != nil || c1.count() != 100 {
		t.Errorf("first pull: %v, %d records", err, c1.count())
	}
	if !strings.Contains(logs.String(), "busy") {
		t.Errorf("server log lacks the refusal: %s", logs.String())
	}
	// The slot is free again once the server is done with the first pull
	// (its client may finish reading before the server's handler returns).
	if _, serr := p.wait(t); serr != nil {
		t.Errorf("first pull, server side: %v", serr)
	}
	c3 := &checker{t: t}
	o.Merge = c3.merge
	if _, err := Pull(context.Background(), "peer", o); err != nil || c3.count() != 100 {
		t.Errorf("third pull: %v, %d records", err, c3.count())
	}
}

func TestOptions(t *testing.T) {
	merge := func([]byte) error { return nil }
	for _, tc := range []struct {
		name string
		o    PullOptions
		want string
	}{
		{"short secret", PullOptions{Secret: []byte("short"), MaxRecords: 1, Merge: merge}, "cluster secret is 5 bytes; it must be 16, 24 or 32"},
		{"no secret", PullOptions{MaxRecords: 1, Merge: merge}, "cluster secret is 0 bytes"},
		{"no limit", PullOptions{Secret: secretA, Merge: merge}, "MaxRecords is 0"},
		{"no merge", PullOptions{Secret: secretA, MaxRecords: 1}, "no Merge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Pull(context.Background(), "peer", tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v; want %q", err, tc.want)
			}
		})
	}
	t.Run("server secret", func(t *testing.T) {
		s := &Server{Secret: make([]byte, 20), Export: exporter(0)}
		err := s.Serve(newPipeListener())
		if err == nil || !strings.Contains(err.Error(), "cluster secret is 20 bytes") {
			t.Errorf("Serve: %v; want the secret's length refused", err)
		}
	})
}

func TestVersion(t *testing.T) {
	t.Run("server refuses", func(t *testing.T) {
		ln := newPipeListener()
		p := newPulls()
		serve(t, &Server{Secret: secretA, Params: testParams, Export: exporter(1), OnPull: p.on, Logger: (&logBuf{}).logger()}, ln)
		c, err := ln.Dial(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		h, _ := newHello()
		h[len(magic)] = 2
		c.Write(h)
		reply := make([]byte, helloSize)
		if _, err := io.ReadFull(c, reply); err != nil || reply[len(magic)] != Version {
			t.Errorf("server's hello %x, %v; want version %d", reply, err, Version)
		}
		if _, serr := p.wait(t); !errors.Is(serr, ErrProtocol) || !strings.Contains(serr.Error(), "version 2") {
			t.Errorf("server error %v; want the version named", serr)
		}
	})
	t.Run("client refuses", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			hello func([]byte)
			want  string
		}{
			{"version", func(h []byte) { h[len(magic)] = 9 }, "server speaks resync version 9"},
			{"magic", func(h []byte) { h[0] = 'Y' }, "not a resync peer"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a, b := net.Pipe()
				defer b.Close()
				go func() {
					io.ReadFull(b, make([]byte, helloSize))
					h, _ := newHello()
					tc.hello(h)
					b.Write(h)
				}()
				_, err := Pull(context.Background(), "peer", PullOptions{Secret: secretA, Params: testParams, MaxRecords: 1, Merge: func([]byte) error { return nil },
					Dial: func(context.Context, string) (net.Conn, error) { return a, nil }})
				if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v; want ErrProtocol with %q", err, tc.want)
				}
			})
		}
	})
}

// TestEndCount: the client checks the end frame's total.
func TestEndCount(t *testing.T) {
	c := &checker{t: t}
	_, err := fakePull(t, context.Background(), PullOptions{Secret: secretA, Params: testParams, MaxRecords: 100, Merge: c.merge},
		func(ch *channel, _ []byte) error {
			sendHeader(ch, testParams, 10)
			sendRecords(ch, 0, 10)
			return sendEnd(ch, 11)
		})
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "sent 10 records but its end frame counts 11") {
		t.Errorf("error %v; want the count mismatch", err)
	}
}

// TestExportError: the server reports its export's failure to the client.
func TestExportError(t *testing.T) {
	ln := newPipeListener()
	p := newPulls()
	serve(t, &Server{Secret: secretA, Params: testParams, OnPull: p.on, Logger: (&logBuf{}).logger(),
		Export: func(emit func([]byte) error) (int, error) {
			emit(make([]byte, RecordSize))
			return 1, errors.New("table locked")
		}}, ln)
	_, err := Pull(context.Background(), "peer", PullOptions{Secret: secretA, Params: testParams, MaxRecords: 100, Merge: func([]byte) error { return nil }, Dial: ln.Dial})
	if !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "table locked") {
		t.Errorf("error %v; want ErrRemote with the export's error", err)
	}
	if _, serr := p.wait(t); !errors.Is(serr, ErrRemote) {
		t.Errorf("server error %v", serr)
	}
}

// TestProgress: Progress reports the records so far, at most once per
// interval.
func TestProgress(t *testing.T) {
	defer func(d time.Duration) { progressEvery = d }(progressEvery)
	progressEvery = 40 * time.Millisecond
	const n = 20 * recordsPerFrame
	ln := newPipeListener()
	serve(t, &Server{Secret: secretA, Params: testParams, Export: exporter(n), Logger: (&logBuf{}).logger()}, ln)
	var calls []Stats
	start := time.Now()
	st, err := Pull(context.Background(), "peer", PullOptions{Secret: secretA, Params: testParams, MaxRecords: n, Dial: ln.Dial,
		Merge:    func([]byte) error { time.Sleep(10 * time.Millisecond); return nil },
		Progress: func(s Stats) { calls = append(calls, s) }})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) == 0 || len(calls) > int(elapsed/progressEvery)+1 {
		t.Fatalf("%d Progress calls in %v; want 1 to one per %v", len(calls), elapsed, progressEvery)
	}
	for i, c := range calls {
		if c.Peer != "peer" || c.Records <= 0 || c.Records > st.Records || c.Bytes <= int64(c.Records*RecordSize) || (i > 0 && c.Records <= calls[i-1].Records) {
			t.Errorf("Progress call %d: %+v", i, c)
		}
	}
}

// TestCloseEndsPulls: Close ends the pulls in progress and returns; Serve
// returns nil.
func TestCloseEndsPulls(t *testing.T) {
	ln := newPipeListener()
	p := newPulls()
	s := &Server{Secret: secretA, Params: testParams, Export: exporter(100_000), OnPull: p.on, Logger: (&logBuf{}).logger()}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	inMerge := make(chan struct{}, 1)
	release := make(chan struct{})
	pulled := make(chan error, 1)
	go func() {
		_, err := Pull(context.Background(), "peer", PullOptions{Secret: secretA, Params: testParams, MaxRecords: 1 << 20, Dial: ln.Dial,
			Merge: func([]byte) error {
				select {
				case inMerge <- struct{}{}:
					<-release
				default:
				}
				return nil
			}})
		pulled <- err
	}()
	<-inMerge
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return while a pull was in progress")
	}
	close(release)
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := <-pulled; err == nil {
		t.Error("the pull succeeded although the server closed")
	}
	if _, serr := p.wait(t); serr == nil {
		t.Error("the server reports the interrupted pull as served")
	}
}
