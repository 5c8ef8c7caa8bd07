package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	inFlight        prometheus.Gauge
	publishDuration *prometheus.HistogramVec
	messages        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_gateway_request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_gateway_requests_in_flight",
			Help: "HTTP requests being served now.",
		}),
		publishDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_gateway_publish_duration_seconds",
			Help:    "Time from publish to the bus's durable ack (a batch counts once).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}, []string{"topic"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_messages_total",
			Help: "Messages by topic and outcome: accepted, duplicate, rejected (4xx), refused_full (429), unavailable or unknown (503).",
		}, []string{"topic", "outcome"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.inFlight, m.publishDuration, m.messages} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
