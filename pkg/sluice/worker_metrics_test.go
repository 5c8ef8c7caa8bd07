package sluice

import (
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestWorkerSeriesStartAtZero: a worker's series exist at 0 before its
// first message: every outcome of sluice_worker_messages_total for its
// topic and family, and its other series.
func TestWorkerSeriesStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newWorkerMetrics(reg, "orders", "billing")
	for _, name := range []string{"sluice_worker_redeliveries_total", "sluice_worker_handler_duration_seconds",
		"sluice_worker_credit_limit", "sluice_worker_credit_used", "sluice_worker_clock_offset_seconds"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 1 {
			t.Errorf("%s: %d series, %v", name, n, err)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "sluice_worker_messages_total"); err != nil || n != len(workerOutcomes) {
		t.Fatalf("sluice_worker_messages_total: %d series, want %d; %v", n, len(workerOutcomes), err)
	}
	for _, o := range workerOutcomes {
		if v := testutil.ToFloat64(m.messages.WithLabelValues(o)); v != 0 {
			t.Errorf("outcome %s = %v", o, v)
		}
	}
	// A second worker of the same family shares the series.
	newWorkerMetrics(reg, "orders", "billing").outcome("acked")
	if v := testutil.ToFloat64(m.messages.WithLabelValues("acked")); v != 1 {
		t.Errorf("acked = %v after one", v)
	}
}

// TestCloudEventAttributes: Message.CloudEvent gives a stored event's
// attributes back by their own names, and nil for other messages.
func TestCloudEventAttributes(t *testing.T) {
	h := nats.Header{}
	for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "A-1", "Ce-Source": "/shop", "Ce-Type": "order.placed",
		"Ce-Tenantid": "acme", "Customer": "c42"} {
		h.Set(HeaderMetaPrefix+http.CanonicalHeaderKey(k), v)
	}
	h.Set(HeaderContentType, "application/json")
	m := &Message{Header: h}
	a := m.CloudEvent()
	want := map[string]string{"specversion": "1.0", "id": "A-1", "source": "/shop", "type": "order.placed", "tenantid": "acme",
		"datacontenttype": "application/json"}
	if len(a) != len(want) {
		t.Fatalf("attributes %v, want %v", a, want)
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("%s = %q, want %q", k, a[k], v)
		}
	}
	if m.Meta("ce-id") != "A-1" {
		t.Errorf("Meta(ce-id) = %q", m.Meta("ce-id"))
	}
	if a := (&Message{Header: nats.Header{HeaderMetaPrefix + "Customer": {"c42"}}}).CloudEvent(); a != nil {
		t.Errorf("not an event: %v", a)
	}
}

// TestDeadLetterMetaValue: metadata names come back as stored; MetaValue
// finds one whatever its case.
func TestDeadLetterMetaValue(t *testing.T) {
	d := DeadLetter{Meta: map[string]string{"Order-Id": "7", "Customer": "c42"}}
	for _, name := range []string{"Order-Id", "order-id", "ORDER-ID"} {
		if d.MetaValue(name) != "7" {
			t.Errorf("MetaValue(%q) = %q", name, d.MetaValue(name))
		}
	}
	if d.MetaValue("missing") != "" {
		t.Error("missing name found")
	}
}
