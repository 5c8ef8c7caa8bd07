package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// A message whose durable ack does not come in time may be stored: it is an
// unknown outcome (503, retry with the same key), never a receipt. Each
// test holds the broker's answers at a proxy until every entry has been
// answered, so no ack can arrive in time, and has exactly one clock that
// can end the wait: the entry's deadline, or the bus client's own ack
// timeout, never both at the same length (two such timers race, and a
// mutant on one of the two paths would survive now and then).

// unknownEnv is commitEnv with the gateway's publish timeout (the bus
// client's ack timeout for one-by-one publishes) set to ackTimeout.
func unknownEnv(t *testing.T, ackTimeout time.Duration) (*Gateway, *holdProxy, jetstream.JetStream, *prometheus.Registry) {
	t.Helper()
	return heldEnv(t, func(cfg *Config) { cfg.PublishTimeout = ackTimeout })
}

// heldEnv is commitEnv with one message stored (seq 1).
func heldEnv(t *testing.T, set func(*Config)) (*Gateway, *holdProxy, jetstream.JetStream, *prometheus.Registry) {
	t.Helper()
	g, proxy, js, reg := commitEnv(t, set)
	// One message first: the families' reading is then in hand, and a
	// commit under held answers is sent rather than waiting for one.
	// Tried again with the same key while the bus is slower than a short
	// ackTimeout (a loaded machine): stored once, as seq 1.
	for try := 1; ; try++ {
		var warm sync.WaitGroup
		w := newEntry("warm", "warm", time.Now().Add(time.Minute), &warm)
		g.commits["orders"].submit(w)
		warm.Wait()
		if w.err == nil && w.seq == 1 {
			break
		}
		if try == 30 {
			t.Fatalf("warm-up: seq %d err %v", w.seq, w.err)
		}
	}
	return g, proxy, js, reg
}

// atomicCommits is how many commits went out as one atomic batch.
func atomicCommits(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == "sluice_gateway_commit_batch_messages" {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// storedCount waits until the stream holds n messages: the broker stored
// what it was sent, whatever its held answers said.
func storedCount(t *testing.T, js jetstream.JetStream, n uint64) {
	t.Helper()
	s, err := js.Stream(context.Background(), sluice.StreamName("orders"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := s.Info(context.Background())
		if err == nil && info.State.LastSeq == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream: %+v (%v), want %d messages stored", info, err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantUnknown fails unless every entry is an unknown outcome with nothing
// that looks stored (a seq, a duplicate).
func wantUnknown(t *testing.T, es []*entry) {
	t.Helper()
	for i, e := range es {
		if !errors.Is(e.err, errOutcomeUnknown) || e.seq != 0 || e.dup {
			t.Errorf("entry %d: seq %d dup %v err %v; want an unknown outcome, nothing stored-looking", i, e.seq, e.dup, e.err)
		}
	}
}

// TestAtomicCommitPastItsDeadlineIsUnknown: 40 messages to a single-replica
// topic are one atomic batch (from atomicMin on). Its commit's answer is
// held past the entries' deadline: every entry is an unknown outcome, and
// the batch was in fact stored.
func TestAtomicCommitPastItsDeadlineIsUnknown(t *testing.T) {
	g, proxy, js, reg := unknownEnv(t, time.Hour)
	c := g.commits["orders"]
	if c.atomicMin != atomicMinR1 || atomicMinR1 > 40 {
		t.Fatalf("atomicMin %d: 40 messages would not be one atomic batch", c.atomicMin)
	}
	proxy.hold()
	var done sync.WaitGroup
	deadline := time.Now().Add(3 * time.Second)
	es := make([]*entry, 40)
	for i := range es {
		es[i] = newEntry(fmt.Sprintf("a%d", i), fmt.Sprintf("m%d", i), deadline, &done)
	}
	c.submit(es...)
	done.Wait()
	proxy.release()

	wantUnknown(t, es)
	if n := atomicCommits(t, reg); n != 1 {
		t.Errorf("atomic commits: %d, want the one of 40 messages", n)
	}
	if n := testutil.ToFloat64(g.metrics.messages.WithLabelValues("orders", "unknown")); n != 40 {
		t.Errorf("messages counted unknown: %v, want 40", n)
	}
	storedCount(t, js, 41)
}

// TestAckPastTheEntrysDeadlineIsUnknown: one message published on its own;
// its ack is held past the entry's deadline while the bus client's own ack
// timeout is an hour away, so the deadline alone ends the wait. Every time:
// an unknown outcome; the retry with the same key is the stored message's
// duplicate.
func TestAckPastTheEntrysDeadlineIsUnknown(t *testing.T) {
	g, proxy, js, reg := unknownEnv(t, time.Hour)
	c := g.commits["orders"]
	proxy.hold()
	var done sync.WaitGroup
	e := newEntry("k", "m", time.Now().Add(2*time.Second), &done)
	c.submit(e)
	done.Wait()
	proxy.release()

	wantUnknown(t, []*entry{e})
	if n := atomicCommits(t, reg); n != 0 {
		t.Errorf("atomic commits: %d, want one message published on its own", n)
	}
	if n := testutil.ToFloat64(g.metrics.messages.WithLabelValues("orders", "unknown")); n != 1 {
		t.Errorf("messages counted unknown: %v, want 1", n)
	}
	storedCount(t, js, 2)
	var again sync.WaitGroup
	retry := newEntry("k", "m", time.Now().Add(time.Minute), &again)
	c.submit(retry)
	again.Wait()
	if retry.err != nil || !retry.dup || retry.seq != 2 {
		t.Fatalf("retry with the same key: seq %d dup %v err %v; want the duplicate of seq 2", retry.seq, retry.dup, retry.err)
	}
}

// TestAckTimeoutOfTheBusIsUnknown: the other clock. The entry's deadline is
// an hour away and the bus client's ack timeout a second: its timeout
// alone ends the wait, and the entry is an unknown outcome.
func TestAckTimeoutOfTheBusIsUnknown(t *testing.T) {
	g, proxy, js, _ := unknownEnv(t, time.Second)
	c := g.commits["orders"]
	proxy.hold()
	var done sync.WaitGroup
	e := newEntry("k", "m", time.Now().Add(time.Hour), &done)
	c.submit(e)
	done.Wait()
	proxy.release()

	wantUnknown(t, []*entry{e})
	if e.err == nil || !strings.Contains(e.err.Error(), jetstream.ErrAsyncPublishTimeout.Error()) {
		t.Errorf("err %v: want the bus client's ack timeout to have ended the wait", e.err)
	}
	storedCount(t, js, 2)
}

// TestClassifyFollowsTheTopicsReplicas: a store failure a leader reports on
// a replicated topic may come after the entry committed on its followers,
// so the gateway's classify answers it as an unknown outcome there, and as
// "nothing stored" only for a single-replica topic.
func TestClassifyFollowsTheTopicsReplicas(t *testing.T) {
	one, three := topology.DefaultTopic(), topology.DefaultTopic()
	one.Name, three.Name, three.Replicas = "one", "three", 3
	g := &Gateway{cfg: Config{Topics: map[string]topology.Topic{"one": one, "three": three}}}
	classify := func(topic string, err error) error {
		c := newCommitter(commitSettings{topic: topic, replicas: g.cfg.Topics[topic].Replicas}, commitDeps{})
		return c.classify(err)
	}
	storeFailed := &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "store failed: i/o error"}
	if err := classify("one", storeFailed); !errors.Is(err, errBusUnavailable) || errors.Is(err, errOutcomeUnknown) {
		t.Errorf("R1 store failure: %v, want bus unavailable (nothing stored)", err)
	}
	if err := classify("three", storeFailed); !errors.Is(err, errOutcomeUnknown) {
		t.Errorf("R3 store failure: %v, want an unknown outcome", err)
	}
}
