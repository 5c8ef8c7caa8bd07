package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// answers is a RoundTripper for the CloudEvents SDK's client that keeps
// the body of each answer: the SDK's result has the status only, the
// receipt is in the body.
type answers struct {
	mu   sync.Mutex
	last []byte
}

func (a *answers) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.last = b
	a.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

// send sends e with the SDK client c to url and returns the gateway's
// receipt.
func (a *answers) send(ctx context.Context, t *testing.T, c cloudevents.Client, url string, e cloudevents.Event) receipt {
	t.Helper()
	res := c.Send(cloudevents.ContextWithTarget(ctx, url), e)
	var hr *cehttp.Result
	a.mu.Lock()
	body := a.last
	a.mu.Unlock()
	if !cloudevents.ResultAs(res, &hr) || hr.StatusCode != http.StatusAccepted {
		t.Fatalf("send %s: %v: %s", e.ID(), res, body)
	}
	var r receipt
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("receipt %q: %v", body, err)
	}
	return r
}

// TestCloudEventsKeepTheirIdentity: events sent with the CloudEvents Go
// SDK, in binary mode (its default) and structured mode, are stored with
// their attributes as metadata (Ce-<Name>), data as the payload and
// datacontenttype as Content-Type; a re-send of the same event (same
// source and id, a new time stamped by the SDK) is a duplicate; a worker
// reads the attributes back with Message.CloudEvent.
func TestCloudEventsKeepTheirIdentity(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), nc)
	url := srv.URL + "/v1/topics/orders/messages"
	ctx := context.Background()

	var mu sync.Mutex
	seen := map[string][]map[string]string{} // source and id -> the attributes of each delivery
	data := map[string]string{}
	headers := map[string]nats.Header{}
	harness.RunWorker(t, nc, "orders", "billing", func(_ context.Context, m *sluice.Message) error {
		attrs := m.CloudEvent()
		mu.Lock()
		defer mu.Unlock()
		key := attrs["source"] + " " + attrs["id"]
		seen[key] = append(seen[key], attrs)
		data[key] = string(m.Data)
		headers[key] = m.Header
		return nil
	})

	for _, mode := range []struct {
		name  string
		ctxOf func(context.Context) context.Context
	}{
		{"binary", func(c context.Context) context.Context { return c }},
		{"structured", cloudevents.WithEncodingStructured},
	} {
		t.Run(mode.name, func(t *testing.T) {
			rec := &answers{}
			c, err := cloudevents.NewClientHTTP(cloudevents.WithRoundTripper(rec))
			if err != nil {
				t.Fatal(err)
			}
			e := cloudevents.NewEvent()
			e.SetID("order-" + mode.name + ":1/ü") // outside the key grammar: the key is derived
			e.SetSource("/shop/eu")
			e.SetType("com.example.order.placed")
			e.SetSubject("order-1")
			e.SetExtension("tenantid", "acme")
			e.SetExtension("priority", 3)
			if err := e.SetData(cloudevents.ApplicationJSON, map[string]any{"order": 1}); err != nil {
				t.Fatal(err)
			}
			cctx := mode.ctxOf(ctx)

			first := rec.send(cctx, t, c, url, e)
			if first.Duplicate || !strings.HasPrefix(first.ID, "ce:") || first.Seq == 0 {
				t.Fatalf("first send: %+v", first)
			}
			// The SDK stamps a new time on each send of an event
			// without one: the same event all the same.
			again := rec.send(cctx, t, c, url, e)
			if !again.Duplicate || again.Seq != first.Seq || again.ID != first.ID {
				t.Fatalf("re-send: %+v, want a duplicate of %+v", again, first)
			}
			// The same id from another source is another event.
			other := e.Clone()
			other.SetSource("/shop/us")
			third := rec.send(cctx, t, c, url, other)
			if third.Duplicate || third.ID == first.ID {
				t.Fatalf("same id, other source: %+v", third)
			}

			harness.Eventually(t, 10*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(seen["/shop/eu "+e.ID()]) > 0
			}, "the worker sees event %s", e.ID())
			mu.Lock()
			got, body, h := seen["/shop/eu "+e.ID()], data["/shop/eu "+e.ID()], headers["/shop/eu "+e.ID()]
			mu.Unlock()
			// Stored as metadata Ce-<Name>, data as the payload.
			if h.Get("Content-Type") != cloudevents.ApplicationJSON || h.Get("Sluice-Meta-Ce-Id") != e.ID() ||
				h.Get("Sluice-Meta-Ce-Source") != "/shop/eu" || h.Get("Sluice-Meta-Ce-Type") != e.Type() ||
				h.Get("Sluice-Meta-Ce-Specversion") != "1.0" || h.Get("Sluice-Meta-Ce-Tenantid") != "acme" ||
				h.Get("Sluice-Meta-Ce-Priority") != "3" || h.Get("Sluice-Meta-Ce-Time") == "" {
				t.Fatalf("stored headers: %v", h)
			}
			a := got[0]
			// A duplicate may be delivered again (at least once), never
			// stored again: every delivery is the first store's.
			if body != `{"order":1}` || a["source"] != "/shop/eu" || a["type"] != e.Type() ||
				a["specversion"] != "1.0" || a["subject"] != "order-1" || a["tenantid"] != "acme" || a["priority"] != "3" ||
				a["datacontenttype"] != cloudevents.ApplicationJSON || a["time"] == "" {
				t.Fatalf("worker saw %v, data %q", a, body)
			}
			// The attributes rebuild the event: the SDK reads them back.
			ch := http.Header{}
			for name, v := range a {
				if name == "datacontenttype" {
					ch.Set("Content-Type", v)
					continue
				}
				ch.Set("ce-"+name, v)
			}
			back, err := cloudevents.NewEventFromHTTPRequest(&http.Request{Header: ch, Body: http.NoBody, Method: http.MethodPost})
			if err != nil || back.ID() != e.ID() || back.Source() != e.Source() || back.Extensions()["tenantid"] != "acme" {
				t.Fatalf("rebuilt event: %v, %v", back, err)
			}
		})
	}
}

// TestCloudEventBatchItemsKeyedByIdentity: a batch line whose metadata is
// a CloudEvent's attributes (ce-specversion, ce-id, ce-source, ce-type) and
// that has no id is keyed by the event's identity: sent again, even in
// another batch with another time, it is a duplicate.
func TestCloudEventBatchItemsKeyedByIdentity(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, topics)
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), harness.Connect(t, b))
	line := func(id, time string) string {
		return `{"data":{"n":1},"meta":{"ce-specversion":"1.0","ce-id":"` + id + `","ce-source":"/shop","ce-type":"t","ce-time":"` + time + `"}}`
	}
	first := postBatch(t, srv.URL, []string{line("e-1", "2026-01-01T00:00:00Z"), line("e-2", "2026-01-01T00:00:00Z")})
	again := postBatch(t, srv.URL, []string{line("e-1", "2026-01-01T00:00:05Z")})
	if len(first) != 2 || len(again) != 1 || first[0].Duplicate || first[1].Duplicate || !strings.HasPrefix(first[0].ID, "ce:") ||
		first[0].ID == first[1].ID || !again[0].Duplicate || again[0].Seq != first[0].Seq || again[0].ID != first[0].ID {
		t.Fatalf("first batch %+v, again %+v", first, again)
	}
}
