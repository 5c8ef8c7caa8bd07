package test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestIntegrityTopicCreatedUnderLoad: two gateways are configured with a
// topic that no broker holds yet, and a load publishes to it; then the topic
// is provisioned. Every answer before provisioning is a 503 naming a
// missing family (nothing stored: a stream without the family's consumer
// would ack and keep nothing for it), 202s follow, and every 202 reaches
// both families.
func TestIntegrityTopicCreatedUnderLoad(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", families...))
	b := harness.StartBroker(t, nil) // provisions nothing
	js, _ := jetstream.New(harness.Connect(t, b))
	var urls []string
	for range 2 {
		_, srv := harness.StartGatewayUnready(t, harness.GatewayConfig(topics), harness.Connect(t, b))
		urls = append(urls, srv.URL)
	}
	in := newIntegrity(js, urls)
	// Few retries in a short time: a refusal comes back as the answer
	// instead of being waited out (its Retry-After is 5 s).
	l := in.start(t, loadSpec{prefix: "c", timeout: 3 * time.Second,
		retry: []sluice.ProducerOption{sluice.WithRetry(2, 20*time.Millisecond, 200*time.Millisecond)}})
	refused := func(ex exchange) bool { return ex.status == 503 }
	harness.Eventually(t, 30*time.Second, func() bool { return len(in.wire.with(refused)) >= 50 }, "no refusals before the topic exists")

	l.busy(t)
	provisioning := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, js, topics, harness.Logger(t)); err != nil {
		t.Fatal(err)
	}
	provisioned := time.Now()
	startHandlers(t, harness.Connect(t, b), in.chk, 16, nil)
	l.ackedMore(t, 500, "after provisioning")
	in.conclude(t, "topic created under load", l)

	before := in.wire.with(func(ex exchange) bool { return ex.answered.Before(provisioning) })
	for _, ex := range before {
		if ex.status != 503 || ex.problem != sluice.ProblemBusUnavailable || !strings.Contains(ex.detail, "has no consumer") {
			t.Errorf("answered before the topic was provisioned: %d %s %q; want 503 bus-unavailable naming a missing family", ex.status, ex.problem, ex.detail)
			break
		}
	}
	after := in.wire.with(func(ex exchange) bool { return ex.sent.After(provisioned) && ex.status == 202 })
	t.Logf("%d answers before provisioning, all 503 naming a missing family; %d 202s to requests sent after it", len(before), len(after))
	if len(before) == 0 || len(after) == 0 {
		t.Errorf("want refusals before provisioning and 202s after: %d, %d", len(before), len(after))
	}
}

// TestIntegrityFamilyDeletedUnderLoad: an operator deletes billing's
// consumer while publishes are in flight, and later shipping's; the broker
// recreates each (starting with what is published after). What the
// deletion dropped (stored and acked before it, not yet received by that
// family) is counted as destroyed by the deletion; every 202 to a request
// sent after it, and every unknown outcome settled after it, must reach the
// family: as the original, or as the gateway's repair copy on the family's
// redrive subject (which is not the message stored twice).
func TestIntegrityFamilyDeletedUnderLoad(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", families...))
	b := harness.StartBroker(t, topics)
	js, _ := jetstream.New(harness.Connect(t, b))
	var urls []string
	for range 2 {
		_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), harness.Connect(t, b))
		urls = append(urls, srv.URL)
	}
	in := newIntegrity(js, urls)
	// Slow families (20 messages/s) while the deletions come: each has a
	// backlog for a deletion to destroy.
	var slow atomic.Bool
	slow.Store(true)
	startHandlers(t, harness.Connect(t, b), in.chk, 1, func(string, *sluice.Message) error {
		if slow.Load() {
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	})
	l := in.start(t, loadSpec{prefix: "d"})
	l.ackedMore(t, 300, "before the deletions")
	for _, fam := range families {
		old := consumerCreated(js, fam)
		harness.Eventually(t, 30*time.Second, func() bool { return pending(js, fam) > 50 }, "%s should have a backlog", fam)
		l.busy(t)
		if err := js.DeleteConsumer(context.Background(), sluice.StreamName("orders"), fam); err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		st, _ := streamState(js, sluice.StreamName("orders"))
		in.chk.ConsumerDeleted(fam, at, st.LastSeq)
		harness.Eventually(t, 30*time.Second, func() bool {
			c := consumerCreated(js, fam)
			return !c.IsZero() && !c.Equal(old)
		}, "the broker should recreate %s's consumer", fam)
		t.Logf("%s's consumer deleted at seq %d and recreated after %v", fam, st.LastSeq, time.Since(at).Round(time.Millisecond))
		l.ackedMore(t, 300, "after the deletion")
	}
	slow.Store(false)
	r, _ := in.conclude(t, "family consumer deleted under load", l)
	if r.Destroyed == 0 {
		t.Error("no message was destroyed by a deletion: the families had no backlog")
	}
	t.Logf("%d (message, family) pairs destroyed by the deletions; %d repair copies delivered", r.Destroyed, r.Copies)
}

// TestIntegrityStreamRecreatedWithOldDeadLetters: billing dead-letters
// every message of the topic's first stream, so its dead letters hold
// seqs 1..N. An operator deletes the stream under load; the broker
// recreates it and its families, and the new messages get seqs 1..N
// again. Billing fails the first attempt of every other new message with a
// retryable error: its redelivery must be handled, not terminated as
// "already dead-lettered" by an old dead letter at the same seq, and every
// new 202 must reach both families.
func TestIntegrityStreamRecreatedWithOldDeadLetters(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", families...))
	b := harness.StartBroker(t, topics)
	js, _ := jetstream.New(harness.Connect(t, b))
	_, srv := harness.StartGateway(t, harness.GatewayConfig(topics), harness.Connect(t, b))
	in := newIntegrity(js, []string{srv.URL})
	var deleted atomic.Pointer[time.Time] // when the first stream was deleted
	var retried atomic.Int64              // new messages whose first attempt failed
	startHandlers(t, harness.Connect(t, b), in.chk, 16, func(fam string, m *sluice.Message) error {
		if fam != "billing" {
			return nil
		}
		if d := deleted.Load(); d == nil || m.Published.Before(*d) {
			return sluice.Permanent(errors.New("a message of the first stream: dead-lettered"))
		}
		if m.Attempt == 1 && idNumber(m.ID)%2 == 0 {
			retried.Add(1)
			return errors.New("first attempt fails; the retry must be handled")
		}
		return nil
	})
	dlq := sluice.DeadLetterStream("orders", "billing")
	l := in.start(t, loadSpec{prefix: "r"})
	harness.Eventually(t, 45*time.Second, func() bool {
		st, _ := streamState(js, dlq)
		return st.Msgs >= 300
	}, "billing should dead-letter the first stream's messages")

	l.busy(t)
	if err := js.DeleteStream(context.Background(), sluice.StreamName("orders")); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	deleted.Store(&at)
	in.chk.StreamDeleted(at)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, dlq)
	if err != nil {
		t.Fatal(err)
	}
	// The highest seq the old dead letters name.
	var oldSeq uint64
	old := s.CachedInfo().State
	for seq := old.FirstSeq; seq <= old.LastSeq; seq++ {
		if m, err := s.GetMsg(ctx, seq); err == nil {
			oldSeq = max(oldSeq, originalSeq(m.Header))
		}
	}
	harness.Eventually(t, 30*time.Second, func() bool {
		return !consumerCreated(js, "billing").IsZero() && !consumerCreated(js, "shipping").IsZero()
	}, "the broker should recreate the stream and its families")
	t.Logf("stream deleted with %d dead letters up to seq %d; recreated after %v", old.Msgs, oldSeq, time.Since(at).Round(time.Millisecond))
	harness.Eventually(t, 45*time.Second, func() bool {
		st, ok := streamState(js, sluice.StreamName("orders"))
		return ok && st.LastSeq > oldSeq
	}, "the new stream's seqs should pass the old dead letters' (%d)", oldSeq)
	l.ackedMore(t, 100, "after the new seqs passed the old")
	_, final := in.conclude(t, "stream recreated with old dead letters", l)

	// No new message reached billing's dead letters: its only failures
	// were first attempts. (A worker holding a message of the first
	// stream at the deletion may dead-letter it after: its family was
	// created before the deletion.)
	newDead := 0
	for seq := old.LastSeq + 1; ; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		created, _ := time.Parse(time.RFC3339Nano, m.Header.Get(sluice.HeaderOriginalFamilyCreated))
		if created.After(at) {
			newDead++
			t.Errorf("a message of the new stream dead-lettered: %v", m.Header)
		}
	}
	t.Logf("%d new messages' first attempts failed at billing; %d dead letters of the first stream kept, %d of the new one", retried.Load(),
		final.Families["billing"].DeadLetters, newDead)
	if retried.Load() == 0 {
		t.Error("no new message's first attempt failed: the scenario did not run")
	}
}

// originalSeq is a dead letter's original seq (0 if none).
func originalSeq(h nats.Header) uint64 {
	n, _ := strconv.ParseUint(h.Get(sluice.HeaderOriginalSeq), 10, 64)
	return n
}

// pending is how many messages family's consumer has not delivered yet.
func pending(js jetstream.JetStream, family string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, sluice.StreamName("orders"), family)
	if err != nil {
		return 0
	}
	return c.CachedInfo().NumPending
}
