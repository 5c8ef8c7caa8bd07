package broker_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

func TestAckExpiryFollowsTheRetryCurve(t *testing.T) {
	f := harness.Topic("orders", "billing").Families["billing"]
	f.AckWait, f.MaxAttempts = time.Second, 5
	f.BackoffCurve, f.BackoffInitial, f.BackoffMax = "exponential", 100*time.Millisecond, 300*time.Millisecond
	want := []time.Duration{1100 * time.Millisecond, 1200 * time.Millisecond, 1300 * time.Millisecond, 1300 * time.Millisecond, 1300 * time.Millisecond}
	if got := broker.AckExpiry(f); !slices.Equal(got, want) {
		t.Errorf("exponential: %v, want %v", got, want)
	}
	f.BackoffCurve, f.Backoff = "schedule", nil
	if got := broker.AckExpiry(f); got != nil {
		t.Errorf("no delays: %v, want nil (the plain ack wait)", got)
	}
}

// TestCrashedAttemptWaitsTheRetryDelay: a message whose holder never
// answers is redelivered only after the ack wait plus the family's retry
// delay, as a handler error would be retried (not after the ack wait alone).
func TestCrashedAttemptWaitsTheRetryDelay(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	f := topic.Families["billing"]
	f.AckWait, f.MaxAttempts, f.Backoff = 200*time.Millisecond, 3, []time.Duration{800 * time.Millisecond}
	topic.Families["billing"] = f
	b := harness.StartBroker(t, harness.Topics(topic))
	js, _ := jetstream.New(harness.Connect(t, b))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, sluice.Subject("orders"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	c, err := js.Consumer(ctx, sluice.StreamName("orders"), "billing")
	if err != nil {
		t.Fatal(err)
	}
	var first time.Time
	for n := 1; n <= 2; n++ {
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		msg, ok := <-batch.Messages()
		if !ok {
			t.Fatalf("delivery %d: nothing within 10 s (%v)", n, batch.Error())
		}
		md, _ := msg.Metadata()
		if int(md.NumDelivered) != n {
			t.Fatalf("delivery %d has NumDelivered %d", n, md.NumDelivered)
		}
		if n == 1 {
			first = time.Now() // never acked: the holder "crashed"
			continue
		}
		if gap := time.Since(first); gap < time.Second {
			t.Fatalf("redelivered %v after the first delivery; want at least the ack wait 200ms + retry delay 800ms", gap)
		}
		_ = msg.Ack()
	}
}

// TestProvisionUpgradesFamiliesForRedrive: a topic provisioned before
// redrive (one subject, families filtering on it) gains the redrive
// subjects in place, keeping its messages.
func TestProvisionUpgradesFamiliesForRedrive(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	b := harness.StartBroker(t, harness.Topics(harness.Topic("other", "x")))
	js, _ := jetstream.New(harness.Connect(t, b))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old := broker.StreamConfig(topic)
	old.Subjects = []string{sluice.Subject("orders")}
	s, err := js.CreateStream(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	oldC := broker.ConsumerConfig(topic, topic.Families["billing"])
	oldC.FilterSubjects, oldC.FilterSubject, oldC.BackOff, oldC.AckWait = nil, sluice.Subject("orders"), nil, 2*time.Second
	if _, err := s.CreateConsumer(ctx, oldC); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, sluice.Subject("orders"), []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if err := broker.Provision(ctx, js, harness.Topics(topic), harness.Logger(t)); err != nil {
		t.Fatal(err)
	}
	s, _ = js.Stream(ctx, sluice.StreamName("orders"))
	if got := s.CachedInfo().Config.Subjects; !slices.Equal(got, []string{sluice.Subject("orders"), sluice.RedriveSubjects("orders")}) {
		t.Errorf("subjects %v", got)
	}
	if n := s.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("%d messages after the upgrade, want 1", n)
	}
	c, _ := s.Consumer(ctx, "billing")
	if got := c.CachedInfo().Config.FilterSubjects; !slices.Equal(got, []string{sluice.Subject("orders"), sluice.RedriveSubject("orders", "billing")}) {
		t.Errorf("filters %v (single %q)", got, c.CachedInfo().Config.FilterSubject)
	}
}

// TestBrokerFailsWhenItsRoutePortIsTaken: nats-server only logs a route
// listener that cannot bind; the broker must fail its start at once, not
// wait for routes that will never come.
func TestBrokerFailsWhenItsRoutePortIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := harness.BrokerConfig(t.TempDir(), harness.Topics(harness.Topic("orders", "billing")))
	cfg.Cluster = broker.Cluster{Name: "test", Listen: taken.Addr().String(), Routes: []string{"nats-route://127.0.0.1:1"}}
	start := time.Now()
	b, err := broker.New(cfg, harness.Logger(t), nil)
	if err == nil {
		b.Shutdown()
		t.Fatal("started with its route port taken")
	}
	if !errors.Is(err, broker.ErrNotReady) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("want ErrNotReady naming the bind failure, got %v", err)
	}
	if waited := time.Since(start); waited > cfg.ReadyTimeout/2 {
		t.Errorf("failed only after %v", waited)
	}
}
