package gateway_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/sluicebus/sluice/internal/testkit/harness"
)

// benchGateway is a gateway on a single broker whose topic has no family
// consuming it fast enough to matter: the benchmarks measure the publish
// path (validation, admission, durable JetStream write), called in process
// through the gateway's handler (no TCP).
func benchGateway(b *testing.B) http.Handler {
	b.Helper()
	topic := harness.Topic("orders", "billing")
	topic.MaxMessages = 10_000_000
	topics := harness.Topics(topic)
	br := harness.StartBroker(b, topics)
	g, _ := harness.StartGateway(b, harness.GatewayConfig(topics), harness.Connect(b, br))
	return g.Handler()
}

// mallocsPer reports heap allocations per message of the timed loop. The
// broker runs in the same process, so its allocations are counted too: a
// ceiling for the gateway's own, and a baseline to compare changes against.
func mallocsPer(b *testing.B, before runtime.MemStats, msgs int) {
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(msgs), "allocs/msg")
}

// BenchmarkGatewayPublish: one 128-byte message per request, through to
// the durable ack (fsync), allocations per request.
func BenchmarkGatewayPublish(b *testing.B) {
	h := benchGateway(b)
	payload := bytes.Repeat([]byte("x"), 128)
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/topics/orders/messages", bytes.NewReader(payload))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
		n++
	}
	mallocsPer(b, before, n)
}

// BenchmarkGatewayPublishParallel: 128-byte messages, one per request, from
// 64 concurrent callers: the case group commit is for (many requests, one
// durable write).
func BenchmarkGatewayPublishParallel(b *testing.B) {
	h := benchGateway(b)
	payload := bytes.Repeat([]byte("x"), 128)
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.SetParallelism(32) // x GOMAXPROCS callers
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/v1/topics/orders/messages", bytes.NewReader(payload))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusAccepted {
				b.Errorf("%d %s", rec.Code, rec.Body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	mallocsPer(b, before, b.N)
}

// BenchmarkGatewayBatch: NDJSON batches of 100 messages of 128 bytes,
// allocations per message (the target of issue 6: none beyond the payload).
func BenchmarkGatewayBatch(b *testing.B) {
	h := benchGateway(b)
	var body strings.Builder
	for i := range 100 {
		fmt.Fprintf(&body, `{"data":"%s-%03d"}`+"\n", strings.Repeat("x", 120), i)
	}
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/topics/orders/messages:batch", strings.NewReader(body.String()))
		req.Header.Set("Content-Type", "application/x-ndjson")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), `"status"`) {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
		n += 100
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
	mallocsPer(b, before, n)
}
