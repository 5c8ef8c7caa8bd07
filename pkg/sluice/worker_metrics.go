package sluice

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// workerMetrics are one worker's view of the shared worker metrics.
type workerMetrics struct {
	messages       *prometheus.CounterVec // curried with topic, family
	redeliveries   prometheus.Counter
	handlerSeconds prometheus.Observer
	creditLimit    prometheus.Gauge
	creditUsed     prometheus.Gauge
	clockOffset    prometheus.Gauge
}

func (m *workerMetrics) outcome(o string) { m.messages.WithLabelValues(o).Inc() }

// workerOutcomes are the outcome label's values of
// sluice_worker_messages_total.
var workerOutcomes = []string{"acked", "retried", "dead_lettered", "dead_letter_failed", "dead_letter_refused", "handed_back"}

// newWorkerMetrics registers the worker metrics on reg, or reuses those a
// worker registered before; reg nil gives unregistered metrics.
func newWorkerMetrics(reg prometheus.Registerer, topic, family string) *workerMetrics {
	labels := []string{"topic", "family"}
	messages := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_worker_messages_total",
		Help: "Messages handled by topic, family and outcome: acked, retried, dead_lettered, dead_letter_failed (a dead letter not stored yet: retried in place), dead_letter_refused (a dead letter the dead-letter stream refused for good: the message stays in its topic and is tried again later), handed_back.",
	}, append(labels, "outcome")))
	redeliveries := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_worker_redeliveries_total",
		Help: "Deliveries that were not a message's first attempt.",
	}, labels))
	handler := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_worker_handler_duration_seconds",
		Help:    "Handler run time.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, labels))
	limit := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_worker_credit_limit",
		Help: "Credit of the running workers: messages they may hold at once.",
	}, labels))
	used := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_worker_credit_used",
		Help: "Credit in use: messages asked for or being handled.",
	}, labels))
	offset := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_worker_clock_offset_seconds",
		Help: "How far the worker's wall clock is ahead of the bus's (negative: behind), as of its last reading of the bus's clock (every minute, within half a round trip). Retry deadlines and dead-letter times use the bus's clock; alert past a second: the host's clock is not kept (NTP).",
	}, labels))
	l := prometheus.Labels{"topic": topic, "family": family}
	curried := messages.MustCurryWith(l)
	for _, o := range workerOutcomes {
		curried.WithLabelValues(o) // 0 from the start, so rate() sees the first of each
	}
	return &workerMetrics{
		messages:       curried,
		redeliveries:   redeliveries.With(l),
		handlerSeconds: handler.With(l),
		creditLimit:    limit.With(l),
		creditUsed:     used.With(l),
		clockOffset:    offset.With(l),
	}
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a different collector under a Sluice metric name: a programming error
	}
	return c
}
