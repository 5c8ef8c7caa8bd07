package sluice_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// Where the examples find Sluice: TestMain starts a single-node stack (what
// `make run` starts) and fills these in. In your code they are your gateway's
// URL ("http://127.0.0.1:8080") and a broker's URL ("nats://127.0.0.1:4222").
var gatewayURL, natsURL string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-examples-")
	if err != nil {
		log.Fatal(err)
	}
	// What `make run` starts (configs/dev.yaml's orders, with billing and
	// shipping), plus an invoices topic; no demo workers.
	stack, err := harness.StartStack(dir, harness.Topics(topology.DevOrders(), harness.Topic("invoices", "mailer")))
	if err != nil {
		log.Fatal(err)
	}
	gatewayURL, natsURL = stack.GatewayURL, stack.NATSURL
	code := m.Run()
	if err := stack.Close(); err != nil {
		log.Print(err)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func ExampleProducer_Publish() {
	p, err := sluice.NewProducer([]string{gatewayURL})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// One idempotency key per logical message: a retry of the same message
	// (by the SDK or by you, after ErrOutcomeUnknown) is stored once.
	rc, err := p.Publish(ctx, "orders", []byte(`{"order":42}`),
		sluice.WithID("order-42"), sluice.WithContentType("application/json"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rc.Topic, rc.ID, rc.Duplicate)

	again, err := p.Publish(ctx, "orders", []byte(`{"order":42}`),
		sluice.WithID("order-42"), sluice.WithContentType("application/json"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(again.Seq == rc.Seq, again.Duplicate)
	// Output:
	// orders order-42 false
	// true true
}

func ExampleWorker() {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	handled := make(chan string, 1)
	w, err := sluice.NewWorker(nc, "invoices", "mailer",
		sluice.HandlerFunc(func(ctx context.Context, m *sluice.Message) error {
			// nil acks; an error retries after the family's backoff;
			// sluice.Permanent(err) sends the message to the dead letters.
			handled <- fmt.Sprintf("%s/%s got %s (attempt %d): %s", m.Topic, m.Family, m.ID, m.Attempt, m.Data)
			return nil
		}),
		sluice.WithCredit(8), // at most 8 messages held at once
	)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(ctx) }()

	p, _ := sluice.NewProducer([]string{gatewayURL})
	if _, err := p.Publish(ctx, "invoices", []byte("invoice 7"), sluice.WithID("inv-7")); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-handled)

	// Drain: stop pulling, finish what is held, then Run returns.
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if err := w.Drain(dctx); err != nil {
		log.Fatal(err)
	}
	cancel()
	fmt.Println(<-stopped)
	// Output:
	// invoices/mailer got inv-7 (attempt 1): invoice 7
	// <nil>
}
