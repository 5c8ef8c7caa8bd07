package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/busstats"
	"github.com/sluicebus/sluice/internal/topology"
)

// watcher evaluates the gateway's alarm conditions every alarms.interval
// from the topics' state on the bus. It runs in the control loop.
type watcher struct {
	g   *Gateway
	cfg alarm.Config
	now func() time.Time

	families map[string]*familyWatch // topic/family
	replicas map[string][]string     // topic -> replica subjects raised or cleared last time
	ingest   map[string]uint64       // topic -> last seq at the previous evaluation
	rate     float64                 // smoothed cluster ingest, messages/s
	last     time.Time
}

// familyWatch is what the watcher remembers of a family between evaluations.
type familyWatch struct {
	seen        bool
	deliveries  uint64
	delivered   uint64
	deadLetters uint64
	// stuckSince: messages have waited with no delivery since then.
	stuckSince time.Time
	// The retry rate's sample: deliveries and first deliveries since winStart.
	winStart                time.Time
	winDeliveries, winFirst uint64
}

func newWatcher(g *Gateway) *watcher {
	return &watcher{g: g, cfg: g.cfg.Alarms, now: time.Now, families: map[string]*familyWatch{}, ingest: map[string]uint64{},
		replicas: map[string][]string{}}
}

// run evaluates until ctx ends.
func (w *watcher) run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		w.evaluate(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// evaluate reads every topic once and raises or clears each condition.
func (w *watcher) evaluate(ctx context.Context) {
	g, m := w.g, w.g.alarms
	now := w.now()
	defer m.Tick()
	// Refusal alarms are raised by the refusals themselves: each
	// evaluation reports them clear, so they clear a hold time after the
	// last refusal.
	m.Clear(alarm.Shedding, g.node)
	for name := range g.cfg.Topics {
		m.Clear(alarm.TopicThrottled, name)
	}
	if !g.nc.IsConnected() {
		g.raiseBusUnreachable()
		return // nothing else can be read
	}
	m.Clear(alarm.BusUnreachable, g.node)
	var ingested uint64
	complete := true
	for _, name := range topology.Names(g.cfg.Topics) {
		t := g.cfg.Topics[name]
		rctx, cancel := context.WithTimeout(ctx, statsTimeout)
		gen := g.views.begin(name)
		st, err := busstats.Read(rctx, g.js, t)
		cancel()
		if err == nil {
			g.views.store(name, gen, st, time.Now()) // the topic views serve it
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// Connected, yet the topic's stream does not answer in time:
			// no leader. (A topic not yet provisioned is /readyz's
			// business, not an alarm.)
			if noAnswer(err) {
				m.Raise(alarm.NoQuorum, name, "reading the topic's stream: "+err.Error())
			}
			delete(w.ingest, name) // a rate across the gap would spike
			complete = false
			continue
		}
		w.topic(t, st, now)
		rctx, cancel = context.WithTimeout(ctx, statsTimeout)
		g.raiseFamiliesMissing(name, g.commits[name].interest.fresh(rctx))
		cancel()
		if prev, ok := w.ingest[name]; ok && st.LastSeq >= prev {
			ingested += st.LastSeq - prev
		} else if !ok {
			complete = false
		}
		w.ingest[name] = st.LastSeq
	}
	w.blueprint(ingested, complete, now)
}

// topic evaluates one topic's conditions.
func (w *watcher) topic(t topology.Topic, st busstats.Topic, now time.Time) {
	m := w.g.alarms
	var replicas []string
	if c := st.Cluster; c != nil {
		m.Set(c.Leader == "", alarm.NoQuorum, t.Name, "the topic's stream has no leader")
		for _, r := range c.Replicas {
			subject := t.Name + "/" + r.Name
			replicas = append(replicas, subject)
			m.Set(r.Lagging(uint64(w.cfg.ReplicaLagMax)), alarm.ReplicaLagging, subject,
				fmt.Sprintf("replica %s: current %v, offline %v, %d behind, last seen %s ago", r.Name, r.Current, r.Offline, r.Lag, r.Active))
		}
	} else {
		m.Clear(alarm.NoQuorum, t.Name)
	}
	// A replica that became the leader or left the topic is no longer
	// listed: its alarm clears.
	for _, subject := range w.replicas[t.Name] {
		if !slices.Contains(replicas, subject) {
			m.Clear(alarm.ReplicaLagging, subject)
		}
	}
	w.replicas[t.Name] = replicas
	for _, f := range st.Families {
		subject := t.Name + "/" + f.Name
		fw := w.families[subject]
		if fw == nil {
			fw = &familyWatch{}
			w.families[subject] = fw
		}
		backlog := f.Pending + uint64(f.InFlight)
		lagMax := w.cfg.LagMax * float64(t.MaxMessages)
		m.Set(float64(backlog) > lagMax, alarm.ConsumerLag, subject,
			fmt.Sprintf("%d messages not yet handled (pending %d, in flight %d), over %.0f", backlog, f.Pending, f.InFlight, lagMax))
		// Starved: messages wait for the family, and nothing has been
		// delivered to it for starved_after: its workers offer no credit,
		// or hold all of it without finishing.
		// Progress is a message delivered for the first time: redeliveries
		// of messages that are never finished are not.
		switch {
		case f.Pending == 0:
			fw.stuckSince = time.Time{}
		case !fw.seen || f.Delivered != fw.delivered || fw.stuckSince.IsZero():
			fw.stuckSince = now
		}
		starved := !fw.stuckSince.IsZero() && now.Sub(fw.stuckSince) >= w.cfg.StarvedAfter
		m.Set(starved, alarm.FamilyStarved, subject, fmt.Sprintf("%d messages wait, none delivered for %s (in flight %d of credit %d, %d pull requests waiting)",
			f.Pending, now.Sub(fw.stuckSince).Round(time.Second), f.InFlight, f.Credit, f.Waiting))
		if fw.seen {
			m.Set(f.DeadLetters > fw.deadLetters, alarm.DeadLettersGrowing, subject,
				fmt.Sprintf("dead letters %d, up from %d", f.DeadLetters, fw.deadLetters))
			// Deliveries counts redeliveries too; the delivered sequence
			// moves once per message. The share is judged over a sample of
			// at least minRetrySample deliveries, or what retryWindow saw.
			if f.Deliveries >= fw.deliveries && f.Delivered >= fw.delivered {
				d := f.Deliveries - fw.deliveries
				fw.winDeliveries += d
				fw.winFirst += min(d, f.Delivered-fw.delivered)
			}
			if fw.winStart.IsZero() {
				fw.winStart = now
			}
			switch {
			case fw.winDeliveries >= minRetrySample:
				share := float64(fw.winDeliveries-fw.winFirst) / float64(fw.winDeliveries)
				m.Set(share > w.cfg.RetryBudget, alarm.RetryRate, subject, fmt.Sprintf("%.0f%% of %d deliveries in %s were retries, budget %.0f%%",
					share*100, fw.winDeliveries, now.Sub(fw.winStart).Round(time.Millisecond), w.cfg.RetryBudget*100))
				fw.winStart, fw.winDeliveries, fw.winFirst = now, 0, 0
			case now.Sub(fw.winStart) >= retryWindow:
				m.Clear(alarm.RetryRate, subject) // too few deliveries to judge
				fw.winStart, fw.winDeliveries, fw.winFirst = now, 0, 0
			}
		}
		fw.seen, fw.deliveries, fw.delivered, fw.deadLetters = true, f.Deliveries, f.Delivered, f.DeadLetters
	}
}

// noAnswer: the bus did not answer for the stream in time, or said it
// cannot (503): the stream has no leader.
func noAnswer(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || (errors.As(err, &apiErr) && apiErr.Code == http.StatusServiceUnavailable)
}

// The retry rate is judged once a family has had minRetrySample
// deliveries; fewer in retryWindow say nothing, and clear it.
const (
	minRetrySample = 20
	retryWindow    = time.Minute
)

// blueprint compares the cluster's ingest (every topic's new messages,
// smoothed) with the planned rate.
func (w *watcher) blueprint(ingested uint64, complete bool, now time.Time) {
	defer func() { w.last = now }()
	if w.cfg.PlannedRate <= 0 || w.last.IsZero() || !complete {
		return
	}
	el := now.Sub(w.last).Seconds()
	if el <= 0 {
		return
	}
	const alpha = 0.3
	w.rate = alpha*float64(ingested)/el + (1-alpha)*w.rate
	w.g.alarms.Set(w.rate > w.cfg.PlannedRate, alarm.BlueprintExceeded, "cluster",
		fmt.Sprintf("ingest %.0f msg/s over the planned %.0f msg/s", w.rate, w.cfg.PlannedRate))
}
