package gateway

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sluicebus/sluice/internal/busstats"
)

// topicViews holds the last reading of each topic's state on the bus, so
// that the topic views (GET /v1/topics, /v1/topics/{topic}, /v1/status)
// cost the bus at most one read per topic per maxAge, however many clients
// ask. The alarm watcher reads every topic each alarms.interval and stores
// what it read; a request reads the bus only when the reading is older than
// maxAge, or this gateway changed the topic since (a publish, redrive or
// purge here is seen by the next view here).
type topicViews struct {
	maxAge time.Duration
	topics map[string]*topicView // fixed at construction: declared topics only
}

// topicView is one topic's last reading.
type topicView struct {
	read chan struct{} // one bus read of the topic at a time; others wait for it (or their deadline)

	mu  sync.Mutex
	st  busstats.Topic
	at  time.Time
	gen uint64 // bumped by every change made here
	of  uint64 // the gen the reading was begun at
}

func newTopicViews(names []string, maxAge time.Duration) *topicViews {
	v := &topicViews{maxAge: maxAge, topics: make(map[string]*topicView, len(names))}
	for _, n := range names {
		v.topics[n] = &topicView{read: make(chan struct{}, 1)}
	}
	return v
}

// changed marks topic's reading stale: this gateway changed the topic.
func (v *topicViews) changed(topic string) {
	if e := v.topics[topic]; e != nil {
		e.mu.Lock()
		e.gen++
		e.mu.Unlock()
	}
}

// begin is the generation a reading begun now belongs to (pass it to store).
func (v *topicViews) begin(topic string) uint64 {
	e := v.topics[topic]
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.gen
}

// store keeps a reading begun at gen, unless a later one is kept already.
func (v *topicViews) store(topic string, gen uint64, st busstats.Topic, now time.Time) {
	e := v.topics[topic]
	e.mu.Lock()
	defer e.mu.Unlock()
	if gen < e.of || now.Before(e.at) {
		return
	}
	e.st, e.at, e.of = st, now, gen
}

// fresh is the kept reading if it is younger than maxAge and no change was
// made here since it was begun.
func (v *topicViews) fresh(topic string, now time.Time) (busstats.Topic, bool) {
	e := v.topics[topic]
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.at.IsZero() || e.of != e.gen || now.Sub(e.at) >= v.maxAge {
		return busstats.Topic{}, false
	}
	return e.st, true
}

// get is topic's fresh reading, or a new one from read (one reader at a
// time per topic: the others get its reading).
func (v *topicViews) get(ctx context.Context, topic string, read func(context.Context) (busstats.Topic, error)) (busstats.Topic, error) {
	if st, ok := v.fresh(topic, time.Now()); ok {
		return st, nil
	}
	e := v.topics[topic]
	select {
	case e.read <- struct{}{}:
		defer func() { <-e.read }()
	case <-ctx.Done():
		return busstats.Topic{}, fmt.Errorf("%w: reading topic state: %w", errBusUnavailable, ctx.Err())
	}
	if st, ok := v.fresh(topic, time.Now()); ok {
		return st, nil // read by whoever held the lock
	}
	gen := v.begin(topic)
	st, err := read(ctx)
	if err != nil {
		return busstats.Topic{}, err
	}
	v.store(topic, gen, st, time.Now())
	return st, nil
}

// viewMaxAge: a running watcher keeps every reading fresh (it reads each
// interval); without it, or with a long interval, a view is at most a few
// seconds old.
func viewMaxAge(interval time.Duration) time.Duration {
	return min(2*interval, 5*time.Second)
}
