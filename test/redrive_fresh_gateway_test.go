package test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestIntegrityRedriveRetriedAtAFreshGatewayKeepsTheDeadLetter: a redrive
// sent under gateway A's last reading while billing's consumer was being
// deleted is acked by the stream and kept nowhere (no consumer takes
// billing's redrive subject); A answers 503 unknown and keeps the dead
// letter. Once the broker has recreated the consumer, the redrive is
// retried at gateway B, started after that: it must not answer 200 and
// delete the dead letter unless billing gets the message.
func TestIntegrityRedriveRetriedAtAFreshGatewayKeepsTheDeadLetter(t *testing.T) {
	b, js, quiet := freshGatewayEnv(t)
	a := quiet()
	ctx := context.Background()
	var mu sync.Mutex
	got := map[string]int{}
	stop := harness.RunWorker(t, harness.Connect(t, b), "orders", "billing", func(context.Context, *sluice.Message) error {
		return sluice.Permanent(errors.New("refused"))
	})
	pa, _ := sluice.NewProducer([]string{a})
	if _, err := pa.Publish(ctx, "orders", []byte("dead"), sluice.WithID("dead")); err != nil {
		t.Fatal(err)
	}
	dlq := sluice.DeadLetterStream("orders", "billing")
	harness.Eventually(t, 10*time.Second, func() bool { st, _ := streamState(js, dlq); return st.Msgs == 1 }, "a dead letter")
	stop()
	if _, err := pa.Publish(ctx, "orders", []byte("warm"), sluice.WithID("warm")); err != nil { // A's last reading has billing
		t.Fatal(err)
	}
	old := consumerCreated(js, "billing")
	if err := js.DeleteConsumer(ctx, sluice.StreamName("orders"), "billing"); err != nil {
		t.Fatal(err)
	}
	adminA, _ := sluice.NewAdmin(a, nil)
	if _, err := adminA.Redrive(ctx, "orders", "billing", 0, 10); !errors.Is(err, sluice.ErrOutcomeUnknown) {
		t.Fatalf("redrive at A right after the deletion: %v, want an unknown outcome", err)
	}
	harness.Eventually(t, 30*time.Second, func() bool {
		c := consumerCreated(js, "billing")
		return !c.IsZero() && !c.Equal(old)
	}, "the broker should recreate billing's consumer")
	harness.RunWorker(t, harness.Connect(t, b), "orders", "billing", func(_ context.Context, m *sluice.Message) error {
		mu.Lock()
		defer mu.Unlock()
		got[m.ID]++
		return nil
	})
	adminB, _ := sluice.NewAdmin(quiet(), nil)
	res, err := adminB.Redrive(ctx, "orders", "billing", 0, 10)
	t.Logf("redrive at a fresh gateway B: %+v %v", res, err)
	time.Sleep(3 * time.Second)
	st, _ := streamState(js, dlq)
	mu.Lock()
	defer mu.Unlock()
	if st.Msgs == 0 && got["dead"] == 0 {
		t.Fatalf("the dead letter was deleted by a 200 redrive (%+v) and billing never got the message (got %v)", res, got)
	}
}
