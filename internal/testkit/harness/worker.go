package harness

import (
	"context"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// RunWorker runs an SDK worker of topic's family on nc until the returned
// stop is called or the test ends. stop cancels the worker (messages being
// handled are handed back) and waits until Run has returned; it is
// idempotent.
func RunWorker(t testing.TB, nc *nats.Conn, topic, family string, h sluice.HandlerFunc, opts ...sluice.WorkerOption) (stop func()) {
	t.Helper()
	w, err := sluice.NewWorker(nc, topic, family, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}
