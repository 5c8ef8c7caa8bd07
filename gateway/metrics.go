package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's collectors, registered on the Registerer New
// was given.
type metrics struct {
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	publishDuration *prometheus.HistogramVec
	messages        *prometheus.CounterVec
	refusals        *prometheus.CounterVec
	redriven        *prometheus.CounterVec
	commitSize      *prometheus.HistogramVec
	commitFallbacks *prometheus.CounterVec
	authFailures    *prometheus.CounterVec
	tenantRefusals  *prometheus.CounterVec
	// heartbeatsIgnored: reason is malformed or peers_full.
	heartbeatsIgnored *prometheus.CounterVec
	// protocolErrors: kind is http2 or tls (serverLog).
	protocolErrors *prometheus.CounterVec
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
		publishDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_gateway_publish_duration_seconds",
			Help:    "Time from publish to the bus's durable ack (a group commit counts once).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}, []string{"topic"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_messages_total",
			Help: "Messages by topic and outcome: accepted, duplicate, rejected (4xx), refused_full (429), unavailable or unknown (503).",
		}, []string{"topic", "outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_refusals_total",
			Help: "429 and 503 answers by topic and reason: in_flight, body_bytes, publish_window, client_rate, tenant_rate, tenant_share, read_rate, admission, topic_full, stream_busy, family_missing, family_unknown, bus-unavailable, publish-outcome-unknown.",
		}, []string{"topic", "reason"}),
		redriven: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_dead_letters_redriven_total",
			Help: "Dead letters redriven to their family by topic and family.",
		}, []string{"topic", "family"}),
		commitSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_gateway_commit_batch_messages",
			Help:    "Messages stored by one group commit (one atomic batch; smaller commits are published one by one).",
			Buckets: prometheus.ExponentialBuckets(2, 2, 10),
		}, []string{"topic"}),
		commitFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_commit_fallbacks_total",
			Help: "Group commits refused as a whole and published again message by message, by JetStream error code (10201: a key already stored).",
		}, []string{"topic", "code"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_auth_failures_total",
			Help: "Requests refused by authentication (401: missing, invalid, expired) or by the tenant's grants (403: forbidden).",
		}, []string{"reason"}),
		tenantRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_tenant_refusals_total",
			Help: "Messages refused by a tenant's quota (429) by tenant and reason: tenant_rate, tenant_share.",
		}, []string{"tenant", "reason"}),
		heartbeatsIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_heartbeats_ignored_total",
			Help: "Gateway heartbeats ignored by reason: malformed (not a gateway's id: something else publishes on sluice.gateway.heartbeat) or peers_full (64 other gateways alive already).",
		}, []string{"reason"}),
		protocolErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_protocol_errors_total",
			Help: "Connections a client broke the protocol on, by kind: http2 (a bad preface, frame or stream, a GOAWAY, a missed SETTINGS or PING) or tls (a failed handshake); each is logged at debug.",
		}, []string{"kind"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.publishDuration, m.messages, m.refusals, m.redriven,
			m.commitSize, m.commitFallbacks, m.authFailures, m.tenantRefusals, m.heartbeatsIgnored, m.protocolErrors} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// Known label values, each counter's series exist at 0 from the start
// (Prometheus's advice: a series that appears with its first event hides
// that event from rate() and increase(), and from alerts on absence).
var (
	// messageOutcomes are outcomeOf's values.
	messageOutcomes = []string{"accepted", "duplicate", "rejected", "refused_full", "unavailable", "unknown"}
	// topicRefusals are the reasons a request about a topic is refused
	// for (refuse's reasons, and the problem types of 503s without one).
	topicRefusals = []string{"in_flight", "body_bytes", "publish_window", "client_rate", "tenant_rate", "tenant_share", "read_rate",
		"admission", "topic_full", "stream_busy", "family_missing", "family_unknown", "bus-unavailable", "publish-outcome-unknown"}
	// gatewayRefusals are those of requests about no topic (topic "").
	gatewayRefusals = []string{"in_flight", "read_rate", "bus-unavailable"}
	authReasons     = []string{"missing", "invalid", "expired", "forbidden"}
	tenantReasons   = []string{"tenant_rate", "tenant_share"}
	heartbeatIgnore = []string{"malformed", "peers_full"}
	// keyStoredCode is JetStream's error code for a key already stored,
	// the documented cause of a commit's fallback.
	keyStoredCode = "10201"
)

// initialise creates every known series of cfg's topics, families and
// tenants at 0.
func (m *metrics) initialise(cfg Config, tenants []string) {
	for name, t := range cfg.Topics {
		for _, o := range messageOutcomes {
			m.messages.WithLabelValues(name, o)
		}
		for _, r := range topicRefusals {
			m.refusals.WithLabelValues(name, r)
		}
		for _, f := range t.FamilyNames() {
			m.redriven.WithLabelValues(name, f)
		}
		m.commitFallbacks.WithLabelValues(name, keyStoredCode)
	}
	for _, r := range gatewayRefusals {
		m.refusals.WithLabelValues("", r)
	}
	for _, r := range authReasons {
		m.authFailures.WithLabelValues(r)
	}
	for _, tn := range tenants {
		for _, r := range tenantReasons {
			m.tenantRefusals.WithLabelValues(tn, r)
		}
	}
	for _, r := range heartbeatIgnore {
		m.heartbeatsIgnored.WithLabelValues(r)
	}
	for _, k := range []string{"http2", "tls"} {
		m.protocolErrors.WithLabelValues(k)
	}
}

// commitMetrics are the collectors a group commit counts on.
type commitMetrics struct {
	publishDuration, commitSize *prometheus.HistogramVec
	commitFallbacks, messages   *prometheus.CounterVec
}

// commit is what a committer counts on of m.
func (m *metrics) commit() commitMetrics {
	return commitMetrics{publishDuration: m.publishDuration, commitSize: m.commitSize, commitFallbacks: m.commitFallbacks, messages: m.messages}
}

// registerState registers gauges read at scrape time for every bound the
// gateway holds: its use and its limit.
func (m *metrics) registerState(reg prometheus.Registerer, g *Gateway) error {
	if reg == nil {
		return nil
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	cs := []prometheus.Collector{
		gauge("sluice_gateway_requests_in_flight", "API requests being served, counted against max_in_flight.",
			func() float64 { return float64(g.limits.inFlight.Load()) }),
		gauge("sluice_gateway_in_flight_limit", "Requests this gateway serves at once (max_in_flight).",
			func() float64 { return float64(g.limits.maxInFlight) }),
		gauge("sluice_gateway_body_bytes_in_flight", "Request body bytes held now.",
			func() float64 { return float64(g.limits.body.Load()) }),
		gauge("sluice_gateway_body_bytes_limit", "Request body bytes held at most (max_body_bytes_in_flight).",
			func() float64 { return float64(g.limits.maxBody) }),
		gauge("sluice_gateway_publish_window_used", "Publishes awaiting the bus's ack.",
			func() float64 { return float64(len(g.limits.window)) }),
		gauge("sluice_gateway_publish_window_limit", "Publishes awaiting the bus's ack at most (publish_window).",
			func() float64 { return float64(cap(g.limits.window)) }),
		gauge("sluice_gateway_gateways_alive", "Gateways sharing admission credit, this one included.",
			func() float64 { return float64(g.adm.gateways.Load()) }),
		gauge("sluice_gateway_clock_offset_seconds", "How far this gateway's wall clock is ahead of the bus's (negative: behind), estimated within half a round trip from the brokers' answers. Key expiry, alarm and status times use the bus's clock; alert past a second: the host's clock is not kept (NTP).",
			func() float64 { return g.clock.Offset().Seconds() }),
		admissionCollector{g.adm},
	}
	if g.clients != nil {
		cs = append(cs, gauge("sluice_gateway_clients_tracked", "Clients with a rate bucket (max_clients at most).",
			func() float64 { return float64(g.clients.size()) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

var (
	descAdmissionShare = prometheus.NewDesc("sluice_gateway_admission_share",
		"This gateway's admission credit per refill: its share of the topic's free capacity.", []string{"topic"}, nil)
	descAdmissionRemaining = prometheus.NewDesc("sluice_gateway_admission_remaining",
		"Admission credit left until the next refill.", []string{"topic"}, nil)
	descDrainRate = prometheus.NewDesc("sluice_gateway_topic_drain_rate",
		"Messages per second leaving the topic (acked by every family), as this gateway measures it.", []string{"topic"}, nil)
)

type admissionCollector struct{ a *admission }

func (c admissionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAdmissionShare
	ch <- descAdmissionRemaining
	ch <- descDrainRate
}

func (c admissionCollector) Collect(ch chan<- prometheus.Metric) {
	for name := range c.a.topics {
		st := c.a.state(name)
		ch <- prometheus.MustNewConstMetric(descAdmissionShare, prometheus.GaugeValue, float64(st.Share), name)
		ch <- prometheus.MustNewConstMetric(descAdmissionRemaining, prometheus.GaugeValue, float64(st.Remaining), name)
		ch <- prometheus.MustNewConstMetric(descDrainRate, prometheus.GaugeValue, st.DrainRate, name)
	}
}
