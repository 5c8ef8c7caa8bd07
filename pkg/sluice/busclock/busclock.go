// Package busclock is the bus's clock as one process sees it: the server
// time of the last JetStream answer that carried one, advanced by this
// process's monotonic clock since. Times the bus made (a message's store
// time, a family's creation) and times others read (alarms, dead letters,
// API key expiry) are compared with or stamped in it, never in this
// process's wall clock, which may be skewed or jump: Go's monotonic
// readings are immune to both. Its error is at most half the round trip of
// the answer, plus the answering broker's skew from the broker that made
// the other time (brokers need NTP). Gateways and SDK workers use it.
package busclock

import (
	"sync"
	"time"
)

// Clock is the bus's clock. Safe for concurrent use.
type Clock struct {
	mu   sync.Mutex
	wall func() time.Time // this process's wall clock
	// at is a monotonic reading (time.Now) of when the bus's clock read
	// bus; zero until an answer carried the server's time.
	at, bus time.Time
	readAt  time.Time // monotonic reading of the last answer, with a time or not
}

// New is the bus's clock before any answer: wall (time.Now if nil) stands
// in for it until Observe.
func New(wall func() time.Time) *Clock {
	if wall == nil {
		wall = time.Now
	}
	return &Clock{wall: wall}
}

// SetWall replaces this process's wall clock (for tests of a skewed or
// jumping one).
func (c *Clock) SetWall(wall func() time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall = wall
}

// Now is the bus's time now; this process's wall clock until the bus has
// told its time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		return c.wall()
	}
	return c.bus.Add(time.Since(c.at))
}

// Observe records a server's answer stamped ts, asked for at sent and
// received at recv (both time.Now readings): the server stamped it within
// the round trip, so at recv the bus's clock read ts plus half of it, give
// or take that half. It returns the offset of this process's wall clock
// from the bus's (positive: ahead); ok is false for an answer without a
// server time (a server too old to say: the wall clock stands in).
func (c *Clock) Observe(ts, sent, recv time.Time) (offset time.Duration, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readAt = recv
	if ts.IsZero() {
		return 0, false
	}
	c.at, c.bus = recv, ts.Add(recv.Sub(sent)/2)
	return c.wall().Sub(c.bus), true
}

// Offset is how far this process's wall clock is ahead of the bus's
// (negative: behind); 0 until the bus has told its time.
func (c *Clock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		return 0
	}
	return c.wall().Sub(c.bus.Add(time.Since(c.at)))
}

// Stale reports whether no answer was observed in the last every.
func (c *Clock) Stale(every time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readAt.IsZero() || time.Since(c.readAt) >= every
}

// Age is how long ago, by the bus's clock, the bus stamped t; never
// negative (a time a little ahead of this estimate, from the error above,
// is no age at all).
func (c *Clock) Age(t time.Time) time.Duration {
	return max(0, c.Now().Sub(t))
}
