package sluice_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestRecreatedTopicSeqIsNotTakenForADeadLetter: sequences restart when
// a topic's stream is deleted and provisioned again. A new message at the
// sequence of an old dead letter, redelivered after a retryable failure,
// must be handled again, not terminated as already dead-lettered.
func TestRecreatedTopicSeqIsNotTakenForADeadLetter(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	topics := harness.Topics(topic)
	nc := harness.Connect(t, harness.StartBroker(t, topics))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s := stack{nc: nc, js: js} // no gateway: only the worker is under test
	ctx := context.Background()

	var mu sync.Mutex
	attempts := map[string][]int{} // message id -> attempts seen
	handler := sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
		mu.Lock()
		attempts[m.ID] = append(attempts[m.ID], m.Attempt)
		mu.Unlock()
		switch {
		case m.ID == "old-1":
			return sluice.Permanent(errors.New("malformed"))
		case m.Attempt == 1:
			return errors.New("try again")
		}
		return nil
	})
	publish := func(id, data string) uint64 {
		t.Helper()
		m := nats.NewMsg(sluice.Subject("orders"))
		m.Data = []byte(data)
		ack, err := s.js.PublishMsg(ctx, m, jetstream.WithMsgID(id), jetstream.WithExpectStream(sluice.StreamName("orders")))
		if err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
		return ack.Sequence
	}
	old := publish("old-1", "old")
	stop := run(t, newWorker(t, s, handler))
	harness.Eventually(t, 10*time.Second, func() bool {
		return s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")) == 1 &&
			s.streamMsgs(t, sluice.StreamName("orders")) == 0
	}, "old-1 should be dead-lettered")
	stop()

	// The topic's stream is deleted and provisioned again (its families
	// with it); the family's dead letters stay.
	if err := s.js.DeleteStream(ctx, sluice.StreamName("orders")); err != nil {
		t.Fatal(err)
	}
	if err := broker.Provision(ctx, s.js, topics, harness.Logger(t)); err != nil {
		t.Fatal(err)
	}
	if seq := publish("new-1", "new"); seq != old {
		t.Fatalf("the new message got seq %d, the dead letter has %d: the test needs them equal", seq, old)
	}

	run(t, newWorker(t, s, handler))
	// Acked on its second attempt, or (the defect) terminated unhandled.
	harness.Eventually(t, 20*time.Second, func() bool {
		return s.streamMsgs(t, sluice.StreamName("orders")) == 0
	}, "new-1 should leave the topic")
	mu.Lock()
	got := attempts["new-1"]
	mu.Unlock()
	if len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("new-1 attempts %v, want [1 2]: its redelivery was taken for the old dead letter at seq %d", got, old)
	}
	if n := s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")); n != 1 {
		t.Fatalf("%d dead letters, want old-1's only", n)
	}
}

func newWorker(t *testing.T, s stack, h sluice.Handler) *sluice.Worker {
	t.Helper()
	w, err := sluice.NewWorker(s.nc, "orders", "billing", h, sluice.WithWorkerLogger(harness.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestDeadLetterAtARecreatedSeqIsStored: a worker that keeps running while
// its topic's stream is deleted and provisioned again dead-letters a new
// message at an old dead letter's seq as a dead letter of its own (not a
// duplicate of the old one, which would leave the new message terminated
// without a copy), marked with the new family's creation.
func TestDeadLetterAtARecreatedSeqIsStored(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	topics := harness.Topics(topic)
	nc := harness.Connect(t, harness.StartBroker(t, topics))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s := stack{nc: nc, js: js}
	ctx := context.Background()
	publish := func(id string) uint64 {
		t.Helper()
		ack, err := js.Publish(ctx, sluice.Subject("orders"), []byte(id), jetstream.WithMsgID(id))
		if err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
		return ack.Sequence
	}
	run(t, newWorker(t, s, sluice.HandlerFunc(func(context.Context, *sluice.Message) error {
		return sluice.Permanent(errors.New("malformed"))
	})))
	old := publish("old-1")
	harness.Eventually(t, 10*time.Second, func() bool {
		return s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")) == 1
	}, "old-1 should be dead-lettered")

	if err := js.DeleteStream(ctx, sluice.StreamName("orders")); err != nil {
		t.Fatal(err)
	}
	if err := broker.Provision(ctx, js, topics, harness.Logger(t)); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, sluice.StreamName("orders"), "billing")
	if err != nil {
		t.Fatal(err)
	}
	if seq := publish("new-1"); seq != old {
		t.Fatalf("the new message got seq %d, the dead letter has %d: the test needs them equal", seq, old)
	}
	harness.Eventually(t, 30*time.Second, func() bool {
		return s.streamMsgs(t, sluice.StreamName("orders")) == 0
	}, "new-1 should leave the topic")
	if n := s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")); n != 2 {
		t.Fatalf("%d dead letters, want old-1's and new-1's", n)
	}
	dl := s.deadLetter(t, "orders", "billing", 2)
	if h := dl.Header; string(dl.Data) != "new-1" || h.Get(sluice.HeaderOriginalID) != "new-1" ||
		h.Get(sluice.HeaderOriginalFamilyCreated) != cons.CachedInfo().Created.Format(time.RFC3339Nano) {
		t.Fatalf("dead letter %q %v; the family was created at %v", dl.Data, h, cons.CachedInfo().Created)
	}
}
