package sluice_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestSlowLinkLosesNoPulledMessage: a worker 300 ms from its broker each
// way. Every pull expires on the broker while messages trickle in, so the
// broker keeps sending messages up to the pull's last moment, and they
// arrive 300 ms later. A worker that gave up on its pull before the broker
// did would leave those messages unhandled for a whole ack wait and get
// them again at attempt 2: every message must be handled at its first
// attempt.
func TestSlowLinkLosesNoPulledMessage(t *testing.T) {
	topic := harness.Topic("orders", "billing")
	fam := topic.Families["billing"]
	fam.AckWait = 30 * time.Second // a message left behind comes back at attempt 2 after this
	topic.Families["billing"] = fam
	b := harness.StartBroker(t, harness.Topics(topic))
	direct := harness.Connect(t, b)
	js, err := jetstream.New(direct)
	if err != nil {
		t.Fatal(err)
	}
	link, nc := harness.ConnectThrough(t, b.ClientURL())
	harness.Latency(t, link.Link().Flows(), 300, 0)

	const total = 40
	var mu sync.Mutex
	attempts := map[string]int{}
	w, err := sluice.NewWorker(nc, "orders", "billing", sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
		mu.Lock()
		defer mu.Unlock()
		attempts[m.ID] = max(attempts[m.ID], m.Attempt)
		return nil
	}), sluice.WithCredit(64), sluice.WithWorkerLogger(harness.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
	for i := range total { // a trickle: every pull expires with messages sent near its end
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := js.Publish(ctx, sluice.Subject("orders"), []byte("x"), jetstream.WithMsgID(fmt.Sprintf("m-%d", i)))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond)
	}
	// A message left behind comes back after ack_wait: wait past it.
	harness.Eventually(t, 2*time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(attempts) == total
	}, "every message should be handled (one a pull left behind comes back only after ack_wait, 30 s, and may be left behind again)")
	mu.Lock()
	defer mu.Unlock()
	for id, a := range attempts {
		if a != 1 {
			t.Errorf("%s handled at attempt %d: a pulled message was left unhandled until its ack wait", id, a)
		}
	}
}
