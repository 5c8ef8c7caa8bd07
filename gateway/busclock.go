package gateway

import (
	"sync"
	"time"
)

// busClock is the bus's clock as this gateway sees it: the server time of
// the last JetStream answer that carried one (every interest reading's
// consumer info does), advanced by the monotonic clock since. What the
// gateway judges against times others read (API key expiry) or stamps for
// others to read (alarms, /v1/status) is in it, so a gateway whose own wall
// clock is skewed or jumps behaves as one that is kept; Go's monotonic
// readings are immune to both. Its error is at most half the round trip of
// that answer plus the answering broker's skew (brokers need NTP). The
// worker's clock in pkg/sluice is the same idea. Safe for concurrent use.
type busClock struct {
	wall func() time.Time // this gateway's wall clock

	mu sync.Mutex
	// at is a monotonic reading (time.Now) of when the bus's clock read
	// bus; zero until an answer carried the server's time.
	at, bus time.Time
}

// now is the bus's time now; this gateway's wall clock until the bus has
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
// or take that half. An answer without a server time changes nothing.
func (c *busClock) observe(ts, sent, recv time.Time) {
	if ts.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at, c.bus = recv, ts.Add(recv.Sub(sent)/2)
}

// offset is how far this gateway's wall clock is ahead of the bus's
// (negative: behind); 0 until the bus has told its time.
func (c *busClock) offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		return 0
	}
	return c.wall().Sub(c.bus.Add(time.Since(c.at)))
}
