package sluice_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// stack is a broker, a client connection and a gateway for SDK tests.
type stack struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	gateway string
}

func startStack(t testing.TB, topics ...topology.Topic) stack {
	t.Helper()
	return startStackWith(t, nil, topics...)
}

// startStackWith lets the test adjust the gateway's configuration.
func startStackWith(t testing.TB, adjust func(*gateway.Config), topics ...topology.Topic) stack {
	t.Helper()
	tm := harness.Topics(topics...)
	b := harness.StartBroker(t, tm)
	nc := harness.Connect(t, b)
	cfg := harness.GatewayConfig(tm)
	if adjust != nil {
		adjust(&cfg)
	}
	_, srv := harness.StartGateway(t, cfg, nc)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return stack{nc: nc, js: js, gateway: srv.URL}
}

func (s stack) producer(t *testing.T) *sluice.Producer {
	t.Helper()
	p, err := sluice.NewProducer([]string{s.gateway}, sluice.WithProducerLogger(harness.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run starts w and returns a function that stops it and checks Run's error.
func run(t *testing.T, w *sluice.Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("worker Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("worker did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

func (s stack) streamMsgs(t *testing.T, stream string) uint64 {
	t.Helper()
	return harness.StreamMsgs(t, s.js, stream)
}

// abandon takes the next delivery of family on topic `times` times and
// never settles it: a worker that dies holding the message.
func (s stack) abandon(t *testing.T, topic, family string, times int) {
	t.Helper()
	cons, err := s.js.Consumer(context.Background(), sluice.StreamName(topic), family)
	if err != nil {
		t.Fatal(err)
	}
	for i := range times {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for range b.Messages() {
			n++
		}
		if n != 1 {
			t.Fatalf("delivery %d: got %d messages", i+1, n)
		}
	}
}

// counting is a handler that counts its calls and acks.
func counting(calls *atomic.Int32) sluice.Handler {
	return sluice.HandlerFunc(func(context.Context, *sluice.Message) error {
		calls.Add(1)
		return nil
	})
}

func (s stack) deadLetter(t *testing.T, topic, family string, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	st, err := s.js.Stream(context.Background(), sluice.DeadLetterStream(topic, family))
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(context.Background(), seq)
	if err != nil {
		t.Fatalf("dead letter %d: %v", seq, err)
	}
	return m
}
