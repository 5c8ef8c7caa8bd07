package sluice_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebus/sluice/internal/jsbatch"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestAtomicBatchDeadLetters: messages a gateway stored as one atomic batch
// keep the server's Nats-Batch-* headers; their dead letters must not carry
// them (the dead-letter stream refuses atomic-batch headers), and the
// handler never sees them.
func TestAtomicBatchDeadLetters(t *testing.T) {
	s := startStack(t, harness.Topic("orders", "billing"))
	deadLetterAtomicBatch(t, s.nc)
}

// TestAtomicBatchDeadLettersR3 is TestAtomicBatchDeadLetters on a topic
// replicated on three brokers.
func TestAtomicBatchDeadLettersR3(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	topic.Replicas = 3
	c := harness.StartCluster(t, 3, harness.Topics(topic))
	nc := c.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitCurrent(t, js, "orders", "cluster not settled")
	deadLetterAtomicBatch(t, nc)
}

// deadLetterAtomicBatch stores 64 messages in topic orders as one atomic
// batch, as the gateway's committer does, and runs a billing worker with a
// small credit that fails each of them permanently: all must reach the
// dead letters, without a Nats-* header.
func deadLetterAtomicBatch(t *testing.T, nc *nats.Conn) {
	t.Helper()
	const total, credit = 64, 4
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream := sluice.StreamName("orders")
	msgs := make([]*nats.Msg, total)
	for i := range msgs {
		m := nats.NewMsg(sluice.Subject("orders"))
		m.Data = fmt.Appendf(nil, "order %d", i)
		m.Header.Set(sluice.HeaderContentType, "text/plain")
		m.Header.Set(sluice.HeaderMetaPrefix+"Customer", "c-9")
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("o-%d", i))
		m.Header.Set(jetstream.ExpectedStreamHeader, stream)
		msgs[i] = m
	}
	first, err := jsbatch.Publish(ctx, nc, stream, msgs)
	if err != nil {
		t.Fatalf("atomic batch: %v", err)
	}
	topic, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	// A direct get may be served by a replica that has not applied the
	// batch yet.
	var stored *jetstream.RawStreamMsg
	harness.Eventually(t, 10*time.Second, func() bool {
		stored, err = topic.GetMsg(ctx, first)
		return err == nil
	}, "the first message of the batch should be readable")
	if stored.Header.Get(jsbatch.HeaderID) == "" {
		t.Fatalf("the stored message has no %s header (%v): this test no longer exercises what it was written for", jsbatch.HeaderID, stored.Header)
	}

	var mu sync.Mutex
	seenHeaders := map[string]bool{}
	seenIDs := map[string]bool{}
	w, err := sluice.NewWorker(nc, "orders", "billing", sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
		mu.Lock()
		defer mu.Unlock()
		for k := range m.Header {
			seenHeaders[k] = true
		}
		seenIDs[m.ID] = true
		return sluice.Permanent(errors.New("refused by the test"))
	}), sluice.WithCredit(credit), sluice.WithWorkerLogger(harness.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
	dlq := sluice.DeadLetterStream("orders", "billing")
	harness.Eventually(t, time.Minute, func() bool {
		return streamMsgs(t, js, dlq) == total && streamMsgs(t, js, stream) == 0
	}, "all %d messages should be dead-lettered and gone from the topic", total)

	ids := map[string]bool{}
	for _, dl := range readAll(t, js, dlq, total) {
		h := dl.Headers()
		// The only bus headers on a dead letter are those of its own
		// publish: its deduplication id and the expected (dead-letter)
		// stream. None of the original's is copied.
		for k, v := range h {
			switch {
			case !isTransportHeader(k):
			case k == jetstream.MsgIDHeader && !strings.HasPrefix(v[0], "o-"):
			case k == jetstream.ExpectedStreamHeader && v[0] == dlq:
			default:
				t.Errorf("dead letter %s carries the original's bus header %s: %v", h.Get(sluice.HeaderOriginalID), k, h)
			}
		}
		if !bytes.HasPrefix(dl.Data(), []byte("order ")) || h.Get(sluice.HeaderContentType) != "text/plain" ||
			h.Get(sluice.HeaderMetaPrefix+"Customer") != "c-9" || h.Get(sluice.HeaderDeadReason) != sluice.ReasonPermanent ||
			h.Get(sluice.HeaderOriginalSeq) == "" {
			t.Errorf("dead letter %q %v", dl.Data(), h)
		}
		ids[h.Get(sluice.HeaderOriginalID)] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range total {
		id := fmt.Sprintf("o-%d", i)
		if !ids[id] {
			t.Errorf("no dead letter has original id %s", id)
		}
		if !seenIDs[id] {
			t.Errorf("the handler never saw message %s", id)
		}
	}
	for k := range seenHeaders {
		if isTransportHeader(k) {
			t.Errorf("the handler saw transport header %s", k)
		}
	}
}

// TestRefusedDeadLetterFreesTheCredit: a dead-letter stream that refuses a
// copy for good (here: too large for it, a 400) does not stall the family:
// the message is handed back and stays in its topic, the others are
// handled, and the refusal is counted.
func TestRefusedDeadLetterFreesTheCredit(t *testing.T) {
	s := startStack(t, harness.Topic("orders", "billing"))
	ctx := context.Background()
	dlq, err := s.js.Stream(ctx, sluice.DeadLetterStream("orders", "billing"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := dlq.CachedInfo().Config
	cfg.MaxMsgSize = 1024
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	p := s.producer(t)
	poison, err := p.Publish(ctx, "orders", bytes.Repeat([]byte("x"), 4096), sluice.WithID("poison"))
	if err != nil {
		t.Fatal(err)
	}
	const others = 10
	for i := range others {
		if _, err := p.Publish(ctx, "orders", fmt.Appendf(nil, "ok %d", i)); err != nil {
			t.Fatal(err)
		}
	}

	reg := prometheus.NewRegistry()
	var acked atomic.Int32
	w, err := sluice.NewWorker(s.nc, "orders", "billing", sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
		if m.ID == "poison" {
			return sluice.Permanent(errors.New("poison"))
		}
		acked.Add(1)
		return nil
	}), sluice.WithCredit(1), sluice.WithRegisterer(reg), sluice.WithWorkerLogger(harness.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
	harness.Eventually(t, 30*time.Second, func() bool {
		return acked.Load() == others && workerOutcome(t, reg, "dead_letter_refused") >= 1 &&
			s.streamMsgs(t, sluice.StreamName("orders")) == 1
	}, "the other messages should be handled past the refused one, which stays in the topic, counted")
	topic, err := s.js.Stream(ctx, sluice.StreamName("orders"))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := topic.GetMsg(ctx, poison.Seq); err != nil || len(m.Data) != 4096 {
		t.Fatalf("the refused message should stay in its topic: %v", err)
	}
	if n := s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")); n != 0 {
		t.Fatalf("%d dead letters, want none", n)
	}
	if n := workerOutcome(t, reg, "dead_lettered"); n != 0 {
		t.Fatalf("dead_lettered counted %v times, nothing was", n)
	}
}

// isTransportHeader: a NATS or JetStream header (Nats-Msg-Id,
// Nats-Batch-Id, Nats-Expected-Stream, ...).
func isTransportHeader(k string) bool { return strings.HasPrefix(strings.ToLower(k), "nats-") }

func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Logf("stream %s: %v", stream, err)
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Logf("stream %s: %v", stream, err)
		return 0
	}
	return info.State.Msgs
}

// readAll reads the first n messages of stream through an ordered consumer
// (served by the stream's leader, unlike a direct get from a replica).
func readAll(t *testing.T, js jetstream.JetStream, stream string, n int) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < n {
		b, err := cons.Fetch(n-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			out = append(out, m)
		}
		if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d messages of %s", len(out), n, stream)
		}
	}
	return out
}

// workerOutcome is sluice_worker_messages_total for outcome in reg, summed
// over topics and families.
func workerOutcome(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "sluice_worker_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
