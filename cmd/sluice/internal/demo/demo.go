// Package demo is the built-in demo worker handler: it takes a configurable
// time per message and fails a configurable share of them, so that slow
// families, retries and dead letters can be seen without writing code.
package demo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// Handler sleeps delay per message and fails failureRate (0..1) of attempts
// with a retryable error.
func Handler(delay time.Duration, failureRate float64, log *zap.Logger) sluice.Handler {
	return sluice.HandlerFunc(func(ctx context.Context, m *sluice.Message) error {
		if delay > 0 {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if failureRate > 0 && rand.Float64() < failureRate {
			return fmt.Errorf("demo failure (failure_rate %.2f) on attempt %d", failureRate, m.Attempt)
		}
		// copy: a copy on the family's redrive subject (a redrive, or the
		// gateway's repair of a message that may have missed the family).
		log.Info("handled", zap.String("topic", m.Topic), zap.String("family", m.Family),
			zap.Uint64("seq", m.Seq), zap.String("id", m.ID), zap.Int("attempt", m.Attempt), zap.Int("bytes", len(m.Data)),
			zap.Bool("copy", m.Header.Get(sluice.HeaderOriginalID) != ""))
		return nil
	})
}
