package broker_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// healingBroker runs a broker checking its topology every interval, its
// alarms evaluated every 50 ms on its own manager (hold 100 ms), until the
// test ends.
func healingBroker(t *testing.T, topics map[string]topology.Topic, interval time.Duration) (*broker.Broker, *alarm.Manager, jetstream.JetStream) {
	t.Helper()
	cfg := harness.BrokerConfig(t.TempDir(), topics)
	cfg.ReconcileInterval = interval
	cfg.Alarms.Interval = 50 * time.Millisecond
	cfg.Alarms.Hold = 100 * time.Millisecond
	b, err := broker.New(cfg, harness.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Shutdown)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = b.Run(ctx) })
	t.Cleanup(func() { // before Shutdown (cleanups run last first)
		cancel()
		wg.Wait()
		if runErr != nil {
			t.Errorf("Run: %v", runErr)
		}
	})
	js, err := jetstream.New(harness.Connect(t, b))
	if err != nil {
		t.Fatal(err)
	}
	return b, b.Alarms(), js
}

// consumer is the family's consumer info, nil if it does not exist.
func consumer(t *testing.T, js jetstream.JetStream, topic, family string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, sluice.StreamName(topic), family)
	if err != nil {
		return nil
	}
	return c.CachedInfo()
}

// cleared reports whether the alarm was raised and has cleared since.
func cleared(m *alarm.Manager, id string) (alarm.Alarm, bool) {
	_, old := m.List()
	for _, a := range old {
		if a.ID == id {
			return a, true
		}
	}
	return alarm.Alarm{}, false
}

// TestDeletedFamilyIsRecreated: an operator deletes a family's consumer on
// a live broker; the periodic check recreates it, starting after the
// messages already in the topic, raises family_missing and clears it.
func TestDeletedFamilyIsRecreated(t *testing.T) {
	b, m, js := healingBroker(t, harness.Topics(harness.Topic("orders", "billing", "shipping")), 200*time.Millisecond)
	ctx := context.Background()
	if _, err := js.Publish(ctx, sluice.Subject("orders"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	old := consumer(t, js, "orders", "billing")
	if err := js.DeleteConsumer(ctx, sluice.StreamName("orders"), "billing"); err != nil {
		t.Fatal(err)
	}
	var now *jetstream.ConsumerInfo
	harness.Eventually(t, 30*time.Second, func() bool {
		now = consumer(t, js, "orders", "billing")
		return now != nil && !now.Created.Equal(old.Created)
	}, "the deleted family's consumer should be recreated")
	if now.Config.DeliverPolicy != jetstream.DeliverNewPolicy || now.Config.AckPolicy != jetstream.AckExplicitPolicy ||
		!slices.Equal(now.Config.FilterSubjects, old.Config.FilterSubjects) || now.NumPending != 0 {
		t.Fatalf("recreated consumer: deliver %v, ack %v, filters %v, pending %d; want new, explicit, %v, 0 (shipping's backlog is not billing's)",
			now.Config.DeliverPolicy, now.Config.AckPolicy, now.Config.FilterSubjects, now.NumPending, old.Config.FilterSubjects)
	}
	if _, err := js.Publish(ctx, sluice.Subject("orders"), []byte("after")); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		c := consumer(t, js, "orders", "billing")
		return c != nil && c.NumPending == 1
	}, "the recreated family should receive what is published after")

	id := alarm.ID(alarm.FamilyMissing, "orders/billing")
	var a alarm.Alarm
	harness.Eventually(t, 30*time.Second, func() bool {
		var ok bool
		a, ok = cleared(m, id)
		return ok
	}, "%s should have been raised, then cleared", id)
	if a.Severity != alarm.Critical || !strings.Contains(a.Cause, "recreated") {
		t.Errorf("alarm %+v", a)
	}
	if _, ok := cleared(m, alarm.ID(alarm.FamilyMissing, "orders/shipping")); ok {
		t.Error("family_missing raised for shipping, which was never missing")
	}
	if !b.Ready() {
		t.Error("not ready once the family is back")
	}
}

// TestDeletionAdvisoryTriggersTheCheck: with a check due only in an hour,
// JetStream's deletion advisories make the broker recreate a deleted
// consumer, and a deleted topic stream with its families, at once.
func TestDeletionAdvisoryTriggersTheCheck(t *testing.T) {
	_, _, js := healingBroker(t, harness.Topics(harness.Topic("orders", "billing", "shipping")), time.Hour)
	ctx := context.Background()
	old := consumer(t, js, "orders", "billing")
	if err := js.DeleteConsumer(ctx, sluice.StreamName("orders"), "billing"); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, func() bool {
		c := consumer(t, js, "orders", "billing")
		return c != nil && !c.Created.Equal(old.Created)
	}, "the consumer should be recreated on its deletion advisory")

	if err := js.DeleteStream(ctx, sluice.StreamName("orders")); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, func() bool {
		return consumer(t, js, "orders", "billing") != nil && consumer(t, js, "orders", "shipping") != nil
	}, "the topic's stream and both families should be recreated on the stream's deletion advisory")
	s, err := js.Stream(ctx, sluice.StreamName("orders"))
	if err != nil || s.CachedInfo().Config.Retention != jetstream.InterestPolicy {
		t.Fatalf("recreated stream: %v", err)
	}
}

// TestUnusableFamilyMakesTheBrokerUnready: a family's consumer replaced by
// one the broker cannot use (no acks) is reported: /readyz says no and
// family_missing is active, naming the cause, until it is gone and the
// broker has recreated the real one.
func TestUnusableFamilyMakesTheBrokerUnready(t *testing.T) {
	topic := harness.Topic("orders", "billing", "shipping")
	b, m, js := healingBroker(t, harness.Topics(topic), 200*time.Millisecond)
	ctx := context.Background()
	bad := broker.ConsumerConfig(topic, topic.Families["billing"])
	bad.AckPolicy, bad.BackOff = jetstream.AckNonePolicy, nil
	harness.Eventually(t, 30*time.Second, func() bool {
		// The broker may recreate the real one in between: again.
		_ = js.DeleteConsumer(ctx, sluice.StreamName("orders"), "billing")
		_, err := js.CreateConsumer(ctx, sluice.StreamName("orders"), bad)
		return err == nil
	}, "replacing billing's consumer")
	id := alarm.ID(alarm.FamilyMissing, "orders/billing")
	harness.Eventually(t, 30*time.Second, func() bool {
		active, _ := m.List()
		i := slices.IndexFunc(active, func(a alarm.Alarm) bool { return a.ID == id })
		return !b.Ready() && i >= 0 && strings.Contains(active[i].Cause, "ack policy")
	}, "an unusable family should make the broker unready and raise %s naming the ack policy", id)
	if c := consumer(t, js, "orders", "billing"); c == nil || c.Config.AckPolicy != jetstream.AckNonePolicy {
		t.Fatal("the broker changed a consumer it cannot use; it must only report it")
	}

	if err := js.DeleteConsumer(ctx, sluice.StreamName("orders"), "billing"); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, func() bool {
		c := consumer(t, js, "orders", "billing")
		return b.Ready() && c != nil && c.Config.AckPolicy == jetstream.AckExplicitPolicy
	}, "the broker should recreate billing and be ready again")
}

// TestProvisionFailingHalfway: one family's consumer is incompatible;
// Provision returns that error, naming the family, and still provisions
// the others; a broker starting on that bus does not become ready.
func TestProvisionFailingHalfway(t *testing.T) {
	dir := t.TempDir()
	topic := harness.Topic("orders", "billing", "shipping")
	b := harness.StartBrokerIn(t, dir, harness.Topics(harness.Topic("other", "x")))
	js, _ := jetstream.New(harness.Connect(t, b))
	ctx := context.Background()
	s, err := js.CreateStream(ctx, broker.StreamConfig(topic))
	if err != nil {
		t.Fatal(err)
	}
	bad := broker.ConsumerConfig(topic, topic.Families["billing"])
	bad.AckPolicy, bad.BackOff = jetstream.AckNonePolicy, nil
	if _, err := s.CreateConsumer(ctx, bad); err != nil {
		t.Fatal(err)
	}
	topics := harness.Topics(topic, harness.Topic("other", "x"))
	err = broker.Provision(ctx, js, topics, harness.Logger(t))
	if !errors.Is(err, broker.ErrIncompatible) || !strings.Contains(err.Error(), "family billing") || !strings.Contains(err.Error(), "ack policy") {
		t.Fatalf("want ErrIncompatible naming family billing and its ack policy, got %v", err)
	}
	if consumer(t, js, "orders", "shipping") == nil {
		t.Error("shipping was not provisioned after billing failed")
	}
	b.Shutdown()

	cfg := harness.BrokerConfig(dir, topics)
	cfg.ReadyTimeout = 5 * time.Second
	if b, err := broker.New(cfg, harness.Logger(t), nil); err == nil {
		b.Shutdown()
		t.Fatal("a broker became ready with an incompatible family")
	} else if !errors.Is(err, broker.ErrIncompatible) || !strings.Contains(err.Error(), "family billing") {
		t.Fatalf("want ErrIncompatible naming family billing, got %v", err)
	}
}

// TestAddedFamilyStartsAfterTheBacklog: a family added to a topic that
// holds another family's backlog receives only what is published after
// it was created; provisioning it again keeps that.
func TestAddedFamilyStartsAfterTheBacklog(t *testing.T) {
	one := harness.Topic("orders", "billing")
	b := harness.StartBroker(t, harness.Topics(one))
	js, _ := jetstream.New(harness.Connect(t, b))
	ctx := context.Background()
	for _, m := range []string{"old-1", "old-2", "old-3"} {
		if _, err := js.Publish(ctx, sluice.Subject("orders"), []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	two := harness.Topic("orders", "billing", "shipping")
	if err := broker.Provision(ctx, js, harness.Topics(two), harness.Logger(t)); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"new-1", "new-2"} {
		if _, err := js.Publish(ctx, sluice.Subject("orders"), []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := js.Consumer(ctx, sluice.StreamName("orders"), "shipping")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(5, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, string(m.Data()))
		_ = m.Ack()
	}
	if !slices.Equal(got, []string{"new-1", "new-2"}) {
		t.Fatalf("the added family received %v, want only what was published after it: [new-1 new-2]", got)
	}
	if info := consumer(t, js, "orders", "billing"); info == nil || info.NumPending != 5 {
		t.Fatalf("billing: %+v, want its 5 messages pending", info)
	}

	// Provisioning again, with a changed credit, updates the family in
	// place and keeps where it started.
	fam := two.Families["shipping"]
	fam.Credit = 7
	two.Families["shipping"] = fam
	if err := broker.Provision(ctx, js, harness.Topics(two), harness.Logger(t)); err != nil {
		t.Fatalf("provisioning again: %v", err)
	}
	if info := consumer(t, js, "orders", "shipping"); info == nil || info.Config.MaxAckPending != 7 || info.Config.DeliverPolicy != jetstream.DeliverNewPolicy {
		t.Fatalf("shipping after the update: %+v", info)
	}
}

// TestClusterRecreatesADeletedFamily: in a cluster every broker finds the
// family missing and creates it; creating is idempotent, so it comes back
// once, replicated, and every broker is ready again.
func TestClusterRecreatesADeletedFamily(t *testing.T) {
	c := harness.StartCluster(t, 3, r3("orders", "billing", "shipping"))
	js, _ := jetstream.New(c.Connect(t))
	ctx := context.Background()
	c.WaitCurrent(t, js, "orders", "cluster not settled")
	if _, err := js.Publish(ctx, sluice.Subject("orders"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	old := consumer(t, js, "orders", "billing")
	if old == nil {
		t.Fatal("no billing consumer")
	}
	if err := js.DeleteConsumer(ctx, sluice.StreamName("orders"), "billing"); err != nil {
		t.Fatal(err)
	}
	var now *jetstream.ConsumerInfo
	harness.Eventually(t, 60*time.Second, func() bool {
		now = consumer(t, js, "orders", "billing")
		return now != nil && !now.Created.Equal(old.Created)
	}, "the brokers should recreate the deleted family")
	if now.Config.Replicas != 3 || now.Config.AckPolicy != jetstream.AckExplicitPolicy || now.NumPending != 0 {
		t.Fatalf("recreated consumer: replicas %d, ack %v, pending %d; want 3, explicit, 0", now.Config.Replicas, now.Config.AckPolicy, now.NumPending)
	}
	harness.Eventually(t, 30*time.Second, func() bool {
		for _, n := range c.Nodes {
			if !n.Broker().Ready() {
				return false
			}
		}
		return true
	}, "every broker should be ready once the family is back")
	// Every broker found it in place: none replaced it.
	if again := consumer(t, js, "orders", "billing"); again == nil || !again.Created.Equal(now.Created) {
		t.Fatalf("billing was replaced again after its recreation: %+v", again)
	}
}
