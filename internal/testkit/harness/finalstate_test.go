package harness

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestCheckFinalState: billing dead-letters every message, shipping acks
// them; the final state read from the bus records billing's dead letters
// (they reach the family) and finds nothing wrong. Before the workers run,
// the same read finds the messages pending and left in the topic.
func TestCheckFinalState(t *testing.T) {
	topics := Topics(Topic("orders", "billing", "shipping"))
	b := StartBroker(t, topics)
	nc := Connect(t, b)
	js, _ := jetstream.New(nc)
	_, srv := StartGateway(t, GatewayConfig(topics), nc)
	p, err := sluice.NewProducer([]string{srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	chk := history.New("billing", "shipping")
	for i := range 3 {
		id, payload := fmt.Sprintf("m%d", i), fmt.Appendf(nil, "payload %d", i)
		r, err := p.Publish(context.Background(), "orders", payload, sluice.WithID(id))
		if err != nil {
			t.Fatal(err)
		}
		chk.Attempted(id, payload, history.Ack(r.Seq, r.Duplicate))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A consumer's pending count follows the stream asynchronously (the
	// server updates it on its own loop): read until it has caught up.
	wants := []string{"billing: 3 pending (stored, never delivered)", "3 messages left in the topic"}
	var problems []string
	Eventually(t, 10*time.Second, func() bool {
		before, err := ReadFinalState(ctx, js, "orders", chk)
		if err != nil {
			t.Fatal(err)
		}
		problems = chk.StateProblems(before)
		return !slices.ContainsFunc(wants, func(w string) bool { return !slices.Contains(problems, w) })
	}, "before the workers: problems %q, want %q among them", &problems, wants)

	RunWorker(t, nc, "orders", "billing", func(_ context.Context, m *sluice.Message) error {
		chk.Delivered("billing", m.ID, m.Seq, m.Data)
		return sluice.Permanent(fmt.Errorf("refused"))
	})
	RunWorker(t, nc, "orders", "shipping", func(_ context.Context, m *sluice.Message) error {
		chk.Delivered("shipping", m.ID, m.Seq, m.Data)
		return nil
	})
	if err := chk.Quiesce(ctx, 100*time.Millisecond, 10*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	st := CheckFinalState(t, js, "orders", chk, 10*time.Second)
	if st.Families["billing"].DeadLetters != 3 || st.Messages != 0 {
		t.Errorf("final state %+v: want billing's 3 dead letters and an empty topic", st)
	}
	r := chk.Report()
	if p := r.Problems(); len(p) > 0 || r.Acked != 3 {
		t.Errorf("report %+v: problems %q", r, p)
	}
	if row := r.Row("dead letters"); !strings.HasSuffix(row, "| ok |") {
		t.Errorf("row %s", row)
	}
}
