package sluice

import (
	"math/rand/v2"
	"sync"
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

// retryBudget caps a producer's retries at ratio per first attempt, plus a
// reserve: every message deposits ratio tokens (up to the cap), every retry
// takes one.
type retryBudget struct {
	mu             sync.Mutex
	ratio, tokens  float64
	reserve, limit float64
}

// retryReserve is the budget's retries when nothing was deposited yet.
const retryReserve = 10

func newRetryBudget(ratio float64) *retryBudget {
	return &retryBudget{ratio: ratio, tokens: retryReserve, reserve: retryReserve, limit: retryReserve + 100*ratio}
}

func (b *retryBudget) deposit() {
	b.mu.Lock()
	b.tokens = min(b.limit, b.tokens+b.ratio)
	b.mu.Unlock()
}

func (b *retryBudget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
