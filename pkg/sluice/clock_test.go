package sluice_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// skewedClock is a host's wall clock set off the bus's by a offset that
// may jump. Its readings carry no monotonic reading, as a wall clock that
// was stepped would not: code that measured durations with it would see
// the jumps.
type skewedClock struct{ offset atomic.Int64 }

func (c *skewedClock) set(d time.Duration) { c.offset.Store(int64(d)) }
func (c *skewedClock) now() time.Time {
	return time.Now().Round(0).Add(time.Duration(c.offset.Load()))
}

// TestRetryDeadlineUnderClockSkew runs a failing message into its retry
// deadline with the worker's clock an hour ahead, an hour behind, and
// jumping between attempts. The deadline is the bus's: judged on the
// worker's clock, an hour ahead would dead-letter at the first failure,
// an hour behind would retry until max attempts.
func TestRetryDeadlineUnderClockSkew(t *testing.T) {
	const deadline, delay = 2 * time.Second, 250 * time.Millisecond
	jumps := []time.Duration{0, time.Hour, -time.Hour, 2 * time.Hour, -3 * time.Hour, 30 * time.Minute}
	cases := []struct {
		name  string
		skew  time.Duration
		jumps bool // the clock takes the next of jumps at each attempt
	}{
		{"ahead 1h", time.Hour, false},
		{"behind 1h", -time.Hour, false},
		{"jumping", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			topic := harness.Topic("orders", "billing")
			fam := topic.Families["billing"]
			fam.MaxAttempts = 40 // judged on a clock behind, the deadline never comes: max attempts would
			fam.Backoff = []time.Duration{delay}
			fam.RetryDeadline = deadline
			topic.Families["billing"] = fam
			s := startStack(t, topic)

			clock := &skewedClock{}
			clock.set(tc.skew)
			var mu sync.Mutex
			var attempts []int
			var original time.Time // the bus's store time of the message
			h := sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
				mu.Lock()
				attempts = append(attempts, m.Attempt)
				original = m.Published
				mu.Unlock()
				if tc.jumps {
					clock.set(jumps[(m.Attempt-1)%len(jumps)])
				}
				return fmt.Errorf("still failing (attempt %d)", m.Attempt)
			})
			reg := prometheus.NewRegistry()
			w, err := sluice.NewWorker(s.nc, "orders", "billing", h, sluice.WithWorkerClock(clock.now),
				sluice.WithRegisterer(reg), sluice.WithWorkerLogger(harness.Logger(t)))
			if err != nil {
				t.Fatal(err)
			}
			run(t, w)
			_, err = s.producer(t).Publish(context.Background(), "orders", []byte("x"), sluice.WithID("o-1"))
			if err != nil {
				t.Fatal(err)
			}
			harness.Eventually(t, 60*time.Second, func() bool {
				return s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")) == 1
			}, "the message should be dead-lettered")

			dl := s.deadLetter(t, "orders", "billing", 1)
			mu.Lock()
			defer mu.Unlock()
			if r := dl.Header.Get(sluice.HeaderDeadReason); r != sluice.ReasonRetryDeadline {
				t.Fatalf("reason %q after attempts %v, want %s", r, attempts, sluice.ReasonRetryDeadline)
			}
			// The worker dead-letters once the next attempt would land past
			// the deadline: the bus's age of the message then was past
			// deadline-delay, less the clock estimate's error (half a round
			// trip). The dead letter was stored after that decision.
			if age := dl.Time.Sub(original); age < deadline-delay-time.Second {
				t.Errorf("dead-lettered %v after the store by the bus's clock, before its %v deadline", age, deadline)
			}
			// Dead-letter times are in the bus's clock: between the store and
			// the dead letter's own store, give or take far less than the skew.
			at, err := time.Parse(time.RFC3339Nano, dl.Header.Get(sluice.HeaderDeadAt))
			if err != nil {
				t.Fatal(err)
			}
			if at.Before(original.Add(-time.Minute)) || at.After(dl.Time.Add(time.Minute)) {
				t.Errorf("dead at %v: not between the store %v and the dead letter's store %v (bus clock)", at, original, dl.Time)
			}
			if tc.jumps {
				return
			}
			// The skew was in force: the worker measured it.
			offset := harness.Gauge(t, reg, "sluice_worker_clock_offset_seconds")
			if d := time.Duration(offset * float64(time.Second)); (d - tc.skew).Abs() > time.Minute {
				t.Errorf("clock offset %v, want about %v", d, tc.skew)
			}
		})
	}
}
