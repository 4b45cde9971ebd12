package resync

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/xdpcluster/xdpcluster/conntrack"
)

const (
	// Version is the protocol version this package speaks.
	Version = 1
	// RecordSize is the size of one record of the connection table (the
	// table's export format; the package does not interpret it).
	RecordSize = 56
	// MaxBody is the largest body of a frame.
	MaxBody = 64 << 10
	// recordsPerFrame is the most records one data frame carries.
	recordsPerFrame = MaxBody / RecordSize

	magic     = "XCRSYNC"
	randSize  = 32
	helloSize = len(magic) + 1 + randSize
	tagSize   = 16
	// minSealed and maxSealed bound a frame's length field: a type byte
	// and a tag at least, a full body at most.
	minSealed = 1 + tagSize
	maxSealed = 1 + MaxBody + tagSize

	infoC2S = "xdpcluster resync v1 client->server"
	infoS2C = "xdpcluster resync v1 server->client"
)

// Frame types.
const (
	typeRequest = 1
	typeHeader  = 2
	typeData    = 3
	typeEnd     = 4
	typeError   = 5
)

// Error codes of an error frame.
const (
	codeParams     = 1
	codeBusy       = 2
	codeTooLarge   = 3
	codeVersion    = 4
	codeExport     = 5
	codeAuth       = 6
	codeBadRequest = 7
)

// maxMessage bounds the message of an error frame the server sends.
const maxMessage = 1024

// Body sizes of the fixed-size messages.
const (
	paramsSize  = 4 + 4 + 1
	requestSize = 1 + paramsSize + 8
	headerSize  = paramsSize + 8
	endSize     = 8
)

// The errors a pull or a served pull returns wrap one of these.
var (
	// ErrAuth: a frame did not authenticate: the peers' cluster secrets
	// differ, or the stream was tampered with (a changed, dropped,
	// replayed or reordered frame).
	ErrAuth = errors.New("authentication failed")
	// ErrParams: the peers run with different cluster parameters.
	ErrParams = errors.New("cluster parameters differ")
	// ErrTooLarge: the table is larger than the client's limit.
	ErrTooLarge = errors.New("connection table too large")
	// ErrProtocol: the peer broke the protocol (or is not a resync peer,
	// or speaks another version, or the stream was cut short).
	ErrProtocol = errors.New("resync protocol error")
	// ErrBusy: the server already serves its maximum of pulls; another
	// peer, or a later try, may serve this one.
	ErrBusy = errors.New("peer busy")
	// ErrRemote: the server failed to export its table.
	ErrRemote = errors.New("peer failed to export its table")
)

// checkSecret refuses a secret AES cannot be keyed with by the gossip.
func checkSecret(secret []byte) error {
	switch len(secret) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("cluster secret is %d bytes; it must be 16, 24 or 32 bytes (AES-128, -192 or -256, as the membership gossip's)", len(secret))
}

// newHello returns a hello with fresh randomness.
func newHello() ([]byte, error) {
	h := make([]byte, helloSize)
	copy(h, magic)
	h[len(magic)] = Version
	if _, err := rand.Read(h[len(magic)+1:]); err != nil {
		return nil, fmt.Errorf("random for the hello: %w", err)
	}
	return h, nil
}

// parseHello returns a hello's version and random.
func parseHello(h []byte) (byte, []byte, error) {
	if len(h) != helloSize || !bytes.Equal(h[:len(magic)], []byte(magic)) {
		return 0, nil, fmt.Errorf("%w: the peer's hello does not start with %q: not a resync peer", ErrProtocol, magic)
	}
	return h[len(magic)], h[len(magic)+1:], nil
}

// newAEAD derives one direction's key.
func newAEAD(secret, salt []byte, info string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, secret, salt, info, 32)
	if err != nil {
		return nil, fmt.Errorf("derive the session key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// channel is one side of a session: sealed frames out, opened frames in.
type channel struct {
	rw         io.ReadWriter
	send, recv cipher.AEAD
	sendN      uint64 // frames sealed: the next send nonce
	recvN      uint64 // frames opened: the next receive nonce
	nonce      [12]byte
	wbuf       []byte // length, type, body, tag
	rbuf       []byte // length, sealed
	bytes      int64  // on the wire, both directions
}

// newChannel keys a session; client says which side this is.
func newChannel(rw io.ReadWriter, secret, clientHello, serverHello []byte, client bool) (*channel, error) {
	salt := make([]byte, 0, 2*randSize)
	salt = append(salt, clientHello[len(magic)+1:]...)
	salt = append(salt, serverHello[len(magic)+1:]...)
	c2s, err := newAEAD(secret, salt, infoC2S)
	if err != nil {
		return nil, err
	}
	s2c, err := newAEAD(secret, salt, infoS2C)
	if err != nil {
		return nil, err
	}
	ch := &channel{rw: rw, wbuf: make([]byte, 4+maxSealed), rbuf: make([]byte, 4+maxSealed)}
	if client {
		ch.send, ch.recv = c2s, s2c
	} else {
		ch.send, ch.recv = s2c, c2s
	}
	return ch, nil
}

// body is where the next frame's body is built (MaxBody bytes).
func (ch *channel) body() []byte { return ch.wbuf[5 : 5+MaxBody] }

// setNonce writes counter n as the nonce.
func (ch *channel) setNonce(n uint64) []byte {
	binary.BigEndian.PutUint64(ch.nonce[4:], n)
	return ch.nonce[:]
}

// writeBuilt seals and sends a frame of type typ whose n-byte body was
// built in ch.body().
func (ch *channel) writeBuilt(typ byte, n int) error {
	if n < 0 || n > MaxBody {
		return fmt.Errorf("%w: frame body of %d bytes; at most %d", ErrProtocol, n, MaxBody)
	}
	if ch.sendN == math.MaxUint64 {
		return fmt.Errorf("%w: nonce counter exhausted", ErrProtocol)
	}
	binary.BigEndian.PutUint32(ch.wbuf[:4], uint32(1+n+tagSize))
	ch.wbuf[4] = typ
	plain := ch.wbuf[4 : 5+n]
	sealed := ch.send.Seal(plain[:0], ch.setNonce(ch.sendN), plain, ch.wbuf[:4])
	ch.sendN++
	w, err := ch.rw.Write(ch.wbuf[:4+len(sealed)])
	ch.bytes += int64(w)
	return err
}

// writeFrame sends a frame with a copy of body.
func (ch *channel) writeFrame(typ byte, body []byte) error {
	if len(body) > MaxBody {
		return fmt.Errorf("%w: frame body of %d bytes; at most %d", ErrProtocol, len(body), MaxBody)
	}
	return ch.writeBuilt(typ, copy(ch.body(), body))
}

// errEOF is a stream that ended cleanly between two frames.
var errEOF = fmt.Errorf("%w: the peer closed the connection", ErrProtocol)

// readFrame reads and opens the next frame. The body is valid until the
// next call. A frame that does not open wraps ErrAuth; a length outside
// the limits or a stream cut inside a frame wraps ErrProtocol; a stream
// that ends between two frames returns errEOF.
func (ch *channel) readFrame() (byte, []byte, error) {
	hdr := ch.rbuf[:4]
	n, err := io.ReadFull(ch.rw, hdr)
	ch.bytes += int64(n)
	if err != nil {
		if err == io.EOF {
			return 0, nil, errEOF
		}
		if err == io.ErrUnexpectedEOF {
			return 0, nil, fmt.Errorf("%w: the stream ends inside a frame's length", ErrProtocol)
		}
		return 0, nil, err
	}
	size := binary.BigEndian.Uint32(hdr)
	if size < minSealed || size > maxSealed {
		return 0, nil, fmt.Errorf("%w: frame %d announces %d bytes; a frame holds %d to %d", ErrProtocol, ch.recvN, size, minSealed, maxSealed)
	}
	sealed := ch.rbuf[4 : 4+size]
	n, err = io.ReadFull(ch.rw, sealed)
	ch.bytes += int64(n)
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return 0, nil, fmt.Errorf("%w: the stream ends inside frame %d (%d of %d bytes)", ErrProtocol, ch.recvN, n, size)
		}
		return 0, nil, err
	}
	plain, err := ch.recv.Open(sealed[:0], ch.setNonce(ch.recvN), sealed, hdr)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: frame %d does not authenticate", ErrAuth, ch.recvN)
	}
	ch.recvN++
	return plain[0], plain[1:], nil
}

// putParams encodes p into b (paramsSize bytes).
func putParams(b []byte, p conntrack.SnapshotParams) {
	binary.BigEndian.PutUint32(b[0:], p.TotalNodes)
	binary.BigEndian.PutUint32(b[4:], p.Seed)
	b[8] = p.Hash
}

func getParams(b []byte) conntrack.SnapshotParams {
	return conntrack.SnapshotParams{TotalNodes: binary.BigEndian.Uint32(b[0:]), Seed: binary.BigEndian.Uint32(b[4:]), Hash: b[8]}
}

// writeError sends an error frame.
func (ch *channel) writeError(code byte, msg string) error {
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	b := ch.body()
	b[0] = code
	return ch.writeBuilt(typeError, 1+copy(b[1:], msg))
}

// remoteError turns an error frame's body into the error a client returns.
func remoteError(body []byte) error {
	if len(body) < 1 {
		return fmt.Errorf("%w: empty error frame", ErrProtocol)
	}
	msg := body[1:]
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	var sentinel error
	switch body[0] {
	case codeParams:
		sentinel = ErrParams
	case codeBusy:
		sentinel = ErrBusy
	case codeTooLarge:
		sentinel = ErrTooLarge
	case codeExport:
		sentinel = ErrRemote
	case codeAuth:
		sentinel = ErrAuth
	default: // codeVersion, codeBadRequest, unknown codes
		sentinel = ErrProtocol
	}
	return fmt.Errorf("%w: the server refused (code %d): %q", sentinel, body[0], msg)
}
