package admit

import "time"

// Bucket is a token bucket: it fills at rate tokens per second up to burst,
// and each admitted request takes tokens. No clock of its own: callers pass
// now, so one owner drives it and tests control time.
type Bucket struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

// NewBucket returns a full bucket.
func NewBucket(rate float64, burst int, now time.Time) *Bucket {
	return &Bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

func (b *Bucket) fill(now time.Time) {
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
}

// Take takes n tokens if there are that many; it reports whether it did.
func (b *Bucket) Take(now time.Time, n float64) bool {
	b.fill(now)
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

// Tokens is what the bucket holds at now.
func (b *Bucket) Tokens(now time.Time) float64 {
	b.fill(now)
	return b.tokens
}

// Wait is how long until n tokens are there (0 if they are now; forever,
// as the largest duration, if n exceeds the burst or the rate is zero).
func (b *Bucket) Wait(now time.Time, n float64) time.Duration {
	b.fill(now)
	if b.tokens >= n {
		return 0
	}
	if n > b.burst || b.rate <= 0 {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration((n - b.tokens) / b.rate * float64(time.Second))
}

// Full reports whether the bucket is full at now (an idle client's bucket
// can then be forgotten without changing anything).
func (b *Bucket) Full(now time.Time) bool {
	b.fill(now)
	return b.tokens >= b.burst
}
