package sluice_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

func TestBothFamiliesReceiveAndAck(t *testing.T) {
	s := startStack(t, harness.Topic("orders", "billing", "shipping"))
	var mu sync.Mutex
	got := map[string][]*sluice.Message{}
	for _, fam := range []string{"billing", "shipping"} {
		w, err := sluice.NewWorker(s.nc, "orders", fam, sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
			mu.Lock()
			got[m.Family] = append(got[m.Family], m)
			mu.Unlock()
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		run(t, w)
	}
	rc, err := s.producer(t).Publish(context.Background(), "orders", []byte(`{"total":12}`),
		sluice.WithID("o-1"), sluice.WithContentType("application/json"), sluice.WithMeta("customer", "c-9"))
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got["billing"]) == 1 && len(got["shipping"]) == 1
	}, "both families should receive the message")
	for fam, ms := range got {
		m := ms[0]
		if m.ID != "o-1" || m.Seq != rc.Seq || m.Attempt != 1 || string(m.Data) != `{"total":12}` ||
			m.ContentType() != "application/json" || m.Meta("customer") != "c-9" || m.Topic != "orders" || m.Family != fam {
			t.Errorf("%s got %+v", fam, m)
		}
	}
	// Acked by both families: interest retention removes it from the topic.
	harness.Eventually(t, 10*time.Second, func() bool {
		return s.streamMsgs(t, sluice.StreamName("orders")) == 0
	}, "the topic should be empty once both families acked")
}

func TestRetryWithBackoffThenDeadLetter(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	fam := topic.Families["billing"]
	fam.MaxAttempts = 3
	fam.Backoff = []time.Duration{100 * time.Millisecond, 300 * time.Millisecond}
	topic.Families["billing"] = fam
	s := startStack(t, topic)

	var mu sync.Mutex
	var attempts []int
	var seen []time.Time
	w, err := sluice.NewWorker(s.nc, "orders", "billing", sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
		mu.Lock()
		attempts = append(attempts, m.Attempt)
		seen = append(seen, time.Now())
		mu.Unlock()
		return fmt.Errorf("payment service down (attempt %d)", m.Attempt)
	}))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
	if _, err := s.producer(t).Publish(context.Background(), "orders", []byte("pay me"), sluice.WithID("o-7"), sluice.WithMeta("k", "v")); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		return s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")) == 1
	}, "the message should be dead-lettered after 3 attempts")

	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Fatalf("attempts = %v, want [1 2 3]", attempts)
	}
	// Backoff is a lower bound on the gap between attempts.
	if gap := seen[1].Sub(seen[0]); gap < 100*time.Millisecond {
		t.Errorf("retry 1 after %v, before its 100ms backoff", gap)
	}
	if gap := seen[2].Sub(seen[1]); gap < 300*time.Millisecond {
		t.Errorf("retry 2 after %v, before its 300ms backoff", gap)
	}
	dl := s.deadLetter(t, "orders", "billing", 1)
	h := dl.Header
	if string(dl.Data) != "pay me" || h.Get(sluice.HeaderDeadReason) != sluice.ReasonMaxAttempts ||
		h.Get(sluice.HeaderDeadAttempts) != "3" || h.Get(sluice.HeaderDeadError) != "payment service down (attempt 3)" ||
		h.Get(sluice.HeaderOriginalID) != "o-7" || h.Get("Sluice-Meta-K") != "v" || h.Get(sluice.HeaderOriginalSeq) != "1" ||
		h.Get(sluice.HeaderOriginalTopic) != "orders" || h.Get(sluice.HeaderDeadFamily) != "billing" || h.Get(sluice.HeaderDeadAt) == "" {
		t.Fatalf("dead letter = %q %v", dl.Data, h)
	}
	// Terminated: it no longer occupies the topic.
	harness.Eventually(t, 5*time.Second, func() bool {
		return s.streamMsgs(t, sluice.StreamName("orders")) == 0
	}, "a dead letter must leave the topic")
}

func TestPermanentErrorDeadLettersAtOnce(t *testing.T) {
	s := startStack(t, harness.Topic("orders", "billing", "shipping"))
	var calls atomic.Int32
	w, _ := sluice.NewWorker(s.nc, "orders", "billing", sluice.HandlerFunc(func(context.Context, *sluice.Message) error {
		calls.Add(1)
		return sluice.Permanent(errors.New("malformed order"))
	}))
	run(t, w)
	ok, _ := sluice.NewWorker(s.nc, "orders", "shipping", sluice.HandlerFunc(func(context.Context, *sluice.Message) error { return nil }))
	run(t, ok)
	if _, err := s.producer(t).Publish(context.Background(), "orders", []byte("bad")); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		return s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")) == 1 &&
			s.streamMsgs(t, sluice.StreamName("orders")) == 0
	}, "dead-lettered by billing, acked by shipping, gone from the topic")
	if calls.Load() != 1 {
		t.Errorf("handler called %d times, want 1", calls.Load())
	}
	h := s.deadLetter(t, "orders", "billing", 1).Header
	if h.Get(sluice.HeaderDeadReason) != sluice.ReasonPermanent || h.Get(sluice.HeaderDeadAttempts) != "1" ||
		h.Get(sluice.HeaderDeadError) != "permanent: malformed order" {
		t.Fatalf("headers %v", h)
	}
	if s.streamMsgs(t, sluice.DeadLetterStream("orders", "shipping")) != 0 {
		t.Error("shipping has a dead letter it never produced")
	}
}

func TestAckWaitExhaustedGoesToDeadLetters(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	fam := topic.Families["billing"]
	fam.MaxAttempts = 2
	fam.AckWait = 200 * time.Millisecond
	topic.Families["billing"] = fam
	s := startStack(t, topic)
	if _, err := s.producer(t).Publish(context.Background(), "orders", []byte("stuck")); err != nil {
		t.Fatal(err)
	}
	// A worker that takes the message and dies, twice: nothing acks or naks.
	s.abandon(t, "orders", "billing", 2)
	var calls atomic.Int32
	w, _ := sluice.NewWorker(s.nc, "orders", "billing", counting(&calls))
	run(t, w)
	harness.Eventually(t, 10*time.Second, func() bool {
		return s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")) == 1
	}, "the third delivery should go straight to the dead letters")
	if calls.Load() != 0 {
		t.Errorf("handler ran %d times on an exhausted message", calls.Load())
	}
	h := s.deadLetter(t, "orders", "billing", 1).Header
	if h.Get(sluice.HeaderDeadReason) != sluice.ReasonDeliveriesExhausted || h.Get(sluice.HeaderDeadAttempts) != "2" {
		t.Fatalf("headers %v", h)
	}
}

func TestWorkerNeverHoldsMoreThanItsCredit(t *testing.T) {
	s := startStack(t, harness.Topic("orders", "billing"))
	const credit, total = 4, 40
	var cur, peak, done atomic.Int32
	release := make(chan struct{})
	w, _ := sluice.NewWorker(s.nc, "orders", "billing", sluice.HandlerFunc(func(ctx context.Context, _ *sluice.Message) error {
		n := cur.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		cur.Add(-1)
		done.Add(1)
		return nil
	}), sluice.WithCredit(credit), sluice.WithPullExpiry(500*time.Millisecond))
	run(t, w)
	p := s.producer(t)
	for i := range total {
		if _, err := p.Publish(context.Background(), "orders", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	harness.Eventually(t, 10*time.Second, func() bool { return cur.Load() == credit }, "handlers should fill the credit")
	// Held messages as the broker sees them: never above the worker's credit.
	cons, _ := s.js.Consumer(context.Background(), sluice.StreamName("orders"), "billing")
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending > credit {
		t.Fatalf("broker shows %d in flight, credit is %d", info.NumAckPending, credit)
	}
	close(release)
	harness.Eventually(t, 20*time.Second, func() bool { return done.Load() == total }, "all messages handled")
	if peak.Load() > credit {
		t.Fatalf("peak concurrency %d above credit %d", peak.Load(), credit)
	}
}

func TestLongHandlerKeepsItsMessage(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	fam := topic.Families["billing"]
	fam.AckWait = 200 * time.Millisecond
	topic.Families["billing"] = fam
	s := startStack(t, topic)
	var calls atomic.Int32
	w, _ := sluice.NewWorker(s.nc, "orders", "billing", sluice.HandlerFunc(func(ctx context.Context, _ *sluice.Message) error {
		calls.Add(1)
		select { // five ack waits long
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
		return nil
	}))
	run(t, w)
	if _, err := s.producer(t).Publish(context.Background(), "orders", []byte("slow")); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		return s.streamMsgs(t, sluice.StreamName("orders")) == 0
	}, "acked")
	if calls.Load() != 1 {
		t.Fatalf("handler ran %d times: in-progress did not keep the message", calls.Load())
	}
}

func TestDrainFinishesHeldMessages(t *testing.T) {
	s := startStack(t, harness.Topic("orders", "billing"))
	started := make(chan struct{})
	var finished atomic.Bool
	w, _ := sluice.NewWorker(s.nc, "orders", "billing", sluice.HandlerFunc(func(ctx context.Context, _ *sluice.Message) error {
		close(started)
		time.Sleep(200 * time.Millisecond) // work that does not watch ctx
		finished.Store(true)
		return nil
	}), sluice.WithPullExpiry(300*time.Millisecond))
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background()) }()
	if _, err := s.producer(t).Publish(context.Background(), "orders", []byte("x")); err != nil {
		t.Fatal(err)
	}
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if !finished.Load() {
		t.Fatal("Drain returned before the held message was handled")
	}
	if err := <-errc; err != nil {
		t.Fatalf("Run after drain: %v", err)
	}
	harness.Eventually(t, 5*time.Second, func() bool {
		return s.streamMsgs(t, sluice.StreamName("orders")) == 0
	}, "the drained message should be acked")
}

func TestWorkerTypedErrors(t *testing.T) {
	s := startStack(t, harness.Topic("orders", "billing"))
	h := sluice.HandlerFunc(func(context.Context, *sluice.Message) error { return nil })
	w, _ := sluice.NewWorker(s.nc, "nope", "billing", h)
	if err := w.Run(context.Background()); !errors.Is(err, sluice.ErrTopicNotFound) {
		t.Errorf("unknown topic: %v", err)
	}
	w, _ = sluice.NewWorker(s.nc, "orders", "nope", h)
	if err := w.Run(context.Background()); !errors.Is(err, sluice.ErrFamilyNotFound) {
		t.Errorf("unknown family: %v", err)
	}
	if _, err := sluice.NewWorker(s.nc, "Bad.Topic", "billing", h); !errors.Is(err, sluice.ErrInvalidOption) {
		t.Errorf("bad name: %v", err)
	}
	if _, err := sluice.NewWorker(s.nc, "orders", "billing", h, sluice.WithCredit(0)); !errors.Is(err, sluice.ErrInvalidOption) {
		t.Errorf("zero credit: %v", err)
	}
}

func TestRedeliveryOfADeadLetteredMessageIsOnlyTerminated(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	fam := topic.Families["billing"]
	fam.AckWait = 200 * time.Millisecond
	topic.Families["billing"] = fam
	s := startStack(t, topic)
	rc, err := s.producer(t).Publish(context.Background(), "orders", []byte("poison"))
	if err != nil {
		t.Fatal(err)
	}
	// A worker copied the message to the dead letters and died before its
	// Term reached the broker: the copy exists, the message is unacked.
	cons, err := s.js.Consumer(context.Background(), sluice.StreamName("orders"), "billing")
	if err != nil {
		t.Fatal(err)
	}
	dl := nats.NewMsg(sluice.DeadLetterSubject("orders", "billing", rc.Seq))
	dl.Data = []byte("poison")
	dl.Header.Set(sluice.HeaderOriginalID, rc.ID)
	dl.Header.Set(sluice.HeaderOriginalFamilyCreated, cons.CachedInfo().Created.Format(time.RFC3339Nano))
	if _, err := s.js.PublishMsg(context.Background(), dl); err != nil {
		t.Fatal(err)
	}
	s.abandon(t, "orders", "billing", 1)
	var calls atomic.Int32
	w, _ := sluice.NewWorker(s.nc, "orders", "billing", counting(&calls))
	run(t, w)
	harness.Eventually(t, 10*time.Second, func() bool {
		return s.streamMsgs(t, sluice.StreamName("orders")) == 0
	}, "the redelivered message should be terminated")
	if calls.Load() != 0 {
		t.Errorf("handler ran %d times on a message already dead-lettered", calls.Load())
	}
	if n := s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")); n != 1 {
		t.Errorf("%d dead letters, want the one copy", n)
	}
}

func TestDeadLetterCopyIsRetriedInPlace(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	topic.MaxMessages = 1 // the dead-letter stream inherits it
	s := startStack(t, topic)
	// Fill the dead letters with an older one.
	if _, err := s.js.Publish(context.Background(), sluice.DeadLetterSubject("orders", "billing", 999), []byte("old")); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	w, _ := sluice.NewWorker(s.nc, "orders", "billing", sluice.HandlerFunc(func(context.Context, *sluice.Message) error {
		calls.Add(1)
		return sluice.Permanent(errors.New("bad order"))
	}))
	run(t, w)
	if _, err := s.producer(t).Publish(context.Background(), "orders", []byte("new")); err != nil {
		t.Fatal(err)
	}
	// The copy cannot be stored: the message stays held, in progress.
	cons, _ := s.js.Consumer(context.Background(), sluice.StreamName("orders"), "billing")
	harness.Eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == 1 && calls.Load() == 1
	}, "the message should be held while its dead letter cannot be written")
	// Room again: the pending copy lands, the message leaves the topic.
	dlq, _ := s.js.Stream(context.Background(), sluice.DeadLetterStream("orders", "billing"))
	if err := dlq.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 15*time.Second, func() bool {
		return s.streamMsgs(t, sluice.StreamName("orders")) == 0 &&
			s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")) == 1
	}, "the dead letter should be written once there is room")
	if calls.Load() != 1 {
		t.Errorf("handler ran %d times; a permanent failure must not be retried", calls.Load())
	}
	if h := s.deadLetter(t, "orders", "billing", 2).Header; h.Get(sluice.HeaderDeadReason) != sluice.ReasonPermanent {
		t.Errorf("dead letter headers %v", h)
	}
}

func TestRetryDeadlineDeadLetters(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	fam := topic.Families["billing"]
	fam.MaxAttempts = 10
	fam.BackoffCurve = "exponential"
	fam.BackoffInitial, fam.BackoffMax = 200*time.Millisecond, time.Second
	fam.RetryDeadline = 500 * time.Millisecond
	topic.Families["billing"] = fam
	s := startStack(t, topic)
	var calls atomic.Int32
	w, _ := sluice.NewWorker(s.nc, "orders", "billing", sluice.HandlerFunc(func(context.Context, *sluice.Message) error {
		calls.Add(1)
		return errors.New("still failing")
	}))
	run(t, w)
	if _, err := s.producer(t).Publish(context.Background(), "orders", []byte("x")); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		return s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")) == 1
	}, "the message should be dead-lettered at its retry deadline")
	// Delays 200ms, 400ms: the third retry would land past 500ms.
	if n := calls.Load(); n < 2 || n > 3 {
		t.Errorf("handler ran %d times, want 2 or 3 before the deadline", n)
	}
	if h := s.deadLetter(t, "orders", "billing", 1).Header; h.Get(sluice.HeaderDeadReason) != sluice.ReasonRetryDeadline {
		t.Errorf("reason %q", h.Get(sluice.HeaderDeadReason))
	}
}
