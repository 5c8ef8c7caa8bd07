package sluice_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestProducerRequestCarriesKeyTypeMetaAndAuth: what a publish sends, and
// nothing the caller did not ask for.
func TestProducerRequestCarriesKeyTypeMetaAndAuth(t *testing.T) {
	var mu sync.Mutex
	var got []http.Header
	url := stub(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Clone())
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"topic":"orders","seq":1,"id":"k"}`)
	})
	with, _ := sluice.NewProducer([]string{url}, sluice.WithAPIKey("secret"))
	if _, err := with.Publish(context.Background(), "orders", []byte("x"), sluice.WithID("k"),
		sluice.WithContentType("application/json"), sluice.WithMeta("Customer", "c-7")); err != nil {
		t.Fatal(err)
	}
	without, _ := sluice.NewProducer([]string{url})
	if _, err := without.Publish(context.Background(), "orders", []byte("x"), sluice.WithID("k")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	h := got[0]
	if h.Get("Authorization") != "Bearer secret" || h.Get("Content-Type") != "application/json" ||
		h.Get(sluice.HeaderMetaPrefix+"Customer") != "c-7" || h.Get(sluice.HeaderIdempotencyKey) != "k" {
		t.Errorf("request headers %v", h)
	}
	if h := got[1]; h.Get("Authorization") != "" || h.Get("Content-Type") != "" || h.Get(sluice.HeaderIdempotencyKey) != "k" {
		t.Errorf("request without key or type: headers %v", h)
	}
}

// TestProducerAttemptsExactlyMaxAttempts: every attempt refused, the
// producer tries max_attempts times, no more.
func TestProducerAttemptsExactlyMaxAttempts(t *testing.T) {
	var n atomic.Int32
	url := stub(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		problem(w, 503, sluice.ProblemBusUnavailable)
	})
	p, _ := sluice.NewProducer([]string{url}, fastRetry(3))
	_, err := p.Publish(context.Background(), "orders", []byte("x"))
	if !errors.Is(err, sluice.ErrUnavailable) || errors.Is(err, sluice.ErrOutcomeUnknown) {
		t.Fatalf("err = %v; want ErrUnavailable only", err)
	}
	if got := n.Load(); got != 3 {
		t.Fatalf("%d attempts, want 3", got)
	}
}

// TestProducerReadsRetryAfter: the gateway's Retry-After, in seconds or as
// a date, is the error's RetryAfter.
func TestProducerReadsRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		header   string
		min, max time.Duration
	}{
		{"7", 7 * time.Second, 7 * time.Second},
		{time.Now().Add(time.Hour).UTC().Format(http.TimeFormat), 58 * time.Minute, time.Hour},
		{"", 0, 0},
	} {
		url := stub(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
			if tc.header != "" {
				w.Header().Set("Retry-After", tc.header)
			}
			problem(w, 429, sluice.ProblemTopicFull)
		})
		p, _ := sluice.NewProducer([]string{url}, fastRetry(1))
		_, err := p.Publish(context.Background(), "orders", []byte("x"))
		var se *sluice.Error
		if !errors.As(err, &se) || se.RetryAfter < tc.min || se.RetryAfter > tc.max {
			t.Errorf("Retry-After %q: %v (%+v), want RetryAfter in [%v, %v]", tc.header, err, se, tc.min, tc.max)
		}
	}
}

// TestProducerServerErrorLeavesDoubt: a 500 may come after the message was
// stored: the error is an unknown outcome.
func TestProducerServerErrorLeavesDoubt(t *testing.T) {
	url := stub(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	p, _ := sluice.NewProducer([]string{url}, fastRetry(3))
	// A 500 is not retried (a gateway bug), and may have stored.
	if _, err := p.Publish(context.Background(), "orders", []byte("x")); !errors.Is(err, sluice.ErrOutcomeUnknown) || !errors.Is(err, sluice.ErrInternal) {
		t.Fatalf("err = %v; want ErrInternal and ErrOutcomeUnknown", err)
	}
}

// TestProducerContextEndWrapsTheLastError: the caller's context ends after
// an attempt: the error says so and still carries the gateway's answer.
func TestProducerContextEndWrapsTheLastError(t *testing.T) {
	url := stub(t, func(_ int, w http.ResponseWriter, _ *http.Request) { problem(w, 503, sluice.ProblemBusUnavailable) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &http.Client{Transport: cancelAfter{next: http.DefaultTransport, cancel: cancel}}
	p, _ := sluice.NewProducer([]string{url}, sluice.WithHTTPClient(client), fastRetry(5))
	_, err := p.Publish(ctx, "orders", []byte("x"))
	if !errors.Is(err, context.Canceled) || !errors.Is(err, sluice.ErrUnavailable) {
		t.Fatalf("err = %v; want context.Canceled with the last ErrUnavailable", err)
	}
}

// cancelAfter cancels the caller's context once a response is in.
type cancelAfter struct {
	next   http.RoundTripper
	cancel context.CancelFunc
}

func (c cancelAfter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	c.cancel()
	return resp, err
}

// TestPublishBatchLineDoubtSurvives: a line answered "unknown" and then
// refused for good is still an unknown outcome; one answered "unknown" and
// then stored is stored; one throttled every time keeps its 429. A batch
// all answered is one request.
func TestPublishBatchLineDoubtSurvives(t *testing.T) {
	var n atomic.Int32
	url := stub(t, func(i int, w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-ndjson")
		if i == 0 {
			fmt.Fprintf(w, `{"line":1,"type":%q,"title":"t","status":503}`+"\n", sluice.ProblemOutcomeUnknown)
			fmt.Fprintf(w, `{"line":2,"type":%q,"title":"t","status":503}`+"\n", sluice.ProblemOutcomeUnknown)
			fmt.Fprintf(w, `{"line":3,"type":%q,"title":"t","status":429}`+"\n", sluice.ProblemTopicFull)
			return
		}
		line := 1 // only message c is left: throttled until the attempts run out
		if i == 1 {
			fmt.Fprintf(w, `{"line":1,"type":%q,"title":"t","status":413}`+"\n", sluice.ProblemMessageTooLarge)
			fmt.Fprintf(w, `{"line":2,"topic":"orders","seq":9,"id":"b","duplicate":true}`+"\n")
			line = 3
		}
		fmt.Fprintf(w, `{"line":%d,"type":%q,"title":"t","status":429}`+"\n", line, sluice.ProblemTopicFull)
	})
	p, _ := sluice.NewProducer([]string{url}, fastRetry(3))
	msgs := []sluice.BatchMessage{{ID: "a", Data: []byte("a")}, {ID: "b", Data: []byte("b")}, {ID: "c", Data: []byte("c")}}
	res, err := p.PublishBatch(context.Background(), "orders", msgs)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, sluice.ErrOutcomeUnknown) || !errors.Is(res[0].Err, sluice.ErrMessageTooLarge) {
		t.Errorf("line 1: %v, want ErrMessageTooLarge and ErrOutcomeUnknown", res[0].Err)
	}
	if res[1].Err != nil || res[1].Seq != 9 {
		t.Errorf("line 2: %+v, want stored as seq 9", res[1])
	}
	if !errors.Is(res[2].Err, sluice.ErrThrottled) || errors.Is(res[2].Err, sluice.ErrOutcomeUnknown) {
		t.Errorf("line 3: %v, want ErrThrottled only", res[2].Err)
	}
	if got := n.Load(); got != 3 {
		t.Errorf("%d requests, want 3", got)
	}

	n.Store(0)
	once := stub(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"line":1,"topic":"orders","seq":1,"id":"a"}`+"\n"+`{"line":2,"topic":"orders","seq":2,"id":"b"}`+"\n")
	})
	p, _ = sluice.NewProducer([]string{once}, fastRetry(3))
	if res, err := p.PublishBatch(context.Background(), "orders", msgs[:2]); err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("all answered: %+v %v", res, err)
	}
	if got := n.Load(); got != 1 {
		t.Errorf("all answered: %d requests, want 1", got)
	}
}

// TestRetryOptionsValidated: the bounds of WithRetry and the default
// policy; a zero budget is no budget.
func TestRetryOptionsValidated(t *testing.T) {
	for _, tc := range []struct {
		attempts     int
		initial, max time.Duration
		ok           bool
	}{
		{1, time.Millisecond, time.Millisecond, true},
		{0, time.Millisecond, time.Millisecond, false},
		{1, 0, time.Millisecond, false},
		{1, 2 * time.Millisecond, time.Millisecond, false},
	} {
		_, err := sluice.NewProducer([]string{"http://127.0.0.1:1"}, sluice.WithRetry(tc.attempts, tc.initial, tc.max))
		if (err == nil) != tc.ok {
			t.Errorf("WithRetry(%d, %v, %v): %v, want ok %v", tc.attempts, tc.initial, tc.max, err, tc.ok)
		}
	}
	if d := sluice.DefaultRetryPolicy(); d != (sluice.RetryPolicy{MaxAttempts: 10, Initial: 100 * time.Millisecond, Max: 5 * time.Second}) {
		t.Errorf("default policy %+v", d)
	}
	// Budget 0: every one of 30 messages gets its retry.
	url := stub(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n%2 == 0 {
			problem(w, 503, sluice.ProblemBusUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"topic":"orders","seq":1,"id":"k"}`)
	})
	p, _ := sluice.NewProducer([]string{url}, sluice.WithRetryPolicy(sluice.RetryPolicy{MaxAttempts: 2, Initial: time.Microsecond, Max: time.Microsecond}))
	for i := range 30 {
		if _, err := p.Publish(context.Background(), "orders", []byte("x")); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
}
