package sluice

import (
	"sync"
	"time"
)

// busClockRefresh is how often a worker reads the bus's clock again: often
// enough to follow a change of the broker that answers (its clock may
// differ by what NTP leaves) and the monotonic clock's drift (parts per
// million), rarely enough to cost nothing.
const busClockRefresh = time.Minute

// busClock is the bus's clock as this process sees it: the server time of
// the last JetStream answer that carried one, advanced by this process's
// monotonic clock since. Times the bus made (a message's store time, a
// family's creation) are compared with it, never with this process's
// wall clock, which may be skewed or jump: Go's monotonic readings are
// immune to both, so only the bus's clock counts. Its error is at most half
// the round trip of that answer, plus the answering broker's skew from the
// broker that made the other time. Safe for concurrent use.
type busClock struct {
	wall func() time.Time // this process's wall clock

	mu sync.Mutex
	// at is a monotonic reading (time.Now) of when the bus's clock read
	// bus; zero until an answer carried the server's time.
	at, bus time.Time
	readAt  time.Time // monotonic reading of the last answer, with a time or not
}

// now is the bus's time now; this process's wall clock until the bus has
// told its time.
func (c *busClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		return c.wall()
	}
	return c.bus.Add(time.Since(c.at))
}

// observe records a server's answer stamped ts, asked for at sent and
// received at recv (both time.Now readings): the server stamped it within
// the round trip, so at recv the bus's clock read ts plus half of it, give
// or take that half. It returns the offset of this process's wall clock
// from the bus's (positive: ahead); ok is false for an answer without a
// server time.
func (c *busClock) observe(ts, sent, recv time.Time) (offset time.Duration, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readAt = recv
	if ts.IsZero() {
		return 0, false // a server too old to say: this process's clock stands in
	}
	c.at, c.bus = recv, ts.Add(recv.Sub(sent)/2)
	return c.wall().Sub(c.bus), true
}

// stale reports whether the bus's clock should be read again.
func (c *busClock) stale() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readAt.IsZero() || time.Since(c.readAt) >= busClockRefresh
}

// age is how long ago, by the bus's clock, the bus stamped t; never
// negative (a time a little ahead of this estimate, from the error above,
// is no age at all).
func (c *busClock) age(t time.Time) time.Duration {
	return max(0, c.now().Sub(t))
}
