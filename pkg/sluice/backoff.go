package sluice

import (
	"math/rand/v2"
	"time"
)

// backoff is capped exponential backoff with full jitter: the n-th wait is
// uniform in [0, min(max, initial*2^n)), so clients refused together do not
// come back together.
type backoff struct {
	initial, max time.Duration
}

func (b backoff) wait(attempt int) time.Duration {
	ceiling := b.initial
	for range attempt {
		if ceiling >= b.max/2 {
			ceiling = b.max
			break
		}
		ceiling *= 2
	}
	ceiling = min(ceiling, b.max)
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling)
}

// sleep waits d or until ctx is done.
func sleep(done <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
