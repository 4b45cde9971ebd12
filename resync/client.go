package resync

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/xdpcluster/xdpcluster/conntrack"
)

// PullOptions configure a pull.
type PullOptions struct {
	// Secret is the cluster secret: 16, 24 or 32 bytes.
	Secret []byte
	// Params are this node's cluster parameters; a server with others is
	// refused.
	Params conntrack.SnapshotParams
	// MaxRecords is required: a table larger than this is refused
	// (ErrTooLarge), from the header's estimate and while streaming.
	MaxRecords int
	// Merge is called with each data frame's records (a positive multiple
	// of RecordSize bytes, reused after it returns); an error aborts the
	// pull.
	Merge func(recs []byte) error
	// Progress, optional, is called at most about once a second while
	// records arrive.
	Progress func(Stats)
	// Dial, optional, opens the connection (default: TCP with net.Dialer).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

func (o *PullOptions) check() error {
	if err := checkSecret(o.Secret); err != nil {
		return err
	}
	if o.MaxRecords <= 0 {
		return fmt.Errorf("MaxRecords is %d; the size limit must be positive", o.MaxRecords)
	}
	if o.Merge == nil {
		return errors.New("no Merge function")
	}
	return nil
}

// progressEvery is the least time between two Progress calls (a
// variable for the tests).
var progressEvery = time.Second

// Pull connects to the server at addr and merges its connection table
// through o.Merge. ctx bounds the whole pull (the handshake has 5 s at
// most). The error names the peer and wraps ErrAuth, ErrParams,
// ErrTooLarge, ErrProtocol, ErrBusy, ErrRemote, Merge's error, or the
// context's. Records merged before an error are authentic (every frame
// is) and in order, but the table may be incomplete.
func Pull(ctx context.Context, addr string, o PullOptions) (st Stats, err error) {
	start := time.Now()
	st.Peer = addr
	defer func() {
		st.Duration = time.Since(start)
		if err != nil {
			cerr := ctx.Err()
			if dl, ok := ctx.Deadline(); ok && cerr == nil && errors.Is(err, os.ErrDeadlineExceeded) && time.Until(dl) < 10*time.Millisecond {
				// The connection's deadline is the context's: its
				// timer may fire a moment before the context's.
				cerr = context.DeadlineExceeded
			}
			if cerr != nil && !errors.Is(err, cerr) {
				err = fmt.Errorf("%w (%w)", err, cerr)
			}
			err = fmt.Errorf("resync pull from %s: %w", addr, err)
		}
	}()
	if err := o.check(); err != nil {
		return st, err
	}
	dial := o.Dial
	if dial == nil {
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	c, err := dial(ctx, addr)
	if err != nil {
		return st, fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	// A cancelled context interrupts any read or write at once.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	deadline, hasDeadline := ctx.Deadline()
	hs := start.Add(handshakeTimeout)
	if !hasDeadline || deadline.After(hs) {
		c.SetDeadline(hs)
	} else {
		c.SetDeadline(deadline)
	}
	if err := ctx.Err(); err != nil {
		return st, err
	}

	// Hellos.
	clientHello, err := newHello()
	if err != nil {
		return st, err
	}
	n, err := c.Write(clientHello)
	st.Bytes += int64(n)
	if err != nil {
		return st, fmt.Errorf("send the hello: %w", err)
	}
	serverHello := make([]byte, helloSize)
	n, err = io.ReadFull(c, serverHello)
	st.Bytes += int64(n)
	if err != nil {
		return st, fmt.Errorf("read the server's hello: %w", err)
	}
	version, _, err := parseHello(serverHello)
	if err != nil {
		return st, err
	}
	if version != Version {
		return st, fmt.Errorf("%w: the server speaks resync version %d, this node %d", ErrProtocol, version, Version)
	}
	ch, err := newChannel(c, o.Secret, clientHello, serverHello, true)
	if err != nil {
		return st, err
	}
	defer func() { st.Bytes += ch.bytes }()

	// Request.
	b := ch.body()
	b[0] = Version
	putParams(b[1:], o.Params)
	binary.BigEndian.PutUint64(b[1+paramsSize:], uint64(o.MaxRecords))
	if err := ch.writeBuilt(typeRequest, requestSize); err != nil {
		return st, fmt.Errorf("send the request: %w", err)
	}
	if hasDeadline {
		c.SetDeadline(deadline)
	} else {
		c.SetDeadline(time.Time{})
	}
	if err := ctx.Err(); err != nil {
		return st, err
	}
	last := time.Now()
	progress := func(records int) {
		if o.Progress == nil || time.Since(last) < progressEvery {
			return
		}
		last = time.Now()
		o.Progress(Stats{Peer: addr, Records: records, Bytes: st.Bytes + ch.bytes, Duration: last.Sub(start)})
	}
	st.Records, err = receive(ch, o, progress)
	return st, err
}

// receive reads the server's answer to the request: the header (or an
// error), the data frames into o.Merge, the end. It returns the records
// merged.
func receive(ch *channel, o PullOptions, progress func(int)) (int, error) {
	typ, body, err := ch.readFrame()
	if errors.Is(err, ErrAuth) {
		return 0, fmt.Errorf("%w: wrong cluster secret? the server's first frame does not authenticate under this node's", ErrAuth)
	}
	if err != nil {
		if errors.Is(err, errEOF) {
			return 0, fmt.Errorf("%w: the server closed the connection without answering the request", ErrProtocol)
		}
		return 0, fmt.Errorf("read the header: %w", err)
	}
	switch {
	case typ == typeError:
		return 0, remoteError(body)
	case typ != typeHeader || len(body) != headerSize:
		return 0, fmt.Errorf("%w: expected a header, got a frame of type %d with %d bytes", ErrProtocol, typ, len(body))
	}
	if p := getParams(body); p != o.Params {
		return 0, fmt.Errorf("%w: the server streams a table built with %s, this node runs with %s; every record's bucket depends on them", ErrParams, p, o.Params)
	}
	max := uint64(o.MaxRecords)
	if expected := binary.BigEndian.Uint64(body[paramsSize:]); expected > max {
		return 0, fmt.Errorf("%w: the server announces about %d records, more than the limit of %d", ErrTooLarge, expected, max)
	}
	var got uint64
	for {
		typ, body, err := ch.readFrame()
		if err != nil {
			if errors.Is(err, errEOF) {
				return int(got), fmt.Errorf("%w: the stream ends after %d records without an end frame (truncated)", ErrProtocol, got)
			}
			return int(got), fmt.Errorf("read records: %w", err)
		}
		switch typ {
		case typeData:
			if len(body) == 0 || len(body)%RecordSize != 0 {
				return int(got), fmt.Errorf("%w: data frame of %d bytes, not a positive multiple of the record size %d", ErrProtocol, len(body), RecordSize)
			}
			k := uint64(len(body) / RecordSize)
			if got+k > max {
				return int(got), fmt.Errorf("%w: the server streams more than the limit of %d records", ErrTooLarge, max)
			}
			if err := o.Merge(body); err != nil {
				return int(got), fmt.Errorf("merge records %d to %d: %w", got, got+k, err)
			}
			got += k
			progress(int(got))
		case typeEnd:
			if len(body) != endSize {
				return int(got), fmt.Errorf("%w: end frame of %d bytes", ErrProtocol, len(body))
			}
			if total := binary.BigEndian.Uint64(body); total != got {
				return int(got), fmt.Errorf("%w: the server sent %d records but its end frame counts %d", ErrProtocol, got, total)
			}
			return int(got), nil
		case typeError:
			return int(got), remoteError(body)
		default:
			return int(got), fmt.Errorf("%w: unexpected frame of type %d after %d records", ErrProtocol, typ, got)
		}
	}
}
