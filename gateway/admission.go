package gateway

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/pkg/credit"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// heartbeatSubject carries gateway heartbeats; the payload is the gateway's id.
const heartbeatSubject = "sluice.gateway.heartbeat"

// topicAdmission is one topic's admission state at this gateway.
type topicAdmission struct {
	mu     sync.Mutex
	credit credit.Admission
	drain  *credit.Drain
	// Totals admitted, so a refill can count what was admitted while the
	// bus was being read.
	takenMsgs, takenBytes int64
	maxMsgs               int64
	free                  int64 // free messages at the last reading
	alive                 int   // gateways sharing the topic at the last reading
}

// admission gives each gateway its share of every topic's free capacity,
// refilled from the bus every cfg.AdmissionRefresh, and computes Retry-After
// from how fast the topic drains.
type admission struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	log    *zap.Logger
	id     string
	topics map[string]*topicAdmission

	mu   sync.Mutex
	seen map[string]time.Time // gateway id -> last heartbeat

	refreshed atomic.Bool // every topic read at least once
	gateways  atomic.Int64
}

func newAdmission(cfg Config, nc *nats.Conn, js jetstream.JetStream, log *zap.Logger) *admission {
	a := &admission{cfg: cfg, nc: nc, js: js, log: log, id: nuid.Next(),
		topics: map[string]*topicAdmission{}, seen: map[string]time.Time{}}
	for name, t := range cfg.Topics {
		a.topics[name] = &topicAdmission{drain: credit.NewDrain(2 * time.Second), maxMsgs: t.MaxMessages, alive: 1}
	}
	return a
}

// run sends heartbeats, listens to the other gateways' and refills credit
// until ctx ends.
func (a *admission) run(ctx context.Context) error {
	sub, err := a.nc.Subscribe(heartbeatSubject, func(m *nats.Msg) {
		a.mu.Lock()
		a.seen[string(m.Data)] = time.Now()
		a.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("gateway heartbeats: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	beat := time.NewTicker(a.cfg.HeartbeatInterval)
	defer beat.Stop()
	refill := time.NewTicker(a.cfg.AdmissionRefresh)
	defer refill.Stop()
	a.heartbeat()
	a.refresh(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			a.heartbeat()
		case <-refill.C:
			a.refresh(ctx)
		}
	}
}

func (a *admission) heartbeat() {
	a.mu.Lock()
	a.seen[a.id] = time.Now() // this gateway is alive even when the bus is not
	a.mu.Unlock()
	_ = a.nc.Publish(heartbeatSubject, []byte(a.id))
}

// alive counts gateways heard from within three heartbeat intervals and
// forgets the others.
func (a *admission) alive(now time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, at := range a.seen {
		if id != a.id && now.Sub(at) > 3*a.cfg.HeartbeatInterval {
			delete(a.seen, id)
		}
	}
	return max(1, len(a.seen))
}

// refresh reads every topic's state and refills this gateway's share.
func (a *admission) refresh(ctx context.Context) {
	if !a.nc.IsConnected() {
		return // keep the last credit; publishes will be refused by the bus check
	}
	ctx, cancel := context.WithTimeout(ctx, max(a.cfg.AdmissionRefresh, time.Second))
	defer cancel()
	now := time.Now()
	alive := a.alive(now)
	a.gateways.Store(int64(alive))
	ok := true
	for name, ta := range a.topics {
		ta.mu.Lock()
		msgs0, bytes0 := ta.takenMsgs, ta.takenBytes
		ta.mu.Unlock()
		s, err := a.js.Stream(ctx, sluice.StreamName(name))
		if err != nil {
			a.log.Debug("admission: reading topic", zap.String("topic", name), zap.Error(err))
			ok = false
			continue
		}
		info := s.CachedInfo()
		free := info.Config.MaxMsgs - int64(info.State.Msgs)
		freeBytes := info.Config.MaxBytes - int64(info.State.Bytes)
		ta.mu.Lock()
		ta.credit.Refill(free/int64(alive), freeBytes/int64(alive), ta.takenMsgs-msgs0, ta.takenBytes-bytes0)
		ta.drain.Observe(now, info.State.LastSeq, info.State.Msgs)
		ta.maxMsgs, ta.free, ta.alive = info.Config.MaxMsgs, free, alive
		ta.mu.Unlock()
	}
	if ok {
		a.refreshed.Store(true)
	}
}

// take admits one message of size bytes to topic, or says how long to wait.
func (a *admission) take(topic string, size int64) (bool, time.Duration) {
	ta := a.topics[topic]
	ta.mu.Lock()
	defer ta.mu.Unlock()
	if ta.credit.Take(size) {
		ta.takenMsgs++
		ta.takenBytes += size
		return true, 0
	}
	return false, a.retryAfterLocked(ta)
}

// giveBack returns the credit of a message admitted but not published
// (refused by a later check).
func (a *admission) giveBack(topic string, size int64) {
	ta := a.topics[topic]
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.credit.Return(size)
	ta.takenMsgs--
	ta.takenBytes -= size
}

// retryAfter is the computed Retry-After for a refusal on topic.
func (a *admission) retryAfter(topic string) time.Duration {
	ta := a.topics[topic]
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return a.retryAfterLocked(ta)
}

// retryAfterLocked: the time for the topic to drain enough to give every
// gateway credit again (at least 1% of the topic, at least one message per
// gateway), jittered up to +50% and clamped.
func (a *admission) retryAfterLocked(ta *topicAdmission) time.Duration {
	want := max(int64(ta.alive), ta.maxMsgs/100)
	return credit.RetryAfter(want-ta.free, ta.drain.Rate(), rand.Float64(), a.cfg.RetryAfterMin, a.cfg.RetryAfterMax)
}

// shedRetryAfter is the Retry-After of a gateway-side shed (503): the
// bounds there free up in milliseconds, so the minimum, jittered.
func (a *admission) shedRetryAfter() time.Duration {
	return credit.RetryAfter(0, math.Inf(1), rand.Float64(), a.cfg.RetryAfterMin, a.cfg.RetryAfterMax)
}

// setHeaders advertises the topic's admission credit (IETF httpapi
// ratelimit-headers draft): the share per refill and what is left of it.
func (a *admission) setHeaders(h http.Header, topic string) {
	ta := a.topics[topic]
	ta.mu.Lock()
	share, left, refilled := ta.credit.Share(), ta.credit.Remaining(), ta.credit.Refilled()
	ta.mu.Unlock()
	if !refilled {
		return
	}
	window := int(math.Ceil(a.cfg.AdmissionRefresh.Seconds()))
	h.Set("RateLimit-Policy", fmt.Sprintf(`"topic";q=%d;w=%d`, share, window))
	h.Set("RateLimit", fmt.Sprintf(`"topic";r=%d;t=%d`, left, window))
}

// AdmissionState is one topic's admission at this gateway, for /v1/topics.
type AdmissionState struct {
	Share      int64   `json:"share"`
	Remaining  int64   `json:"remaining"`
	Gateways   int     `json:"gateways"`
	DrainRate  float64 `json:"drain_per_second"`
	RetryAfter float64 `json:"retry_after_seconds"`
}

func (a *admission) state(topic string) AdmissionState {
	ta := a.topics[topic]
	ta.mu.Lock()
	defer ta.mu.Unlock()
	want := max(int64(ta.alive), ta.maxMsgs/100)
	return AdmissionState{
		Share: ta.credit.Share(), Remaining: ta.credit.Remaining(), Gateways: ta.alive,
		DrainRate:  math.Round(ta.drain.Rate()*10) / 10,
		RetryAfter: credit.RetryAfter(want-ta.free, ta.drain.Rate(), 0, a.cfg.RetryAfterMin, a.cfg.RetryAfterMax).Seconds(),
	}
}
