package test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// freshGatewayEnv is a broker with orders and its families, and quiet,
// which starts a gateway that reads the families at its commits only (its
// alarm watcher waits an hour): the test decides when a gateway looks.
func freshGatewayEnv(t *testing.T) (*broker.Broker, jetstream.JetStream, func() string) {
	t.Helper()
	topics := harness.Topics(harness.Topic("orders", families...))
	b := harness.StartBroker(t, topics)
	js, _ := jetstream.New(harness.Connect(t, b))
	quiet := func() string {
		cfg := harness.GatewayConfig(topics)
		cfg.Alarms.Interval, cfg.Alarms.Hold = time.Hour, time.Hour
		_, srv := harness.StartGateway(t, cfg, harness.Connect(t, b))
		return srv.URL
	}
	return b, js, quiet
}

// TestIntegrityRetryAtAFreshGatewayIsRepaired: a message stored while
// billing's consumer was being deleted is an unknown outcome at gateway A;
// the broker recreates the consumer (it starts with what comes after). The
// client retries with the same key at gateway B, started after that (a new
// or restarted gateway: gateways keep no state). The retry is a duplicate
// answered 202, so billing must get the message: a copy on its redrive
// subject.
func TestIntegrityRetryAtAFreshGatewayIsRepaired(t *testing.T) {
	b, js, quiet := freshGatewayEnv(t)
	a := quiet()
	pa, _ := sluice.NewProducer([]string{a}, sluice.WithRetry(1, time.Millisecond, time.Millisecond))
	ctx := context.Background()
	if _, err := pa.Publish(ctx, "orders", []byte("first"), sluice.WithID("first")); err != nil {
		t.Fatal(err)
	}
	old := consumerCreated(js, "billing")
	if err := js.DeleteConsumer(ctx, sluice.StreamName("orders"), "billing"); err != nil {
		t.Fatal(err)
	}
	// Sent under A's last reading (billing there): stored for shipping
	// only; the reading after the ack finds billing gone.
	_, err := pa.Publish(ctx, "orders", []byte("gap"), sluice.WithID("gap"))
	if !errors.Is(err, sluice.ErrOutcomeUnknown) {
		t.Fatalf("publish right after billing's deletion: %v, want an unknown outcome", err)
	}
	harness.Eventually(t, 30*time.Second, func() bool {
		c := consumerCreated(js, "billing")
		return !c.IsZero() && !c.Equal(old)
	}, "the broker should recreate billing's consumer")

	var mu sync.Mutex
	got := map[string]int{}
	harness.RunWorker(t, harness.Connect(t, b), "orders", "billing", func(_ context.Context, m *sluice.Message) error {
		mu.Lock()
		defer mu.Unlock()
		got[m.ID]++
		return nil
	})
	pb, _ := sluice.NewProducer([]string{quiet()})
	r, err := pb.Publish(ctx, "orders", []byte("gap"), sluice.WithID("gap"))
	if err != nil || !r.Duplicate {
		t.Fatalf("retry at a fresh gateway: %+v %v, want 202 duplicate", r, err)
	}
	if _, err := pb.Publish(ctx, "orders", []byte("after"), sluice.WithID("after")); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got["after"] > 0
	}, "billing should get what is published after its recreation")
	time.Sleep(2 * time.Second) // a copy would have come with "after"
	mu.Lock()
	defer mu.Unlock()
	if got["gap"] == 0 {
		t.Fatalf("gateway B answered 202 duplicate for a message billing never got (billing got %v)", got)
	}
}
