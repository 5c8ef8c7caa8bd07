package sluice_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// reportPercentiles adds p50/p99 (in µs) of ds to the benchmark's output.
func reportPercentiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// BenchmarkPublish: one message at a time through the SDK, the gateway and a
// durable (fsync) JetStream write, until the 202.
func BenchmarkPublish(b *testing.B) {
	s := startStack(b, harness.Topic("orders", "billing"))
	p, _ := sluice.NewProducer([]string{s.gateway})
	ctx := context.Background()
	payload := make([]byte, 128)
	ds := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		if _, err := p.Publish(ctx, "orders", payload); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
	}
	reportPercentiles(b, ds)
}

// BenchmarkHTTPToHandler: one message at a time from the producer's POST to
// the worker's handler (which then acks), through a durable write.
func BenchmarkHTTPToHandler(b *testing.B) {
	s := startStack(b, harness.Topic("orders", "billing"))
	got := make(chan string, 1)
	w, _ := sluice.NewWorker(s.nc, "orders", "billing", sluice.HandlerFunc(func(_ context.Context, m *sluice.Message) error {
		got <- m.ID
		return nil
	}), sluice.WithCredit(1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	p, _ := sluice.NewProducer([]string{s.gateway})
	payload := make([]byte, 128)
	ds := make([]time.Duration, 0, b.N)
	i := 0
	b.ResetTimer()
	for b.Loop() {
		i++
		id := fmt.Sprintf("m-%d", i)
		start := time.Now()
		if _, err := p.Publish(ctx, "orders", payload, sluice.WithID(id)); err != nil {
			b.Fatal(err)
		}
		for <-got != id {
		}
		ds = append(ds, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, ds)
	cancel()
	<-done
}
