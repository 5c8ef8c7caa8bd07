package sluice_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestProducerTriesBeforeItsDeadline: a gateway asking for a wait longer
// than the producer's deadline leaves (Retry-After: 60, RateLimit t=60, as
// a gateway that knows no drain rate used to answer) does not make the
// producer give up at once: it tries once more before its deadline, and
// the topic, drained meanwhile, takes the message.
func TestProducerTriesBeforeItsDeadline(t *testing.T) {
	url := stub(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 0 {
			w.Header().Set("Retry-After", "60")
			w.Header().Set("RateLimit", `"topic";r=0;t=60`)
			problem(w, http.StatusTooManyRequests, sluice.ProblemTopicFull)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"topic":"orders","seq":7,"id":"k"}`))
	})
	p, err := sluice.NewProducer([]string{url}, sluice.WithRetryPolicy(sluice.RetryPolicy{
		MaxAttempts: 10, Initial: 100 * time.Millisecond, Max: 5 * time.Second, Deadline: 2500 * time.Millisecond, Budget: 0.2}))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := p.Publish(context.Background(), "orders", []byte("x"), sluice.WithID("k"))
	if err != nil || rc.Seq != 7 {
		t.Fatalf("publish = %+v, %v; want the retry before the deadline stored", rc, err)
	}
	// The next message meets the pacer's t=60: it too is sent before its
	// deadline rather than refused on the spot.
	if _, err := p.Publish(context.Background(), "orders", []byte("y")); err != nil {
		t.Fatalf("paced publish: %v; want it sent before its deadline", err)
	}
	// With less than a second of deadline left there is no last try.
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := p.Publish(short, "orders", []byte("z")); !errors.Is(err, sluice.ErrThrottled) {
		t.Fatalf("publish with 300ms left: %v, want ErrThrottled without a request", err)
	}
}

// TestProducer429DoesNotSpendTheBudget: retries after 429 (the gateway
// pacing a full topic) do not draw on the retry budget, which guards
// against outages; a message refused more times than the budget's reserve
// still gets in within its attempts.
func TestProducer429DoesNotSpendTheBudget(t *testing.T) {
	var hits atomic.Int32
	url := stub(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		if n < 15 {
			problem(w, http.StatusTooManyRequests, sluice.ProblemTopicFull)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"topic":"orders","seq":1,"id":"k"}`))
	})
	p, err := sluice.NewProducer([]string{url}, sluice.WithRetryPolicy(sluice.RetryPolicy{
		MaxAttempts: 20, Initial: time.Microsecond, Max: time.Millisecond, Budget: 0.1}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish(context.Background(), "orders", []byte("x")); err != nil {
		t.Fatalf("publish after 15 refusals: %v (%d requests); want it stored, the budget untouched", err, hits.Load())
	}
}
