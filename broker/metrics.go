package broker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/internal/busstats"
	"github.com/sluicebus/sluice/internal/topology"
)

// scrapeTimeout bounds the JetStream reads of one scrape.
const scrapeTimeout = 2 * time.Second

var (
	descTopicMessages = prometheus.NewDesc("sluice_topic_messages",
		"Messages stored in the topic (not yet acked by every family).", []string{"topic"}, nil)
	descTopicBytes = prometheus.NewDesc("sluice_topic_bytes",
		"Bytes stored in the topic.", []string{"topic"}, nil)
	descTopicMaxMessages = prometheus.NewDesc("sluice_topic_max_messages",
		"The topic's message bound (DiscardNew).", []string{"topic"}, nil)
	descTopicMaxBytes = prometheus.NewDesc("sluice_topic_max_bytes",
		"The topic's byte bound (DiscardNew).", []string{"topic"}, nil)
	descFamilyPending = prometheus.NewDesc("sluice_family_pending_messages",
		"Messages stored and not yet delivered to the family.", []string{"topic", "family"}, nil)
	descFamilyInFlight = prometheus.NewDesc("sluice_family_in_flight_messages",
		"Messages delivered to the family's workers and not yet acked.", []string{"topic", "family"}, nil)
	descFamilyCredit = prometheus.NewDesc("sluice_family_credit",
		"The family's credit (max ack pending).", []string{"topic", "family"}, nil)
	descFamilyRedelivered = prometheus.NewDesc("sluice_family_redelivered_messages",
		"In-flight messages delivered more than once.", []string{"topic", "family"}, nil)
	descDeadLetters = prometheus.NewDesc("sluice_dead_letters",
		"Messages in the family's dead-letter stream.", []string{"topic", "family"}, nil)
	descScrapeErrors = prometheus.NewDesc("sluice_topic_scrape_errors",
		"1 when the topic's state could not be read at this scrape.", []string{"topic"}, nil)
)

// collector reads topic and family state from JetStream at scrape time.
type collector struct {
	js     jetstream.JetStream
	topics map[string]topology.Topic
	log    *zap.Logger
}

func newCollector(js jetstream.JetStream, topics map[string]topology.Topic, log *zap.Logger) *collector {
	return &collector{js: js, topics: topics, log: log}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTopicMessages, descTopicBytes, descTopicMaxMessages,
		descTopicMaxBytes, descFamilyPending, descFamilyInFlight, descFamilyCredit,
		descFamilyRedelivered, descDeadLetters, descScrapeErrors} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, name := range topology.Names(c.topics) {
		st, err := busstats.Read(ctx, c.js, c.topics[name])
		if err != nil {
			c.log.Debug("scrape topic", zap.String("topic", name), zap.Error(err))
			gauge(descScrapeErrors, 1, name)
			continue
		}
		gauge(descScrapeErrors, 0, name)
		gauge(descTopicMessages, float64(st.Depth.Messages), name)
		gauge(descTopicBytes, float64(st.Depth.Bytes), name)
		gauge(descTopicMaxMessages, float64(st.Limits.MaxMessages), name)
		gauge(descTopicMaxBytes, float64(st.Limits.MaxBytes), name)
		for _, f := range st.Families {
			gauge(descFamilyPending, float64(f.Pending), name, f.Name)
			gauge(descFamilyInFlight, float64(f.InFlight), name, f.Name)
			gauge(descFamilyCredit, float64(f.Credit), name, f.Name)
			gauge(descFamilyRedelivered, float64(f.Redelivered), name, f.Name)
			gauge(descDeadLetters, float64(f.DeadLetters), name, f.Name)
		}
	}
}
