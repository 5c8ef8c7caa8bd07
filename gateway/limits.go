package gateway

import (
	"context"
	"sync/atomic"
	"time"
)

// limits are the gateway's own bounds: requests in flight, request body
// bytes held, and publishes awaiting the bus's ack.
type limits struct {
	inFlight    atomic.Int64
	maxInFlight int64
	body        atomic.Int64
	maxBody     int64
	window      chan struct{}
	windowWait  time.Duration
}

func newLimits(cfg Config) *limits {
	return &limits{
		maxInFlight: int64(cfg.MaxInFlight),
		maxBody:     int64(cfg.MaxBodyBytesInFlight),
		window:      make(chan struct{}, cfg.PublishWindow),
		windowWait:  min(cfg.PublishWindowWait, cfg.PublishTimeout), // a request never waits past its publish timeout
	}
}

// enter admits a request unless maxInFlight are being served; leave undoes it.
func (l *limits) enter() bool {
	if l.inFlight.Add(1) > l.maxInFlight {
		l.inFlight.Add(-1)
		return false
	}
	return true
}

func (l *limits) leave() { l.inFlight.Add(-1) }

// reserveBody takes n bytes of the body budget; releaseBody gives them back.
func (l *limits) reserveBody(n int64) bool {
	if l.body.Add(n) > l.maxBody {
		l.body.Add(-n)
		return false
	}
	return true
}

func (l *limits) releaseBody(n int64) { l.body.Add(-n) }

// tryAcquirePublish takes a slot of the publish window if one is free now.
func (l *limits) tryAcquirePublish() bool {
	select {
	case l.window <- struct{}{}:
		return true
	default:
		return false
	}
}

// acquirePublish takes a slot of the publish window, waiting at most
// windowWait (or until ctx ends); releasePublish gives it back.
func (l *limits) acquirePublish(ctx context.Context) bool {
	select {
	case l.window <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(l.windowWait)
	defer t.Stop()
	select {
	case l.window <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (l *limits) releasePublish() { <-l.window }
