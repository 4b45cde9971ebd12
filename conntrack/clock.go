package conntrack

import "time"

// Clock is a dataplane's one time origin. Every time a Table is given
// (Track, TrackBatch, Expire, snapshots) is nanoseconds since the origin
// of one Clock, read from the monotonic clock; a table must never see
// times from two clocks, or entries would expire early or late by the
// difference of their origins.
//
// The zero Clock has no origin; use NewClock. A Clock is a value: copies
// share the origin and are safe for concurrent use.
type Clock struct{ origin time.Time }

// NewClock returns a clock whose origin is now.
func NewClock() Clock { return Clock{origin: time.Now()} }

// Now returns the nanoseconds since the clock's origin.
func (c Clock) Now() int64 { return int64(time.Since(c.origin)) }

// IsZero reports whether the clock has no origin (the zero Clock).
func (c Clock) IsZero() bool { return c.origin.IsZero() }

// ClockSince returns a clock whose origin is the given time (which must
// carry a monotonic reading, as time.Now's does, to be immune to wall
// clock steps).
func ClockSince(origin time.Time) Clock { return Clock{origin: origin} }
