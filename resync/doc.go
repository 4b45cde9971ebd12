// Package resync transfers the connection table from a live peer to a
// node that starts or rejoins, so that it can take its buckets back
// without losing a connection opened while it was away.
//
// The channel is authenticated and encrypted with the cluster secret (the
// 16, 24 or 32 bytes the membership gossip uses): a peer without it can
// neither pull the table nor feed one. The package knows nothing of the
// table: records are opaque RecordSize-byte units that the server's Export
// streams and the client's Merge consumes, and the cluster parameters
// (conntrack.SnapshotParams) are compared on both sides, because every
// record's bucket depends on them.
//
// # Protocol, version 1
//
// All integers are big-endian.
//
//  1. Hello, in clear. The client sends, then the server answers:
//
//     magic "XCRSYNC" (7 bytes), version u8 (1), random (32 bytes)
//
//     A peer with another magic is not a resync peer; a peer with another
//     version is refused (the server still answers its hello, so the
//     client can name both versions).
//
//  2. Keys. Each direction has its own AES-256-GCM key:
//
//     HKDF-SHA256(secret, salt = client random || server random,
//     info = "xdpcluster resync v1 client->server"
//     or "xdpcluster resync v1 server->client"), 32 bytes
//
//     Fresh randoms on both sides make every session's keys new, so a
//     frame recorded from one session means nothing in another.
//
//  3. Frames, in each direction:
//
//     length u32 (of what follows), sealed (type u8 || body)
//
//     sealed with the direction's key, a 96-bit nonce that is the
//     direction's frame counter (4 zero bytes, then the counter as u64,
//     starting at 0: never reused within a key) and the 4 length bytes as
//     additional data. A body holds at most MaxBody (64 KiB) bytes; a
//     longer or shorter frame than the limits allow is a protocol error,
//     read no further. Because the nonce is the receiver's count of frames
//     opened, a tampered, dropped, replayed or reordered frame fails to
//     authenticate; a stream cut short ends without an end frame.
//
//  4. Messages. The client sends one frame:
//
//     request (type 1): version u8, params, max records u64
//
//     where params are total nodes u32, hash seed u32, hash mode u8. The
//     server answers either
//
//     error (type 5): code u8, message (UTF-8, the rest of the body)
//
//     or
//
//     header (type 2): params, expected records u64 (an estimate: the
//     table's size when the transfer starts; 0 if unknown)
//
//     then data frames (type 3: a positive multiple of RecordSize bytes of
//     records), then
//
//     end (type 4): total records u64
//
//     An error frame may also replace any data frame (the table grew past
//     the client's limit, the export failed). The client checks the
//     header's params and count, the running count against its limit and
//     the end frame's total against what it received.
//
// Authentication is mutual: the server's first sealed frame (header or
// error) proves to the client that the server holds the secret, and the
// client's request proves it to the server. With different secrets both
// sides fail on the first sealed frame they open (the server answers an
// unauthenticated request with an error frame the client cannot open);
// nothing reaches Merge, Export is never called.
//
// Error codes: 1 params differ, 2 busy (Server.MaxConcurrent pulls are in
// progress), 3 table too large for the client's limit, 4 unsupported
// version, 5 the export failed, 6 authentication failed, 7 malformed
// request. The client returns them wrapping ErrParams, ErrBusy,
// ErrTooLarge, ErrProtocol, ErrRemote, ErrAuth and ErrProtocol.
//
// Bounds: every read is at most one frame (MaxBody plus the type byte and
// the 16-byte tag); the server's handshake has 5 s (or Server.Timeout, if
// shorter) and a whole pull Server.Timeout (default 60 s); the client's
// time is its context's.
package resync
