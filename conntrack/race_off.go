//go:build !race

package conntrack

// raceEnabled is true under the race detector, which would report the
// lock-free cache touches of TrackBatch (benign: their values are unused).
const raceEnabled = false
