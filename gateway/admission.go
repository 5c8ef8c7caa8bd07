package gateway

import (
	"context"
	"errors"
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

	"github.com/sluicebus/sluice/gateway/internal/admit"
	"github.com/sluicebus/sluice/internal/status"
	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// heartbeatSubject carries gateway heartbeats; the payload is the gateway's
// id. A hello asks every gateway for a heartbeat at once, so a gateway that
// starts knows its peers before its first refill.
const (
	heartbeatSubject = "sluice.gateway.heartbeat"
	helloSubject     = "sluice.gateway.hello"
	// helloWait is how long a starting gateway listens for answers.
	helloWait = 200 * time.Millisecond
	// maxPeers bounds the other gateways heard from that share admission:
	// heartbeats from more are ignored, so that a flood of made-up ids
	// can shrink no gateway's share below 1/(maxPeers+1).
	maxPeers = 64
)

// validGatewayID reports whether id has the shape of a gateway's id (a
// nuid: nuid.Next's fixed length, base-62 digits). Heartbeats are plain bus
// messages: anything else is not from a gateway.
func validGatewayID(id []byte) bool {
	if len(id) != gatewayIDLen {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// gatewayIDLen is the length of a gateway's id (see newAdmission).
var gatewayIDLen = len(nuid.Next())

// topicAdmission is one topic's admission state at this gateway.
type topicAdmission struct {
	mu     sync.Mutex
	credit admit.Admission
	drain  *admit.Drain
	// Totals admitted, so a refill can count what was admitted while the
	// bus was being read; outstanding: admitted, fate not yet known.
	takenMsgs, takenBytes             int64
	outstandingMsgs, outstandingBytes int64
	maxMsgs                           int64
	free                              int64 // free messages at the last reading
	// byTenant counts what each tenant with an admission share took since
	// the last refill.
	byTenant map[string]int64
	alive    int // gateways sharing the topic at the last reading
	// The last reading of the topic on the bus: when it succeeded, and the
	// error of any later failed one. Readiness is judged from these.
	readAt  time.Time
	readErr error
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
	// loggedAt: when an ignored heartbeat was last logged, by reason.
	loggedAt map[string]time.Time

	gateways atomic.Int64
	// ignored counts heartbeats not taken, by reason: malformed (not a
	// gateway's id) or peers_full (maxPeers others heard from already).
	ignored func(reason string)
}

// newAdmission: ignored counts heartbeats not taken, by reason.
func newAdmission(cfg Config, nc *nats.Conn, js jetstream.JetStream, log *zap.Logger, ignored func(reason string)) *admission {
	a := &admission{cfg: cfg, nc: nc, js: js, log: log, id: nuid.Next(),
		topics: map[string]*topicAdmission{}, seen: map[string]time.Time{}, ignored: ignored}
	for name, t := range cfg.Topics {
		a.topics[name] = &topicAdmission{drain: admit.NewDrain(2 * time.Second), maxMsgs: t.MaxMessages, alive: 1}
	}
	return a
}

// run sends heartbeats, listens to the other gateways' and refills credit
// until ctx ends.
func (a *admission) run(ctx context.Context) error {
	sub, err := a.nc.Subscribe(heartbeatSubject, func(m *nats.Msg) { a.heard(m.Data, time.Now()) })
	if err != nil {
		return fmt.Errorf("gateway heartbeats: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	hello, err := a.nc.Subscribe(helloSubject, func(m *nats.Msg) {
		if validGatewayID(m.Data) && string(m.Data) != a.id {
			a.heartbeat()
		}
	})
	if err != nil {
		return fmt.Errorf("gateway heartbeats: %w", err)
	}
	defer func() { _ = hello.Unsubscribe() }()
	beat := time.NewTicker(a.cfg.HeartbeatInterval)
	defer beat.Stop()
	refill := time.NewTicker(a.cfg.AdmissionRefresh)
	defer refill.Stop()
	a.heartbeat()
	_ = a.nc.Publish(helloSubject, []byte(a.id))
	select { // hear the peers before taking a share as if alone
	case <-time.After(min(helloWait, a.cfg.HeartbeatInterval)):
	case <-ctx.Done():
		return nil
	}
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

// heard takes a heartbeat: a gateway with id is alive at now. A heartbeat
// whose id is not a gateway's, or from a new gateway once maxPeers others
// are alive, is ignored and counted; the first of each kind in a heartbeat
// interval is logged.
func (a *admission) heard(id []byte, now time.Time) {
	reason := ""
	a.mu.Lock()
	switch _, known := a.seen[string(id)]; {
	case !validGatewayID(id):
		reason = "malformed"
	case known:
		a.seen[string(id)] = now
	case a.peers(now) >= maxPeers:
		reason = "peers_full"
	default:
		a.seen[string(id)] = now
	}
	logIt := reason != "" && now.Sub(a.loggedAt[reason]) >= a.cfg.HeartbeatInterval
	if logIt {
		if a.loggedAt == nil {
			a.loggedAt = map[string]time.Time{}
		}
		a.loggedAt[reason] = now
	}
	a.mu.Unlock()
	if reason == "" {
		return
	}
	a.ignored(reason)
	if logIt {
		a.log.Warn("gateway heartbeat ignored: is something other than a gateway publishing on "+heartbeatSubject+"?",
			zap.String("reason", reason), zap.Int("max_peers", maxPeers), zap.Int("id_bytes", len(id)))
	}
}

// peers counts the other gateways alive at now, forgetting those silent
// for three heartbeat intervals. Called with a.mu held.
func (a *admission) peers(now time.Time) int {
	n := 0
	for id, at := range a.seen {
		switch {
		case id == a.id:
		case now.Sub(at) > 3*a.cfg.HeartbeatInterval:
			delete(a.seen, id)
		default:
			n++
		}
	}
	return n
}

func (a *admission) heartbeat() {
	a.mu.Lock()
	a.seen[a.id] = time.Now() // this gateway is alive even when the bus is not
	a.mu.Unlock()
	_ = a.nc.Publish(heartbeatSubject, []byte(a.id))
}

// alive counts gateways heard from within three heartbeat intervals
// (forgetting the others) and returns this gateway's rank among them by id.
func (a *admission) alive(now time.Time) (n, rank int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen[a.id] = now
	a.peers(now)
	for id := range a.seen {
		if id < a.id {
			rank++
		}
	}
	return len(a.seen), rank
}

// refresh reads every topic's state and refills this gateway's share.
func (a *admission) refresh(ctx context.Context) {
	if !a.nc.IsConnected() {
		return // keep the last credit; publishes will be refused by the bus check
	}
	now := time.Now()
	alive, rank := a.alive(now)
	a.gateways.Store(int64(alive))
	for name, ta := range a.topics {
		ta.mu.Lock()
		msgs0, bytes0 := ta.takenMsgs, ta.takenBytes
		heldMsgs, heldBytes := ta.outstandingMsgs, ta.outstandingBytes
		ta.mu.Unlock()
		// Bounded by a few refresh intervals: a slow read must not keep an
		// old credit in force much longer than one refresh.
		rctx, cancel := context.WithTimeout(ctx, min(max(4*a.cfg.AdmissionRefresh, 200*time.Millisecond), 2*time.Second))
		s, err := a.js.Stream(rctx, sluice.StreamName(name))
		cancel()
		if err != nil {
			a.log.Debug("admission: reading topic", zap.String("topic", name), zap.Error(err))
			ta.mu.Lock()
			ta.readErr = err
			ta.mu.Unlock()
			continue
		}
		info := s.CachedInfo()
		free := info.Config.MaxMsgs - int64(info.State.Msgs)
		freeBytes := info.Config.MaxBytes - int64(info.State.Bytes)
		ta.mu.Lock()
		// Held: outstanding when the read began (maybe not yet stored) plus
		// admitted while it ran.
		ta.credit.Refill(admit.Share(free, alive, rank), admit.Share(freeBytes, alive, rank),
			heldMsgs+ta.takenMsgs-msgs0, heldBytes+ta.takenBytes-bytes0)
		clear(ta.byTenant)
		ta.drain.Observe(now, info.State.LastSeq, info.State.Msgs)
		ta.maxMsgs, ta.free, ta.alive = info.Config.MaxMsgs, free, alive
		ta.readAt, ta.readErr = now, nil
		ta.mu.Unlock()
	}
}

// readStatus is "ok" when topic was read on the bus recently, else why not.
func (a *admission) readStatus(topic string, now time.Time) string {
	ta := a.topics[topic]
	ta.mu.Lock()
	defer ta.mu.Unlock()
	switch {
	case ta.readErr != nil:
		return ta.readErr.Error()
	case ta.readAt.IsZero():
		return "not read on the bus yet"
	case now.Sub(ta.readAt) > max(4*a.cfg.AdmissionRefresh, 2*time.Second):
		return "last read on the bus " + now.Sub(ta.readAt).Round(time.Millisecond).String() + " ago"
	}
	return "ok"
}

// take admits one message of size bytes to topic, or says how long to
// wait. A tenant with an admission share (t nil: none) takes at most that
// share of each refill's credit; over it, shareFull and the wait until the
// next refill.
//
// h, when not nil, gets the topic's RateLimit headers as the decision
// left them, under the same lock: a refill between the two must not
// advertise credit beside a refusal.
func (a *admission) take(topic string, size int64, t *tenant.Tenant, h http.Header) (ok bool, wait time.Duration, shareFull bool) {
	ta := a.topics[topic]
	ta.mu.Lock()
	defer ta.mu.Unlock()
	if h != nil {
		defer a.headersLocked(h, ta)
	}
	limited := t != nil && t.Limited() && ta.credit.Refilled()
	if limited && ta.byTenant[t.Name] >= admit.TenantShare(t.AdmissionShare, ta.credit.Share()) {
		return false, a.shedRetryAfter(), true
	}
	if ta.credit.Take(size) {
		ta.takenMsgs++
		ta.takenBytes += size
		ta.outstandingMsgs++
		ta.outstandingBytes += size
		if limited {
			if ta.byTenant == nil {
				ta.byTenant = map[string]int64{}
			}
			ta.byTenant[t.Name]++
		}
		return true, 0, false
	}
	return false, a.retryAfterLocked(ta), false
}

// finish settles a message take admitted, from how its request ended:
// stored or unknown, the credit stays spent (the bus will show it);
// refused by the stream as full, the credit is stale and nothing more is
// admitted until the next refill; otherwise it certainly was not stored
// and its credit comes back.
func (a *admission) finish(topic string, size int64, err error) {
	ta := a.topics[topic]
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.outstandingMsgs--
	ta.outstandingBytes -= size
	switch {
	case err == nil, errors.Is(err, errOutcomeUnknown):
	case errors.Is(err, errTopicFull), errors.Is(err, errStreamBusy):
		ta.credit.Exhaust()
	default:
		ta.credit.Return(size)
	}
}

// resize corrects the bytes an admitted message holds from charged to size
// (see settlement.chargeBody).
func (a *admission) resize(topic string, charged, size int64) {
	ta := a.topics[topic]
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.takenBytes += size - charged
	ta.outstandingBytes += size - charged
}

// exhausted reports whether topic has no admission credit left at all.
func (a *admission) exhausted(topic string) (bool, time.Duration) {
	ta := a.topics[topic]
	ta.mu.Lock()
	defer ta.mu.Unlock()
	if ta.credit.Refilled() && ta.credit.Remaining() == 0 {
		return true, a.retryAfterLocked(ta)
	}
	return false, 0
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
// gateway), clamped, then jittered up to twice as long (never past the max).
func (a *admission) retryAfterLocked(ta *topicAdmission) time.Duration {
	return a.wait(ta, time.Now(), rand.Float64())
}

// wait is the time until the topic has room for every gateway again: the
// minimum when it has room now. It comes from the rate the families drain
// the topic at while messages wait (not from an idle average) or, with no
// such rate known yet, from how long the topic has been stalled at now.
func (a *admission) wait(ta *topicAdmission, now time.Time, jitter float64) time.Duration {
	return admit.Wait(admit.Deficit(ta.free, ta.maxMsgs, ta.alive), ta.drain.Rate(), ta.drain.Stalled(now),
		jitter, a.cfg.RetryAfterMin, a.cfg.RetryAfterMax)
}

// shedRetryAfter is the Retry-After of a gateway-side shed (503): the
// bounds there free up in milliseconds, so the minimum, jittered.
func (a *admission) shedRetryAfter() time.Duration {
	return admit.Wait(0, 0, 0, rand.Float64(), a.cfg.RetryAfterMin, a.cfg.RetryAfterMax)
}

// setHeaders advertises the topic's admission credit (IETF httpapi
// ratelimit-headers draft): the share per refill and what is left of it.
func (a *admission) setHeaders(h http.Header, topic string) {
	ta := a.topics[topic]
	ta.mu.Lock()
	defer ta.mu.Unlock()
	a.headersLocked(h, ta)
}

// headersLocked sets setHeaders' headers; called with ta.mu held.
func (a *admission) headersLocked(h http.Header, ta *topicAdmission) {
	if !ta.credit.Refilled() {
		return
	}
	share, left := ta.credit.Share(), ta.credit.Remaining()
	// t: when the credit comes back. A refill happens every window, but
	// with nothing left it brings credit only once the topic has drained.
	window := int(math.Ceil(a.cfg.AdmissionRefresh.Seconds()))
	reset := window
	if left == 0 {
		reset = max(window, int(math.Ceil(a.wait(ta, time.Now(), 0).Seconds())))
	}
	h.Set("RateLimit-Policy", fmt.Sprintf(`"topic";q=%d;w=%d`, share, window))
	h.Set("RateLimit", fmt.Sprintf(`"topic";r=%d;t=%d`, left, reset))
}

// state is one topic's admission at this gateway, for /v1/topics and
// /v1/status.
func (a *admission) state(topic string) status.Admission {
	ta := a.topics[topic]
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return status.Admission{
		Share: ta.credit.Share(), Remaining: ta.credit.Remaining(), Gateways: ta.alive,
		DrainRate:  math.Round(ta.drain.Rate()*10) / 10,
		RetryAfter: a.wait(ta, time.Now(), 0).Seconds(),
	}
}
