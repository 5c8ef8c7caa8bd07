package test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestIntegrityRedriveWithFamilyMissing: billing fails every tenth message
// for good, so its dead letters fill. Under load, an operator deletes
// billing's consumer and redrives billing's dead letters at once: the
// redrive is refused (503) and keeps every dead letter, since no consumer
// would take the copies. Once the broker has recreated the consumer and
// billing's handler is fixed, redrives empty the dead letters and billing
// handles every copy. No dead letter vanishes unhandled (the final state
// holds each recorded dead letter or its handling).
func TestIntegrityRedriveWithFamilyMissing(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", families...))
	b := harness.StartBroker(t, topics)
	js, _ := jetstream.New(harness.Connect(t, b))
	cfg := harness.GatewayConfig(topics)
	cfg.RedriveRate = 1000
	_, srv := harness.StartGateway(t, cfg, harness.Connect(t, b))
	in := newIntegrity(js, []string{srv.URL})
	var broken atomic.Bool
	broken.Store(true)
	var copiesHandled atomic.Int64
	startHandlers(t, harness.Connect(t, b), in.chk, 16, func(fam string, m *sluice.Message) error {
		if fam != "billing" || idNumber(m.ID)%10 != 0 {
			return nil
		}
		if broken.Load() {
			return sluice.Permanent(errors.New("billing cannot handle it yet"))
		}
		if harness.DeliveryOf(m).Copy {
			copiesHandled.Add(1)
		}
		return nil
	})
	admin, err := sluice.NewAdmin(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	dlq := sluice.DeadLetterStream("orders", "billing")
	deadLetters := func() uint64 { st, _ := streamState(js, dlq); return st.Msgs }
	l := in.start(t, loadSpec{prefix: "x"})
	harness.Eventually(t, 45*time.Second, func() bool { return deadLetters() >= 30 }, "billing should dead-letter")

	// Delete and redrive at once: the broker recreates the consumer about
	// a second after its deletion; a redrive that came after that is no
	// test of a missing family, so it is tried again.
	refused := false
	for try := 1; try <= 5 && !refused; try++ {
		harness.Eventually(t, 30*time.Second, func() bool { return !consumerCreated(js, "billing").IsZero() }, "billing's consumer")
		old := consumerCreated(js, "billing")
		l.busy(t)
		if err := js.DeleteConsumer(context.Background(), sluice.StreamName("orders"), "billing"); err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		st, _ := streamState(js, sluice.StreamName("orders"))
		in.chk.ConsumerDeleted("billing", at, st.LastSeq)
		before := deadLetters()
		res, err := admin.Redrive(context.Background(), "orders", "billing", 0, 10000)
		switch {
		case err != nil:
			var se *sluice.Error
			if !errors.As(err, &se) || se.Status != 503 {
				t.Fatalf("redrive with billing's consumer missing: %v, want a 503", err)
			}
			after := deadLetters()
			if after < before {
				t.Errorf("a refused redrive took dead letters: %d before, %d after", before, after)
			}
			t.Logf("redrive with billing's consumer missing: %d %s (%s); %d dead letters before, %d after", se.Status, se.Type, se.Detail, before, after)
			refused = true
		default:
			t.Logf("try %d: the redrive came after billing's consumer was recreated: %+v", try, res)
		}
		harness.Eventually(t, 30*time.Second, func() bool {
			c := consumerCreated(js, "billing")
			return !c.IsZero() && !c.Equal(old)
		}, "the broker should recreate billing's consumer")
	}
	if !refused {
		t.Fatal("no redrive came while billing's consumer was missing")
	}

	broken.Store(false)
	redriven := 0
	harness.Eventually(t, 45*time.Second, func() bool {
		res, err := admin.Redrive(context.Background(), "orders", "billing", 0, 10000)
		if err != nil {
			return false // the gateway has not seen the consumer again yet
		}
		redriven += res.Redriven
		return res.Remaining == 0
	}, "billing's dead letters should all be redriven")
	l.ackedMore(t, 200, "after the redrive")
	_, final := in.conclude(t, "redrive with the family's consumer missing", l)
	t.Logf("%d dead letters redriven; billing handled %d copies", redriven, copiesHandled.Load())
	if n := final.Families["billing"].DeadLetters; n != 0 || redriven == 0 || copiesHandled.Load() < int64(redriven) {
		t.Errorf("billing: %d dead letters left, %d redriven, %d copies handled: want none left and every copy handled", n, redriven, copiesHandled.Load())
	}
}

// TestIntegrityAtomicBatchDeadLettersR1: NDJSON batches of 64 messages to a
// single-replica topic, each stored as an atomic batch (every commit of 32
// or more is one); billing fails every message for good, shipping every
// third. Under load the workers are restarted while they hold messages.
// Every message reaches each family or its dead letters, and no family
// stalls: nothing is pending at the end.
func TestIntegrityAtomicBatchDeadLettersR1(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", families...))
	b := harness.StartBroker(t, topics)
	nc := harness.Connect(t, b)
	js, _ := jetstream.New(nc)
	url, reg := harness.StartGatewayReg(t, harness.GatewayConfig(topics), harness.Connect(t, b))
	atomicBatchDeadLetters(t, js, harness.Connect(t, b), url, reg, 32, 640)
}

// TestIntegrityAtomicBatchDeadLettersR3 is TestIntegrityAtomicBatchDeadLettersR1
// on a topic replicated on three brokers, with the gateway's
// commit_atomic_replicated on (every commit of 2 or more is an atomic batch).
func TestIntegrityAtomicBatchDeadLettersR3(t *testing.T) {
	topic := harness.Topic("orders", families...)
	topic.Replicas = 3
	topics := map[string]topology.Topic{"orders": topic}
	c := harness.StartCluster(t, 3, topics)
	js, _ := jetstream.New(c.Connect(t))
	c.WaitCurrent(t, js, "orders", "cluster not settled")
	cfg := harness.GatewayConfig(topics)
	cfg.CommitAtomicReplicated = true
	url, reg := harness.StartGatewayReg(t, cfg, c.Connect(t))
	// Half the messages of R1: every dead letter is a replicated write.
	atomicBatchDeadLetters(t, js, c.Connect(t), url, reg, 2, 320)
}

// atomicBatchDeadLetters runs the batch load through the gateway at url
// (metrics in reg) whose commits of atomicMin or more are atomic batches:
// acks of perPhase messages before the workers' restart and after.
func atomicBatchDeadLetters(t *testing.T, js jetstream.JetStream, readers *nats.Conn, url string, reg *prometheus.Registry, atomicMin int, perPhase int64) {
	t.Helper()
	in := newIntegrity(js, []string{url})
	h := startHandlers(t, readers, in.chk, 8, func(fam string, m *sluice.Message) error {
		if fam == "billing" || idNumber(m.ID)%3 == 0 {
			return sluice.Permanent(errors.New("refused for good"))
		}
		return nil
	})
	l := in.start(t, loadSpec{prefix: "a", batch: 64, concurrency: 2, pause: 100 * time.Millisecond, timeout: 20 * time.Second})
	l.ackedMore(t, perPhase, "before the workers' restart")
	l.busy(t)
	h.restart()
	l.ackedMore(t, perPhase, "after the workers' restart")
	r, final := in.conclude(t, "atomic batches dead-lettered", l)

	commits, messages := commitSizes(t, reg)
	t.Logf("%d atomic commits of %.0f messages on average; dead letters: billing %d, shipping %d", commits, messages/float64(max(commits, 1)),
		final.Families["billing"].DeadLetters, final.Families["shipping"].DeadLetters)
	if commits == 0 || messages/float64(commits) < float64(atomicMin) {
		t.Errorf("%d atomic commits with %.0f messages: the batches were not stored as atomic batches", commits, messages)
	}
	// Every message stored is a dead letter of billing's, each once.
	if n := final.Families["billing"].DeadLetters; n < uint64(r.Acked) || n > uint64(r.Acked+r.Unknown) {
		t.Errorf("billing holds %d dead letters for %d acked messages and %d unknown outcomes", n, r.Acked, r.Unknown)
	}
}

// commitSizes reads the gateway's atomic commits: how many, and how many
// messages they held together.
func commitSizes(t *testing.T, reg *prometheus.Registry) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_gateway_commit_batch_messages" {
			continue
		}
		var n uint64
		var sum float64
		for _, m := range mf.GetMetric() {
			n += m.GetHistogram().GetSampleCount()
			sum += m.GetHistogram().GetSampleSum()
		}
		return n, sum
	}
	return 0, 0
}
