package sluice_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

func TestProducerTypedErrorsAreNotRetried(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	topic.MaxMessageSize = 100
	s := startStack(t, topic)
	p := s.producer(t)
	ctx := context.Background()
	_, err := p.Publish(ctx, "nope", []byte("x"))
	if !errors.Is(err, sluice.ErrTopicNotFound) {
		t.Errorf("unknown topic: %v", err)
	}
	var se *sluice.Error
	if !errors.As(err, &se) || se.Status != 404 || se.Type != sluice.ProblemTopicNotFound {
		t.Errorf("error detail: %#v", se)
	}
	if _, err := p.Publish(ctx, "orders", make([]byte, 101)); !errors.Is(err, sluice.ErrMessageTooLarge) {
		t.Errorf("too large: %v", err)
	}
	if _, err := p.Publish(ctx, "orders", []byte("x"), sluice.WithID("bad key")); !errors.Is(err, sluice.ErrBadRequest) {
		t.Errorf("bad key: %v", err)
	}
	if _, err := sluice.NewProducer(nil); !errors.Is(err, sluice.ErrInvalidOption) {
		t.Errorf("no urls: %v", err)
	}
	if _, err := sluice.NewProducer([]string{"ftp://x"}); !errors.Is(err, sluice.ErrInvalidOption) {
		t.Errorf("bad url: %v", err)
	}
}

// deadURL is an address where nothing listens.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestProducerFailsOverAndKeepsItsKey(t *testing.T) {
	tm := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBroker(t, tm)
	nc := harness.Connect(t, b)
	// A gateway whose broker stores messages but whose acks never arrive.
	proxy, cutNC := harness.ConnectThrough(t, b.ClientURL())
	cfg := harness.GatewayConfig(tm)
	cfg.PublishTimeout = 200 * time.Millisecond
	_, cut := harness.StartGateway(t, cfg, cutNC)
	proxy.HoldReplies(true)
	_, good := harness.StartGateway(t, harness.GatewayConfig(tm), nc)

	// Dead gateway, then the cut one (stores, answers 503 unknown), then a good one.
	p, err := sluice.NewProducer([]string{deadURL(t), cut.URL, good.URL},
		sluice.WithRetry(6, time.Millisecond, 20*time.Millisecond), sluice.WithProducerLogger(harness.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := p.Publish(context.Background(), "orders", []byte("x"), sluice.WithID("k-1"))
	if err != nil {
		t.Fatalf("publish through failover: %v", err)
	}
	if rc.ID != "k-1" || rc.Seq != 1 || !rc.Duplicate {
		t.Fatalf("receipt %+v: the cut gateway stored seq 1, the retry must be its duplicate", rc)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s := stack{nc: nc, js: js}
	harness.Eventually(t, 5*time.Second, func() bool { return s.streamMsgs(t, sluice.StreamName("orders")) == 1 }, "exactly one stored")

	// Only the cut gateway: the caller is told the outcome is unknown.
	only, _ := sluice.NewProducer([]string{cut.URL}, sluice.WithRetry(2, time.Millisecond, 2*time.Millisecond))
	_, err = only.Publish(context.Background(), "orders", []byte("y"))
	if !errors.Is(err, sluice.ErrOutcomeUnknown) {
		t.Fatalf("want ErrOutcomeUnknown, got %v", err)
	}
	// Only a dead gateway: nothing can have been stored.
	dead, _ := sluice.NewProducer([]string{deadURL(t)}, sluice.WithRetry(2, time.Millisecond, 2*time.Millisecond))
	_, err = dead.Publish(context.Background(), "orders", []byte("z"))
	if !errors.Is(err, sluice.ErrUnavailable) || errors.Is(err, sluice.ErrOutcomeUnknown) {
		t.Fatalf("want ErrUnavailable only, got %v", err)
	}
}

func TestProducerWaitsOutAFullTopic(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	topic.MaxMessages = 1
	// Nothing drains yet, so the gateway advises the longest wait: keep it short.
	s := startStackWith(t, func(c *gateway.Config) { c.RetryAfterMax = 2 * time.Second }, topic)
	p := s.producer(t)
	if _, err := p.Publish(context.Background(), "orders", []byte("first")); err != nil {
		t.Fatal(err)
	}
	// Full: a short deadline ends in ErrThrottled (Retry-After is 1s).
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := p.Publish(short, "orders", []byte("second")); !errors.Is(err, sluice.ErrThrottled) {
		t.Fatalf("want ErrThrottled, got %v", err)
	}
	// A worker drains the topic; the producer's retry gets in.
	w, _ := sluice.NewWorker(s.nc, "orders", "billing", sluice.HandlerFunc(func(context.Context, *sluice.Message) error { return nil }))
	run(t, w)
	ctx, cancel2 := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel2()
	if _, err := p.Publish(ctx, "orders", []byte("second")); err != nil {
		t.Fatalf("publish after drain: %v", err)
	}
}

func TestPublishBatch(t *testing.T) {
	s := startStack(t, harness.Topic("orders", "billing"))
	p := s.producer(t)
	res, err := p.PublishBatch(context.Background(), "orders", []sluice.BatchMessage{
		{ID: "a", JSON: json.RawMessage(`{"n":1}`)},
		{ID: "bad id", Data: []byte("x")},
		{Data: []byte{0, 1, 2}, Meta: map[string]string{"source": "test"}},
		{ID: "a", JSON: json.RawMessage(`{"n":1}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 4 {
		t.Fatalf("%d results", len(res))
	}
	if res[0].Err != nil || res[0].Seq != 1 || res[0].ID != "a" {
		t.Errorf("0: %+v", res[0])
	}
	if !errors.Is(res[1].Err, sluice.ErrBadRequest) {
		t.Errorf("1: %+v", res[1])
	}
	if res[2].Err != nil || res[2].Seq != 2 || res[2].ID == "" {
		t.Errorf("2: %+v", res[2])
	}
	if res[3].Err != nil || !res[3].Duplicate || res[3].Seq != 1 {
		t.Errorf("3: %+v", res[3])
	}
	_, err = p.PublishBatch(context.Background(), "nope", []sluice.BatchMessage{{Data: []byte("x")}})
	if !errors.Is(err, sluice.ErrTopicNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown topic: %v", err)
	}
}

func TestProducerRotatesThroughGatewaysEvenly(t *testing.T) {
	// Two gateways that are always unavailable: attempts must alternate
	// between them however many rounds it takes.
	var hits [2]atomic.Int32
	var urls []string
	for i := range hits {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			hits[i].Add(1)
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"type":"urn:sluice:problem:bus-unavailable","title":"Bus unavailable","status":503}`))
		}))
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
	}
	p, err := sluice.NewProducer(urls, sluice.WithRetry(8, time.Microsecond, time.Microsecond))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := p.Publish(context.Background(), "orders", []byte("x")); !errors.Is(err, sluice.ErrUnavailable) {
			t.Fatalf("want ErrUnavailable, got %v", err)
		}
	}
	if a, b := hits[0].Load(), hits[1].Load(); a != 8 || b != 8 {
		t.Fatalf("attempts per gateway = %d, %d; want 8, 8", a, b)
	}
}

func TestProducerMovesOffAStoppingGateway(t *testing.T) {
	// The first gateway is in lame duck: it still stores the message, and
	// the producer's next publishes go to the second.
	var hits [2]atomic.Int32
	var urls []string
	for i := range hits {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			n := hits[i].Add(1)
			if i == 0 {
				w.Header().Set(sluice.HeaderLameDuck, "true")
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, `{"topic":"orders","seq":%d,"id":"x"}`, n)
		}))
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
	}
	p, err := sluice.NewProducer(urls)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := p.Publish(context.Background(), "orders", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := hits[0].Load(), hits[1].Load(); a != 1 || b != 4 {
		t.Fatalf("publishes per gateway = %d, %d; want 1 to the stopping one, then 4 to the other", a, b)
	}
}

func TestProducerPacesFromRateLimitHeaders(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	topic.MaxMessages = 3
	s := startStackWith(t, func(c *gateway.Config) { c.AdmissionRefresh = time.Second }, topic)
	p := s.producer(t)
	for i := range 3 {
		if _, err := p.Publish(context.Background(), "orders", []byte("x")); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// The third answer said r=0;t=1: the next publish waits, and with a
	// shorter deadline it gives up without sending anything.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := p.Publish(ctx, "orders", []byte("x")); !errors.Is(err, sluice.ErrThrottled) {
		t.Fatalf("want ErrThrottled from pacing, got %v", err)
	}
	resp, err := http.Get(s.gateway + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The refusal series exist from the start at 0: none may have counted.
	refused := false
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, "sluice_gateway_refusals_total{") && !strings.HasSuffix(l, "} 0") {
			refused = true
		}
	}
	if refused {
		t.Fatalf("the paced publish reached the gateway and was refused:\n%s", grepLines(string(body), "refusals"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestProducerSameKeyOtherMessageIsStored: a key names one message (its
// payload, content type and metadata); another message under the same key
// is stored as another message, and the same one again is a duplicate.
func TestProducerSameKeyOtherMessageIsStored(t *testing.T) {
	s := startStack(t, harness.Topic("orders", "billing"))
	p := s.producer(t)
	first, err := p.Publish(context.Background(), "orders", []byte("a"), sluice.WithID("k"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := p.Publish(context.Background(), "orders", []byte("b"), sluice.WithID("k"))
	if err != nil || other.Duplicate || other.Seq == first.Seq || other.ID != "k" {
		t.Fatalf("another payload under the key: %+v, %v; want stored anew", other, err)
	}
	again, err := p.Publish(context.Background(), "orders", []byte("a"), sluice.WithID("k"))
	if err != nil || !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("the first message again: %+v, %v; want a duplicate of seq %d", again, err, first.Seq)
	}
}

// unavailableGateway always answers 503 and counts the requests.
func unavailableGateway(t *testing.T) (string, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"type":"urn:sluice:problem:overloaded","title":"Overloaded","status":503}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &hits
}

func TestProducerRetryDeadlineBoundsAMessage(t *testing.T) {
	url, hits := unavailableGateway(t)
	p, err := sluice.NewProducer([]string{url}, sluice.WithRetryPolicy(sluice.RetryPolicy{
		MaxAttempts: 1000, Initial: 5 * time.Millisecond, Max: 5 * time.Millisecond, Deadline: 100 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Publish(context.Background(), "orders", []byte("x"))
	// The deadline lands between attempts (the last 503) or during one
	// (cut short: its outcome unknown).
	if !errors.Is(err, sluice.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the last 503 or the deadline, got %v", err)
	}
	if n := hits.Load(); n < 2 || n >= 1000 {
		t.Errorf("%d attempts: the deadline, not max_attempts, should have ended the retries", n)
	}
}

func TestProducerRetryBudgetCapsRetries(t *testing.T) {
	url, hits := unavailableGateway(t)
	p, err := sluice.NewProducer([]string{url}, sluice.WithRetryPolicy(sluice.RetryPolicy{
		MaxAttempts: 5, Initial: time.Microsecond, Max: time.Microsecond, Budget: 0.1}))
	if err != nil {
		t.Fatal(err)
	}
	spent := 0
	for range 50 {
		_, err := p.Publish(context.Background(), "orders", []byte("x"))
		if !errors.Is(err, sluice.ErrUnavailable) {
			t.Fatalf("want ErrUnavailable, got %v", err)
		}
		if errors.Is(err, sluice.ErrRetryBudget) {
			spent++
		}
	}
	// 50 first attempts, the reserve of 10 retries and 0.1 per message:
	// at most 65 requests (250 without a budget).
	if n := hits.Load(); n > 65 {
		t.Errorf("%d requests for 50 messages with a 0.1 retry budget", n)
	}
	if spent == 0 {
		t.Error("no publish reported the spent budget")
	}
	if _, err := sluice.NewProducer([]string{url}, sluice.WithRetryPolicy(sluice.RetryPolicy{MaxAttempts: 1, Initial: time.Second, Max: time.Millisecond})); !errors.Is(err, sluice.ErrInvalidOption) {
		t.Errorf("max < initial: %v", err)
	}
}
