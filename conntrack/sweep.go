package conntrack

import (
	"sync"
	"time"
)

// Sweeping: a background goroutine removes timed-out entries, a few
// shards per tick, so that the whole table is covered within a period and
// no more than one shard is ever locked at a time (a worker waits at most
// for one shard's sweep, never for the table's).
const (
	// SweepTick is how often a Sweeper wakes.
	SweepTick = 100 * time.Millisecond
	// IdleSweepTick is how often it wakes while the table is empty (an
	// idle gateway).
	IdleSweepTick = time.Second
	// DefaultSweepPeriod is the time within which a Sweeper started with
	// period 0 visits every shard.
	DefaultSweepPeriod = 2 * time.Second
)

// shardsPerTick is how many shards each tick must sweep for every shard to
// be visited within period (at least one, at most all).
func shardsPerTick(period, tick time.Duration) int {
	ticks := int(period / tick)
	if ticks < 1 {
		return numShards
	}
	return min((numShards+ticks-1)/ticks, numShards)
}

// Sweeper expires a table's entries in the background. Stop it before
// dropping the table.
type Sweeper struct {
	t    *Table
	now  func() int64
	per  int
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// StartSweeper starts a goroutine that removes timed-out connections and
// fragment records, visiting every shard within period (0:
// DefaultSweepPeriod). now must be the time source of every Track call on
// the table (the dataplane's Clock.Now).
func (t *Table) StartSweeper(now func() int64, period time.Duration) *Sweeper {
	if period <= 0 {
		period = DefaultSweepPeriod
	}
	s := &Sweeper{t: t, now: now, per: shardsPerTick(period, SweepTick), stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *Sweeper) run() {
	defer close(s.done)
	tick := time.NewTimer(SweepTick)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		s.t.Expire(s.now(), s.per)
		// An empty table has nothing to expire: wake less often. A
		// connection created meanwhile lives far longer than the pause.
		next := SweepTick
		if s.t.Len() == 0 {
			next = IdleSweepTick
		}
		tick.Reset(next)
	}
}

// Stop stops the sweeper and waits for its goroutine to end. It may be
// called more than once.
func (s *Sweeper) Stop() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
}
