package sluice_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestWorkerTakesMessagesThatBypassedTheGateway: messages published on
// the bus directly, not through a gateway (an admin identity may), carry
// no id, or an id no gateway would accept. The worker hands each to its
// handler with a stable non-empty ID and dead-letters each on a permanent
// failure; nothing is stuck in the topic.
func TestWorkerTakesMessagesThatBypassedTheGateway(t *testing.T) {
	topics := harness.Topics(harness.Topic("orders", "billing"))
	nc := harness.Connect(t, harness.StartBroker(t, topics))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s := stack{nc: nc, js: js}
	ctx := context.Background()
	ids := []string{"", "a key with spaces", strings.Repeat("é.", 300), "x.AAAAAAAAAAAAAAAAAAAAAA"}
	for i, id := range ids {
		m := nats.NewMsg(sluice.Subject("orders"))
		m.Data = []byte{byte('0' + i)}
		if id != "" {
			m.Header.Set(sluice.HeaderMsgID, id)
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("publish %q: %v", id, err)
		}
	}
	var mu sync.Mutex
	seen := map[string]string{} // data -> ID
	stop := run(t, newWorker(t, s, sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
		mu.Lock()
		seen[string(m.Data)] = m.ID
		mu.Unlock()
		return sluice.Permanent(errors.New("refused"))
	})))
	defer stop()
	harness.Eventually(t, 30*time.Second, func() bool {
		return s.streamMsgs(t, sluice.DeadLetterStream("orders", "billing")) == uint64(len(ids)) &&
			s.streamMsgs(t, sluice.StreamName("orders")) == 0
	}, "every message should be dead-lettered")
	mu.Lock()
	defer mu.Unlock()
	if got := seen["0"]; got != "seq-1" {
		t.Errorf("a message without an id has ID %q, want seq-1", got)
	}
	for data, id := range seen {
		if id == "" {
			t.Errorf("message %s handled with an empty ID", data)
		}
	}
}
