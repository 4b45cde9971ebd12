package resync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/xdpcluster/xdpcluster/conntrack"
)

// Defaults of a Server's zero fields.
const (
	DefaultTimeout       = 60 * time.Second
	DefaultMaxConcurrent = 2
	handshakeTimeout     = 2 * time.Second
	// extraPending is how many connections, beyond MaxConcurrent, may be
	// in their handshake (to be refused busy, or to wait for a slot);
	// more are closed at once.
	extraPending = 16
)

// Stats describe one pull, on either side.
type Stats struct {
	Peer     string        // the other side's address
	Records  int           // records streamed (server) or merged (client)
	Bytes    int64         // bytes on the wire, both directions
	Duration time.Duration // from the connection to the end of the pull
}

// Server serves the connection table to peers that pull it.
type Server struct {
	// Secret is the cluster secret: 16, 24 or 32 bytes.
	Secret []byte
	// Params are this node's cluster parameters; a client with others is
	// refused.
	Params conntrack.SnapshotParams
	// Export streams the table: it calls emit with records (a multiple of
	// RecordSize bytes, which it may reuse once emit returns) and returns
	// how many it emitted. It must stop and return emit's error.
	Export func(emit func(recs []byte) error) (int, error)
	// Count, optional, estimates how many records Export will stream (the
	// table's size now); it is sent in the header so that a client can
	// refuse a table beyond its limit before it streams. Nil sends 0
	// (unknown).
	Count func() int
	// Logger, optional (default slog.Default()), gets one line per pull.
	Logger *slog.Logger
	// Timeout bounds a whole pull (default 60 s); the handshake has 5 s,
	// or Timeout if shorter.
	Timeout time.Duration
	// MaxConcurrent pulls are served at once (default 2); more are
	// refused with a "busy" error frame.
	MaxConcurrent int
	// OnPull, optional, is called after each pull (served or refused),
	// for metrics.
	OnPull func(Stats, error)

	mu     sync.Mutex
	ln     net.Listener
	closed bool
	conns  map[net.Conn]connState
	wg     sync.WaitGroup
	slots  chan struct{} // one per pull being served
	// refused counts connections refused since the last warning
	// (refusedWarn).
	refused        int
	lastRefusedLog time.Time
	pending        chan struct{} // one per connection being handled
}

func (s *Server) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Serve accepts pulls on ln until Close, then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	if err := checkSecret(s.Secret); err != nil {
		ln.Close()
		return fmt.Errorf("resync server: %w", err)
	}
	if s.Export == nil {
		ln.Close()
		return errors.New("resync server: no Export function")
	}
	maxc := s.MaxConcurrent
	if maxc <= 0 {
		maxc = DefaultMaxConcurrent
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	if s.ln != nil {
		s.mu.Unlock()
		ln.Close()
		return errors.New("resync server: Serve called twice")
	}
	s.ln = ln
	s.conns = map[net.Conn]connState{}
	s.slots = make(chan struct{}, maxc)
	s.pending = make(chan struct{}, maxc+extraPending)
	s.mu.Unlock()

	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("resync server: accept on %s: %w", ln.Addr(), err)
		}
		if !s.admit() {
			s.refusedWarn(c.RemoteAddr().String())
			c.Close()
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			<-s.pending
			continue
		}
		s.conns[c] = connState{since: time.Now()}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			<-s.pending
		}()
	}
}

// connState is a connection's place in the queue: when it came, and
// whether its request authenticated.
type connState struct {
	since  time.Time
	authed bool
}

// admit takes a pending slot for a new connection. When every slot is
// taken, it closes the oldest connection that has not authenticated yet
// (so idle or slow unauthenticated connections cannot lock peers out:
// a real pull authenticates within a round trip) and waits briefly for
// its slot; false when every slot is held by authenticated pulls.
func (s *Server) admit() bool {
	select {
	case s.pending <- struct{}{}:
		return true
	default:
	}
	s.mu.Lock()
	var oldest net.Conn
	var when time.Time
	for c, st := range s.conns {
		if !st.authed && (oldest == nil || st.since.Before(when)) {
			oldest, when = c, st.since
		}
	}
	s.mu.Unlock()
	if oldest == nil {
		return false
	}
	oldest.Close()
	select {
	case s.pending <- struct{}{}:
		return true
	case <-time.After(time.Second):
		return false
	}
}

// authenticated marks c's request as authenticated: it is no longer
// evicted for newcomers.
func (s *Server) authenticated(c net.Conn) {
	s.mu.Lock()
	if st, ok := s.conns[c]; ok {
		st.authed = true
		s.conns[c] = st
	}
	s.mu.Unlock()
}

// refusedWarn logs a refused connection, at most once a second (with how
// many were refused meanwhile): a flood must not flood the log too.
func (s *Server) refusedWarn(peer string) {
	s.mu.Lock()
	s.refused++
	now := time.Now()
	if now.Sub(s.lastRefusedLog) < time.Second {
		s.mu.Unlock()
		return
	}
	n := s.refused
	s.refused, s.lastRefusedLog = 0, now
	s.mu.Unlock()
	s.logger().Warn("resync: connections refused: every slot is held by pulls in progress", "peer", peer, "refused", n)
}

// Close stops Serve, ends the pulls in progress and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var err error
	if s.ln != nil {
		if e := s.ln.Close(); e != nil && !errors.Is(e, net.ErrClosed) {
			err = e
		}
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// handle serves one connection and reports it.
func (s *Server) handle(c net.Conn) {
	start := time.Now()
	st := Stats{Peer: c.RemoteAddr().String()}
	err := s.serve(c, &st)
	c.Close()
	st.Duration = time.Since(start)
	log := s.logger()
	switch {
	case err == nil:
		log.Info("resync: pull served", "peer", st.Peer, "records", st.Records, "bytes", st.Bytes, "duration", st.Duration)
	case errors.Is(err, ErrAuth), errors.Is(err, ErrParams), errors.Is(err, ErrBusy), errors.Is(err, ErrTooLarge):
		log.Warn("resync: pull refused", "peer", st.Peer, "reason", err.Error(), "duration", st.Duration)
	default:
		log.Warn("resync: pull failed", "peer", st.Peer, "reason", err.Error(), "records", st.Records, "bytes", st.Bytes, "duration", st.Duration)
	}
	if s.OnPull != nil {
		s.OnPull(st, err)
	}
}

// errStop stops Export when the pull is over (the client's limit).
var errStop = errors.New("stop")

func (s *Server) serve(c net.Conn, st *Stats) (err error) {
	start := time.Now()
	hs := min(handshakeTimeout, s.timeout())
	c.SetDeadline(start.Add(hs))

	// Hellos.
	clientHello := make([]byte, helloSize)
	n, err := io.ReadFull(c, clientHello)
	st.Bytes += int64(n)
	if err != nil {
		return fmt.Errorf("read the client's hello: %w", err)
	}
	version, _, err := parseHello(clientHello)
	if err != nil {
		return err
	}
	serverHello, err := newHello()
	if err != nil {
		return err
	}
	n, err = c.Write(serverHello)
	st.Bytes += int64(n)
	if err != nil {
		return fmt.Errorf("send the hello: %w", err)
	}
	if version != Version {
		return fmt.Errorf("%w: the client speaks resync version %d, this node %d", ErrProtocol, version, Version)
	}
	ch, err := newChannel(c, s.Secret, clientHello, serverHello, false)
	if err != nil {
		return err
	}
	defer func() { st.Bytes += ch.bytes }()

	// Request.
	typ, body, err := ch.readFrame()
	if err == nil {
		s.authenticated(c)
	}
	if errors.Is(err, ErrAuth) {
		// Sealed with our key: the client cannot open it either, and
		// fails on it as it would on a header.
		ch.writeError(codeAuth, "authentication failed")
		return fmt.Errorf("%w: wrong cluster secret? the client's request does not authenticate under this node's", ErrAuth)
	}
	if err != nil {
		return fmt.Errorf("read the request: %w", err)
	}
	if typ != typeRequest || len(body) != requestSize {
		ch.writeError(codeBadRequest, "malformed request")
		return fmt.Errorf("%w: malformed request (type %d, %d bytes)", ErrProtocol, typ, len(body))
	}
	if body[0] != Version {
		msg := fmt.Sprintf("request for resync version %d; this node speaks %d", body[0], Version)
		ch.writeError(codeVersion, msg)
		return fmt.Errorf("%w: %s", ErrProtocol, msg)
	}
	params := getParams(body[1:])
	maxRecords := binary.BigEndian.Uint64(body[1+paramsSize:])
	if params != s.Params {
		msg := fmt.Sprintf("this node (the server) runs with %s, the client with %s; every record's bucket depends on them, so the table is not transferred", s.Params, params)
		ch.writeError(codeParams, msg)
		return fmt.Errorf("%w: %s", ErrParams, msg)
	}

	// A slot.
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		msg := fmt.Sprintf("busy: %d pulls in progress (the server's maximum)", cap(s.slots))
		ch.writeError(codeBusy, msg)
		return fmt.Errorf("%w: %s", ErrBusy, msg)
	}
	c.SetDeadline(start.Add(s.timeout()))

	// Header.
	var expected uint64
	if s.Count != nil {
		if n := s.Count(); n > 0 {
			expected = uint64(n)
		}
	}
	if expected > maxRecords {
		msg := fmt.Sprintf("the table holds about %d records, more than the client's limit of %d", expected, maxRecords)
		ch.writeError(codeTooLarge, msg)
		return fmt.Errorf("%w: %s", ErrTooLarge, msg)
	}
	b := ch.body()
	putParams(b, s.Params)
	binary.BigEndian.PutUint64(b[paramsSize:], expected)
	if err := ch.writeBuilt(typeHeader, headerSize); err != nil {
		return fmt.Errorf("send the header: %w", err)
	}

	// Records, coalesced into full frames.
	var sent uint64 // records in frames sent and in the buffer
	fill := 0       // bytes in the buffer
	var failure error
	flush := func() error {
		if fill == 0 {
			return nil
		}
		if err := ch.writeBuilt(typeData, fill); err != nil {
			return fmt.Errorf("send records: %w", err)
		}
		fill = 0
		return nil
	}
	emit := func(recs []byte) error {
		if len(recs)%RecordSize != 0 {
			return fmt.Errorf("export emitted %d bytes, not a multiple of the record size %d", len(recs), RecordSize)
		}
		if sent+uint64(len(recs)/RecordSize) > maxRecords {
			failure = fmt.Errorf("%w: the table holds more than the client's limit of %d records", ErrTooLarge, maxRecords)
			return errStop
		}
		sent += uint64(len(recs) / RecordSize)
		for len(recs) > 0 {
			k := copy(b[fill:recordsPerFrame*RecordSize], recs)
			fill += k
			recs = recs[k:]
			if fill == recordsPerFrame*RecordSize {
				if err := flush(); err != nil {
					failure = err
					return errStop
				}
			}
		}
		st.Records = int(sent)
		return nil
	}
	exported, err := s.Export(emit)
	if failure != nil {
		if errors.Is(failure, ErrTooLarge) {
			ch.writeError(codeTooLarge, failure.Error())
		}
		return failure
	}
	if err != nil {
		msg := fmt.Sprintf("export failed: %v", err)
		ch.writeError(codeExport, msg)
		return fmt.Errorf("%w: %s", ErrRemote, msg)
	}
	if exported != int(sent) {
		msg := fmt.Sprintf("export reported %d records but emitted %d", exported, sent)
		ch.writeError(codeExport, msg)
		return fmt.Errorf("%w: %s", ErrRemote, msg)
	}
	if err := flush(); err != nil {
		return err
	}
	binary.BigEndian.PutUint64(b, sent)
	if err := ch.writeBuilt(typeEnd, endSize); err != nil {
		return fmt.Errorf("send the end: %w", err)
	}
	return nil
}
